"""The seeded market simulator: the platform's embedded default data source.

It lets every feature, model and asset run on a fresh machine with no data. It is *not* there
to flatter models: apart from the weak news lead below, returns are unpredictable noise with
realistic structure, and no test may rely on the series being easy to forecast.

Calendar
    Business days Monday–Friday from `start` to `end`, with no exchange-holiday calendar
    (kept simple on purpose). Daily values are closes: `published_at` = `date`.

Parameters (`SimulatorConfig`; defaults in brackets; each is explained in its section below)

    ================================  ========================================================
    `seed` [20240601]                 one seed for every random stream
    `start`, `end` [2000-01-03,       first and last calendar day; `end` is fixed (not today)
    2025-12-31]                       so that default runs are reproducible; `as_of` = `end`
    `symbols`                         the daily series (`SymbolSpec`; table below)
    `regimes`                         drift and vol windows (`RegimeWindow`; tables below)
    `loading_overrides`               correlation breaks (`LoadingOverride`; table below)
    `student_t_df` [5]                degrees of freedom of the shocks (fat tails)
    `garch_alpha`, `garch_beta`       GARCH(1,1) reaction and persistence (clustering)
    [0.07, 0.90]
    `garch_cap` [3]                   upper bound of the unit-mean GARCH variance
    `shock_clip` [5]                  bound on standardized shocks (limit moves)
    `transition_halflife_days` [10]   smoothing of regime drifts and vols at window edges
    `ohlc_gap_share` [0.3]            open-vs-previous-close gap, in daily sigmas
    `ohlc_range_share` [0.6]          high/low beyond open and close, in daily sigmas
    `volume_growth` [0.04]            annual growth of traded volume
    `volume_noise` [0.25]             log-normal noise of daily volume
    `cot_symbols` [ZL, ZS, ZM]        symbols with a weekly COT series
    `cot_lookback_days` [63]          trailing window of the momentum speculators follow
    `cot_scale`, `cot_sensitivity`    net position = scale * tanh(sensitivity * momentum)
    [45, 0.6]
    `cot_noise_sd` [10],              weekly AR(1) noise around it (% of open interest)
    `cot_noise_persistence` [0.8]
    `cot_bound` [60]                  net position clipped to +-bound
    `cot_release_lag_business_days`   Tuesday to first usable day (the Monday after release)
    [4]
    `news_daily_probs`                chance of 0, 1, 2 headlines on a business day
    [0.62, 0.32, 0.06]
    `news_neutral_share` [0.3]        share of neutral headlines
    `news_impact` [0.1]               a headline's push on ZL per day, in daily sigmas
    `news_horizon_days` [5]           business days the push lasts, starting the next day
    `news_topic_emphasis`             topic weights raised inside regime windows
    ================================  ========================================================

Prices (one row per symbol and business day, long form, `source="simulated"`)
    Each daily symbol's log price is `anchor + deviation`. The anchor starts at the symbol's
    `start_level` and grows with its annual drift plus the drift of the regime window in force.
    The deviation is a mean-reverting (Ornstein–Uhlenbeck, half-life `reversion_halflife_years`)
    sum of shocks, so 26 years of noise stay in a plausible range (the default seed's ZL starts
    at 20 and ranges over about 9–100 US cents/lb). A symbol with `reverts_to` reverts towards
    that symbol's deviation instead of zero: ZL and ZM are cointegrated with ZS (the crush),
    BRENT with WTI (a narrow spread).
    Shocks are `sigma_t * z_t`:

    - `z_t`: unit-variance correlated shocks from a factor model. Factors `crude`, `soy`,
      `veg_oil`, `usd`, `brl`, `rin` and an idiosyncratic term per symbol are independent
      Student-t draws (`student_t_df`, fat tails) scaled to unit variance; each symbol's
      `loadings` weight the factors and the idiosyncratic weight is sqrt(1 - sum of squares).
      They are clipped at +-`shock_clip` (like exchange limit moves: no 20-sigma days).
    - `sigma_t = annual_vol / sqrt(252) * regime_vol_multiplier_t * sqrt(g_t)`, with `g_t` a
      unit-mean GARCH(1,1) variance (`garch_alpha`, `garch_beta`, capped at `garch_cap`):
      volatility clustering.
    - Regime drifts and vol multipliers are smoothed with an exponential filter of half-life
      `transition_halflife_days`, so windows fade in and out over a couple of weeks.

    ZL, ZS and ZM also get open/high/low/volume: the open gaps from the previous close by
    `ohlc_gap_share * sigma_t` (normal), the range extends beyond open/close by
    `ohlc_range_share * sigma_t * |normal|`, and the volume (contracts) grows by
    `volume_growth` a year, rises with `sigma_t` and has log-normal noise `volume_noise`.
    Values are rounded to each symbol's `decimals`; rounding is monotone, so
    low <= open, close <= high still holds.

Symbols (defaults; units as in `schema.SYMBOLS`; half-life of the deviation in years)

    ========  ==============  =====  ====  =====  =========  =================================
    symbol    unit            start  vol   drift  half-life  notes
    ========  ==============  =====  ====  =====  =========  =================================
    ZL        US cents/lb     20     0.25  0.030  0.75       OHLCV; reverts to ZS (crush)
    ZS        US cents/bu     470    0.22  0.030  1.0        OHLCV
    ZM        USD/short ton   170    0.25  0.025  0.75       OHLCV; reverts to ZS (crush)
    PALM      USD/metric ton  300    0.28  0.045  1.0
    WTI       USD/bbl         25.5   0.35  0.030  1.0
    BRENT     USD/bbl         25.8   0.33  0.030  0.25       reverts to WTI (narrow spread)
    DXY       index points    101    0.07  0.000  2.0
    USDBRL    BRL per USD     1.80   0.14  0.025  1.5
    RIN_D4    USD/RIN         0.75   0.45  0.000  0.75       starts 2010-07-01
    ========  ==============  =====  ====  =====  =========  =================================

Factor loadings (normal times; daily-return correlations follow, e.g. ZL–PALM ~0.5,
ZL–WTI ~0.35, ZL–ZS ~0.55, ZM–ZS ~0.7, WTI–BRENT ~0.9, ZS–USDBRL ~-0.15, ZL–DXY ~-0.08)

    ========  ======  ====  =======  =====  =====  ====
    symbol    crude   soy   veg_oil  usd    brl    rin
    ========  ======  ====  =======  =====  =====  ====
    ZL        0.36    0.55  0.45     -0.08         0.15
    ZS        0.20    0.85           -0.10  -0.15
    ZM                0.85  -0.25
    PALM      0.25    0.15  0.70
    WTI       0.97
    BRENT     0.95
    DXY                              0.95
    USDBRL                           0.35   0.85
    RIN_D4    0.10          0.25                   0.80
    ========  ======  ====  =======  =====  =====  ====

Regime windows (`regimes`; by group: soy = ZS, ZM; oils = ZL, PALM; crude = WTI, BRENT;
usd = DXY; brl = USDBRL; rin = RIN_D4; blank = no change). The dates are the simulator's own,
loosely after real events (a commodity peak in July 2008 and a Lehman-like crash, a bottom in
early December 2008; US tariffs from 2018-03-22 to a partial US-China deal on 2019-10-11; an
oil price war and pandemic crash from 2020-03-09 to negative WTI on 2020-04-20; a commodity and
vegetable-oil bull to June 2022; a biofuel-policy window from a final RFS rule on 2023-06-21 to
a new volume proposal on 2025-06-13). They are deliberately NOT the regime calendar's dates
(`cbi_platform/regimes/regime_calendar.yaml`): every start and end lies at least 20 days from
every calendar start and end (a test checks it), so calendar-weighted models are not handed the
data-generating process. Annual log drift added to each symbol's own drift (sized so each
window moves prices about as much in total as the longer calendar-dated windows it replaced):

    ======================  =====================  =====  =====  =====  =====  =====  =====
    window                  dates                  soy    oils   crude  usd    brl    rin
    ======================  =====================  =====  =====  =====  =====  =====  =====
    credit_crunch_fall      2008-07-14…2008-12-05  -1.15  -1.40  -1.80  +0.20  +0.75
    credit_crunch_recovery  2008-12-08…2009-05-22  +0.30  +0.40  +0.80  -0.10  -0.30
    tariff_dispute          2018-03-22…2019-10-11  -0.19  -0.11                +0.11
    pandemic_crash          2020-03-09…2020-04-21  -0.70  -1.40  -3.50  +0.20  +1.40
    pandemic_recovery       2020-04-22…2020-11-20  +0.40  +0.52  +1.00         -0.12
    commodity_bull          2020-11-23…2022-06-10  +0.19  +0.32  +0.32  +0.08         +0.32
    biofuel_policy          2023-06-21…2025-06-13  -0.045 -0.06  -0.12                -0.15
    ======================  =====================  =====  =====  =====  =====  =====  =====

Volatility multipliers in the same windows (blank = x1):

    ======================  =====  =====  =====  =====  =====  =====
    window                  soy    oils   crude  usd    brl    rin
    ======================  =====  =====  =====  =====  =====  =====
    credit_crunch_fall      1.8    2.0    2.2    1.5    2.0
    credit_crunch_recovery  1.5    1.6    1.8    1.3    1.5
    tariff_dispute          1.1    1.05                 1.1
    pandemic_crash          1.8    2.0    3.0    1.6    2.0    1.6
    pandemic_recovery       1.3    1.5    1.6           1.3    1.5
    commodity_bull          1.3    1.5    1.4    1.2           1.3
    biofuel_policy          1.2    1.4    1.1                  1.8
    ======================  =====  =====  =====  =====  =====  =====

Loading overrides (`loading_overrides`; the factor loadings that change inside a window)

    ====================  =======================  ========================================
    window                dates                    change
    ====================  =======================  ========================================
    soy_crude_break       2014-07-01…2015-12-31    ZL, ZS crude loading 0: soy–crude ~0
    soy_palm_break        2022-05-01…2022-11-30    PALM veg_oil -0.15, soy 0: soy–palm ~0
    biofuel_policy        2023-06-21…2025-06-13    ZL rin 0.45, RIN_D4 veg_oil 0.35:
                                                   RIN-led soybean-oil moves
    ====================  =======================  ========================================

    "Soy" in the two breaks means ZL (soybean oil), the target.

COT (`COT_ZL`, `COT_ZS`, `COT_ZM`, unit `pct_oi`)
    Weekly speculative net position as % of open interest, dated on Tuesdays (the CFTC as-of
    day). Speculators follow trends: value = `cot_scale * tanh(cot_sensitivity * m)` plus a
    weekly AR(1) noise (`cot_noise_sd`, `cot_noise_persistence`), clipped to +-`cot_bound`,
    where m is the trailing `cot_lookback_days` log return divided by its typical size.
    `published_at` = Tuesday + `cot_release_lag_business_days` (4) business days = the Monday
    after the Friday release, the first origin that may use it. Rows published after `end` are
    left out (they were not known at `as_of`).

News (`source="simulated-wire"`, `published_at` = a business day)
    Each business day carries 0, 1 or 2 headlines with probabilities `news_daily_probs`
    (about 2 a week). Each has a topic (biofuel mandates, palm export levies, Brazil harvest,
    crude, weather, China demand, trade policy; weights raised by `news_topic_emphasis` in
    some windows, e.g. trade policy in tariff_dispute, biofuel in biofuel_policy) and a tone:
    bullish (+1) or bearish (-1) for ZL each with probability (1 - `news_neutral_share`) / 2, else
    neutral. Headline and body come from templates whose wording carries the tone. The tone
    LEADS ZL slightly: each headline adds `news_impact * tone * sigma_t` to ZL's return on each
    of the next `news_horizon_days` business days, which makes the tone's correlation with the
    next-5-day ZL return about 0.15 and with the previous-5-day return about 0.

Determinism
    One `numpy.random.SeedSequence(seed)` is spawned into one stream per component, drawn in
    date order, so the same seed gives identical frames and a run with an earlier `end` is a
    prefix of a longer one (same prices up to its end). The full 2000–2025 run takes well
    under a second on one core.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from cbi_platform.market.schema import (
    TARGET_SYMBOL,
    MarketBundle,
    conform_news,
    conform_prices,
)

PRICE_SOURCE = "simulated"
NEWS_SOURCE = "simulated-wire"
TRADING_DAYS_PER_YEAR = 252
FACTORS = ("crude", "soy", "veg_oil", "usd", "brl", "rin")
GROUPS = ("soy", "oils", "crude", "usd", "brl", "rin")  # what regime windows act on
NEWS_TOPICS = (
    "biofuel",
    "palm_levy",
    "brazil_harvest",
    "crude",
    "weather",
    "china_demand",
    "trade_policy",
)
_TUESDAY = 1  # numpy-style weekday, Monday = 0


@dataclass(frozen=True)
class SymbolSpec:
    """One simulated daily price series. Drift and vol are annual, in log terms."""

    symbol: str
    unit: str
    group: str  # regime group, one of GROUPS
    start_level: float
    annual_vol: float
    annual_drift: float
    loadings: tuple[tuple[str, float], ...]  # (factor, loading); factors from FACTORS
    reversion_halflife_years: float = 1.0
    reverts_to: str | None = None  # revert towards this symbol's deviation instead of zero
    decimals: int = 2
    first_date: dt.date | None = None  # series begins here (e.g. RIN_D4); None: at start
    base_volume: float | None = None  # contracts a day at start; set: the symbol gets OHLCV


@dataclass(frozen=True)
class RegimeWindow:
    """A hindsight window that shifts drift (annual log) and scales volatility, by group."""

    name: str
    start: dt.date
    end: dt.date
    drift: tuple[tuple[str, float], ...] = ()
    vol: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class LoadingOverride:
    """Factor loadings of one symbol that differ inside a window (correlation breaks)."""

    name: str
    start: dt.date
    end: dt.date
    symbol: str
    loadings: tuple[tuple[str, float], ...]


DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec(
        "ZS", "US cents/bu", "soy", 470.0, 0.22, 0.030,
        (("soy", 0.85), ("crude", 0.20), ("usd", -0.10), ("brl", -0.15)),
        decimals=2, base_volume=80_000,
    ),
    SymbolSpec(
        "ZL", "US cents/lb", "oils", 20.0, 0.25, 0.030,
        (("soy", 0.55), ("veg_oil", 0.45), ("crude", 0.36), ("rin", 0.15), ("usd", -0.08)),
        reversion_halflife_years=0.75, reverts_to="ZS", decimals=2, base_volume=40_000,
    ),
    SymbolSpec(
        "ZM", "USD/short ton", "soy", 170.0, 0.25, 0.025,
        (("soy", 0.85), ("veg_oil", -0.25)),
        reversion_halflife_years=0.75, reverts_to="ZS", decimals=1, base_volume=30_000,
    ),
    SymbolSpec(
        "PALM", "USD/metric ton", "oils", 300.0, 0.28, 0.045,
        (("veg_oil", 0.70), ("crude", 0.25), ("soy", 0.15)),
    ),
    SymbolSpec("WTI", "USD/bbl", "crude", 25.5, 0.35, 0.030, (("crude", 0.97),)),
    SymbolSpec(
        "BRENT", "USD/bbl", "crude", 25.8, 0.33, 0.030, (("crude", 0.95),),
        reversion_halflife_years=0.25, reverts_to="WTI",
    ),
    SymbolSpec(
        "DXY", "index points", "usd", 101.0, 0.07, 0.0, (("usd", 0.95),),
        reversion_halflife_years=2.0, decimals=3,
    ),
    SymbolSpec(
        "USDBRL", "BRL per USD", "brl", 1.80, 0.14, 0.025, (("brl", 0.85), ("usd", 0.35)),
        reversion_halflife_years=1.5, decimals=4,
    ),
    SymbolSpec(
        "RIN_D4", "USD/RIN", "rin", 0.75, 0.45, 0.0,
        (("rin", 0.80), ("veg_oil", 0.25), ("crude", 0.10)),
        reversion_halflife_years=0.75, decimals=3, first_date=dt.date(2010, 7, 1),
    ),
)  # fmt: skip

# The simulator's own breakpoints, loosely after real events and deliberately NOT the regime
# calendar's dates (cbi_platform/regimes/regime_calendar.yaml): a model weighted by the calendar
# must not be handed the data-generating process. A test keeps every start and end at least 20
# days from every calendar start and end.
DEFAULT_REGIMES: tuple[RegimeWindow, ...] = (
    RegimeWindow(
        "credit_crunch_fall", dt.date(2008, 7, 14), dt.date(2008, 12, 5),
        drift=(("soy", -1.15), ("oils", -1.40), ("crude", -1.80), ("usd", 0.20), ("brl", 0.75)),
        vol=(("soy", 1.8), ("oils", 2.0), ("crude", 2.2), ("usd", 1.5), ("brl", 2.0)),
    ),
    RegimeWindow(
        "credit_crunch_recovery", dt.date(2008, 12, 8), dt.date(2009, 5, 22),
        drift=(("soy", 0.30), ("oils", 0.40), ("crude", 0.80), ("usd", -0.10), ("brl", -0.30)),
        vol=(("soy", 1.5), ("oils", 1.6), ("crude", 1.8), ("usd", 1.3), ("brl", 1.5)),
    ),
    RegimeWindow(
        "tariff_dispute", dt.date(2018, 3, 22), dt.date(2019, 10, 11),
        drift=(("soy", -0.19), ("oils", -0.11), ("brl", 0.11)),
        vol=(("soy", 1.1), ("oils", 1.05), ("brl", 1.1)),
    ),
    RegimeWindow(
        "pandemic_crash", dt.date(2020, 3, 9), dt.date(2020, 4, 21),
        drift=(("soy", -0.70), ("oils", -1.40), ("crude", -3.50), ("usd", 0.20), ("brl", 1.40)),
        vol=(("soy", 1.8), ("oils", 2.0), ("crude", 3.0), ("usd", 1.6), ("brl", 2.0),
             ("rin", 1.6)),
    ),
    RegimeWindow(
        "pandemic_recovery", dt.date(2020, 4, 22), dt.date(2020, 11, 20),
        drift=(("soy", 0.40), ("oils", 0.52), ("crude", 1.00), ("brl", -0.12)),
        vol=(("soy", 1.3), ("oils", 1.5), ("crude", 1.6), ("brl", 1.3), ("rin", 1.5)),
    ),
    RegimeWindow(
        "commodity_bull", dt.date(2020, 11, 23), dt.date(2022, 6, 10),
        drift=(("soy", 0.19), ("oils", 0.32), ("crude", 0.32), ("usd", 0.08), ("rin", 0.32)),
        vol=(("soy", 1.3), ("oils", 1.5), ("crude", 1.4), ("usd", 1.2), ("rin", 1.3)),
    ),
    RegimeWindow(
        "biofuel_policy", dt.date(2023, 6, 21), dt.date(2025, 6, 13),
        drift=(("soy", -0.045), ("oils", -0.06), ("crude", -0.12), ("rin", -0.15)),
        vol=(("soy", 1.2), ("oils", 1.4), ("crude", 1.1), ("rin", 1.8)),
    ),
)  # fmt: skip

DEFAULT_LOADING_OVERRIDES: tuple[LoadingOverride, ...] = (
    LoadingOverride("soy_crude_break", dt.date(2014, 7, 1), dt.date(2015, 12, 31), "ZL",
                    (("crude", 0.0),)),
    LoadingOverride("soy_crude_break", dt.date(2014, 7, 1), dt.date(2015, 12, 31), "ZS",
                    (("crude", 0.0),)),
    LoadingOverride("soy_palm_break", dt.date(2022, 5, 1), dt.date(2022, 11, 30), "PALM",
                    (("veg_oil", -0.15), ("soy", 0.0))),
    LoadingOverride("biofuel_policy", dt.date(2023, 6, 21), dt.date(2025, 6, 13), "ZL",
                    (("rin", 0.45),)),
    LoadingOverride("biofuel_policy", dt.date(2023, 6, 21), dt.date(2025, 6, 13), "RIN_D4",
                    (("veg_oil", 0.35),)),
)  # fmt: skip

DEFAULT_NEWS_TOPIC_EMPHASIS: tuple[tuple[str, str, float], ...] = (
    ("tariff_dispute", "trade_policy", 3.0),
    ("tariff_dispute", "china_demand", 1.5),
    ("biofuel_policy", "biofuel", 3.0),
    ("biofuel_policy", "trade_policy", 2.0),
    ("commodity_bull", "crude", 1.5),
)


@dataclass(frozen=True)
class SimulatorConfig:
    """Every knob of the simulator; the module docstring explains each one."""

    seed: int = 20240601
    start: dt.date = dt.date(2000, 1, 3)
    end: dt.date = dt.date(2025, 12, 31)  # fixed so that default runs are reproducible
    symbols: tuple[SymbolSpec, ...] = DEFAULT_SYMBOLS
    regimes: tuple[RegimeWindow, ...] = DEFAULT_REGIMES
    loading_overrides: tuple[LoadingOverride, ...] = DEFAULT_LOADING_OVERRIDES
    student_t_df: float = 5.0
    garch_alpha: float = 0.07
    garch_beta: float = 0.90
    garch_cap: float = 3.0
    shock_clip: float = 5.0
    transition_halflife_days: float = 10.0
    ohlc_gap_share: float = 0.3
    ohlc_range_share: float = 0.6
    volume_growth: float = 0.04
    volume_noise: float = 0.25
    cot_symbols: tuple[str, ...] = ("ZL", "ZS", "ZM")
    cot_lookback_days: int = 63
    cot_scale: float = 45.0
    cot_sensitivity: float = 0.6
    cot_noise_sd: float = 10.0
    cot_noise_persistence: float = 0.8
    cot_bound: float = 60.0
    cot_release_lag_business_days: int = 4
    news_daily_probs: tuple[float, float, float] = (0.62, 0.32, 0.06)  # 0, 1, 2 headlines
    news_neutral_share: float = 0.3
    news_impact: float = 0.1
    news_horizon_days: int = 5
    news_topic_emphasis: tuple[tuple[str, str, float], ...] = DEFAULT_NEWS_TOPIC_EMPHASIS


DEFAULT_CONFIG = SimulatorConfig()

_STREAMS = (
    "factors",
    "idiosyncratic",
    "ohlc",
    "volume",
    "cot",
    "news_count",
    "news_tone",
    "news_topic",
    "news_template",
    "news_numbers",
)


def simulate_market(config: SimulatorConfig = DEFAULT_CONFIG) -> MarketBundle:
    """Canonical prices and news for `config`, as of `config.end`; same seed, same frames."""
    bundle, _ = simulate_market_with_truth(config)
    return bundle


def simulate_market_with_truth(
    config: SimulatorConfig = DEFAULT_CONFIG,
) -> tuple[MarketBundle, pl.DataFrame]:
    """The bundle plus hindsight truth for tests and diagnostics: each headline's topic and tone.

    The truth frame (published_at, headline, body, topic, tone) is in the bundle's news order.
    Features must never read it: the tone is only knowable from the headline's wording.
    """
    _validate(config)
    days = _business_days(config.start, config.end)
    if days.size == 0:
        raise ValueError(f"simulator: no business day between {config.start} and {config.end}")
    seeds = np.random.SeedSequence(config.seed).spawn(len(_STREAMS))
    rngs = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, seeds, strict=True)}

    news_truth, tone_by_day = _simulate_news(config, days, rngs)
    paths = _simulate_paths(config, days, rngs, tone_by_day)
    # Every stream is drawn once, in date order (rows = days), so shorter runs are prefixes.
    ohlcv = [s.symbol for s in config.symbols if s.base_volume is not None]
    ohlc_draws = rngs["ohlc"].standard_normal((days.size, len(ohlcv), 3))
    volume_draws = rngs["volume"].standard_normal((days.size, len(ohlcv)))
    tuesdays = np.flatnonzero(_weekday(days) == _TUESDAY)
    cot_draws = rngs["cot"].standard_normal((tuesdays.size, len(config.cot_symbols)))
    frames = []
    for spec in _present(config, days):
        k = ohlcv.index(spec.symbol) if spec.symbol in ohlcv else None
        draws = None if k is None else (ohlc_draws[:, k, :].T, volume_draws[:, k])
        frames.append(_daily_frame(config, days, paths, spec, draws))
    for k, symbol in enumerate(config.cot_symbols):
        frames.append(_cot_frame(config, days, paths, symbol, tuesdays, cot_draws[:, k]))
    prices = conform_prices(pl.concat(frames))

    news = conform_news(news_truth).sort(["published_at", "headline", "body"], maintain_order=True)
    news_truth = news_truth.sort(["published_at", "headline", "body"], maintain_order=True)
    absent = [s.symbol for s in config.symbols if s not in _present(config, days)]
    notices = [
        f"Simulated market data (seed={config.seed}, {days[0]}..{days[-1]}, "
        f"{prices.height} price rows, {news.height} headlines): not real prices. Business "
        "days are Monday-Friday without exchange holidays."
    ]
    if absent:
        notices.append(f"Simulated series {absent} begin after {days[-1]} and are absent.")
    bundle = MarketBundle(
        prices=prices, news=news, target=TARGET_SYMBOL, notices=tuple(notices), as_of=config.end
    )
    return bundle, news_truth


# ---------------------------------------------------------------------------------------------
# Price paths


@dataclass(frozen=True)
class _Paths:
    log_price: np.ndarray  # (T, n_symbols)
    sigma: np.ndarray  # (T, n_symbols) daily shock scale
    first_index: dict[str, int]
    column: dict[str, int]


def _simulate_paths(
    config: SimulatorConfig,
    days: np.ndarray,
    rngs: dict[str, np.random.Generator],
    tone_by_day: np.ndarray,
) -> _Paths:
    specs = config.symbols
    n_days, n_sym, n_fac = days.size, len(specs), len(FACTORS)
    column = {s.symbol: i for i, s in enumerate(specs)}

    loadings = _loadings_by_day(config, days)  # (T, n_sym, n_fac)
    idio_weight = np.sqrt(np.clip(1.0 - (loadings**2).sum(axis=2), 0.0, None))
    factor_shocks = _standard_t(rngs["factors"], config.student_t_df, (n_days, n_fac))
    idio_shocks = _standard_t(rngs["idiosyncratic"], config.student_t_df, (n_days, n_sym))
    z = np.einsum("tsf,tf->ts", loadings, factor_shocks) + idio_weight * idio_shocks
    z = np.clip(z, -config.shock_clip, config.shock_clip)  # no 20-sigma days (limit moves)

    drift_annual, vol_multiplier = _regime_drift_and_vol(config, days)
    garch = _garch_variance(z, config.garch_alpha, config.garch_beta, config.garch_cap)
    base_daily_vol = np.array([s.annual_vol for s in specs]) / math.sqrt(TRADING_DAYS_PER_YEAR)
    sigma = base_daily_vol * vol_multiplier * np.sqrt(garch)
    shocks = sigma * z

    if "ZL" in column:  # news tone leads the target over the next news_horizon_days
        lead = np.convolve(tone_by_day, np.ones(config.news_horizon_days))[:n_days]
        lead = np.concatenate([[0.0], lead[:-1]])
        zl = column["ZL"]
        shocks[:, zl] += config.news_impact * sigma[:, zl] * lead

    first_index = {s.symbol: _first_index(days, s.first_date) for s in specs}
    for s in specs:
        shocks[: first_index[s.symbol] + 1, column[s.symbol]] = 0.0

    drift_cum = np.cumsum(drift_annual / TRADING_DAYS_PER_YEAR, axis=0)
    deviation = np.zeros((n_days, n_sym))
    for s in _parents_first(specs):
        i, f = column[s.symbol], min(first_index[s.symbol], n_days - 1)
        keep = 0.5 ** (1.0 / (s.reversion_halflife_years * TRADING_DAYS_PER_YEAR))
        if s.reverts_to is None:
            deviation[:, i] = _ar1(shocks[:, i], keep)
        else:
            p = column[s.reverts_to]
            spread = shocks[:, i] - shocks[:, p]
            spread[: f + 1] = 0.0
            parent = deviation[:, p] - deviation[f, p]
            deviation[:, i] = parent + _ar1(spread, keep)
    anchor = (
        np.log([s.start_level for s in specs])
        + drift_cum
        - drift_cum[[min(first_index[s.symbol], n_days - 1) for s in specs], np.arange(n_sym)]
    )
    return _Paths(anchor + deviation, sigma, first_index, column)


def _loadings_by_day(config: SimulatorConfig, days: np.ndarray) -> np.ndarray:
    column = {s.symbol: i for i, s in enumerate(config.symbols)}
    base = np.zeros((len(config.symbols), len(FACTORS)))
    for i, s in enumerate(config.symbols):
        for factor, weight in s.loadings:
            base[i, FACTORS.index(factor)] = weight
    loadings = np.broadcast_to(base, (days.size, *base.shape)).copy()
    for o in config.loading_overrides:
        if o.symbol not in column:
            continue
        inside = _window_mask(days, o.start, o.end)
        for factor, weight in o.loadings:
            loadings[inside, column[o.symbol], FACTORS.index(factor)] = weight
    total = (loadings**2).sum(axis=2)
    if (total > 1.0 + 1e-9).any():
        t, i = np.argwhere(total > 1.0 + 1e-9)[0]
        raise ValueError(
            f"simulator: the squared factor loadings of {config.symbols[i].symbol} sum to "
            f"{total[t, i]:.3f} > 1 on {days[t]}; lower its loadings or overrides"
        )
    return loadings


def _regime_drift_and_vol(
    config: SimulatorConfig, days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Annual drift and vol multiplier per day and symbol, smoothed across window edges."""
    groups = sorted({s.group for s in config.symbols})
    drift = np.zeros((days.size, len(groups)))
    log_vol = np.zeros((days.size, len(groups)))
    for w in config.regimes:
        inside = _window_mask(days, w.start, w.end)
        for group, value in w.drift:
            if group in groups:
                drift[inside, groups.index(group)] = value
        for group, value in w.vol:
            if group in groups:
                log_vol[inside, groups.index(group)] = math.log(value)
    drift = _ewma(drift, config.transition_halflife_days)
    log_vol = _ewma(log_vol, config.transition_halflife_days)
    take = [groups.index(s.group) for s in config.symbols]
    own_drift = np.array([s.annual_drift for s in config.symbols])
    return own_drift + drift[:, take], np.exp(log_vol[:, take])


def _garch_variance(z: np.ndarray, alpha: float, beta: float, cap: float) -> np.ndarray:
    """Unit-mean GARCH(1,1) variance driven by the standardized shocks z (T, n)."""
    omega = 1.0 - alpha - beta
    coefficient = alpha * z**2 + beta
    g = np.empty_like(z)
    g[0] = 1.0
    for t in range(1, z.shape[0]):
        g[t] = np.minimum(omega + g[t - 1] * coefficient[t - 1], cap)
    return g


# ---------------------------------------------------------------------------------------------
# Frames


def _daily_frame(
    config: SimulatorConfig,
    days: np.ndarray,
    paths: _Paths,
    spec: SymbolSpec,
    draws: tuple[np.ndarray, np.ndarray] | None,
) -> pl.DataFrame:
    i, f = paths.column[spec.symbol], paths.first_index[spec.symbol]
    close = np.exp(paths.log_price[:, i])
    columns: dict[str, object] = {
        "symbol": spec.symbol,
        "date": days[f:],
        "value": np.round(close[f:], spec.decimals),
        "unit": spec.unit,
        "source": PRICE_SOURCE,
        "published_at": days[f:],
    }
    if spec.base_volume is not None and draws is not None:
        (gap, up, down), noise = draws
        sigma = paths.sigma[:, i]
        previous = np.concatenate([close[:1], close[:-1]])
        open_ = previous * np.exp(config.ohlc_gap_share * sigma * gap)
        high = np.maximum(open_, close) * np.exp(config.ohlc_range_share * sigma * np.abs(up))
        low = np.minimum(open_, close) * np.exp(-config.ohlc_range_share * sigma * np.abs(down))
        years = (days - days[0]).astype("int64") / 365.25
        base_sigma = spec.annual_vol / math.sqrt(TRADING_DAYS_PER_YEAR)
        volume = (
            spec.base_volume
            * np.exp(config.volume_growth * years)
            * (sigma / base_sigma)
            * np.exp(config.volume_noise * noise - 0.5 * config.volume_noise**2)
        )
        columns |= {
            "open": np.round(open_[f:], spec.decimals),
            "high": np.round(high[f:], spec.decimals),
            "low": np.round(low[f:], spec.decimals),
            "volume": np.round(volume[f:]),
        }
    return conform_prices(pl.DataFrame(columns))


def _cot_frame(
    config: SimulatorConfig,
    days: np.ndarray,
    paths: _Paths,
    symbol: str,
    tuesdays: np.ndarray,
    innovations: np.ndarray,
) -> pl.DataFrame:
    """Speculators' net position follows trailing momentum; known the Monday after release."""
    if tuesdays.size == 0:
        return conform_prices(
            pl.DataFrame(
                schema={
                    "symbol": pl.Utf8,
                    "date": pl.Date,
                    "value": pl.Float64,
                    "unit": pl.Utf8,
                    "source": pl.Utf8,
                    "published_at": pl.Date,
                }
            )
        )
    spec = next(s for s in config.symbols if s.symbol == symbol)
    i, f = paths.column[symbol], paths.first_index[symbol]
    phi = config.cot_noise_persistence
    scaled = config.cot_noise_sd * math.sqrt(1.0 - phi**2) * innovations
    scaled[0] = config.cot_noise_sd * innovations[0]  # start from the stationary distribution
    noise = _ar1(scaled, phi)
    lookback = np.maximum(tuesdays - config.cot_lookback_days, f)
    typical = spec.annual_vol * math.sqrt(config.cot_lookback_days / TRADING_DAYS_PER_YEAR)
    momentum = (paths.log_price[tuesdays, i] - paths.log_price[lookback, i]) / typical
    value = np.clip(
        config.cot_scale * np.tanh(config.cot_sensitivity * momentum) + noise,
        -config.cot_bound,
        config.cot_bound,
    )
    published = np.busday_offset(
        days[tuesdays], config.cot_release_lag_business_days, roll="forward"
    )
    keep = (published <= np.datetime64(config.end)) & (tuesdays >= f)
    return conform_prices(
        pl.DataFrame(
            {
                "symbol": f"COT_{symbol}",
                "date": days[tuesdays][keep],
                "value": np.round(value[keep], 1),
                "unit": "pct_oi",
                "source": PRICE_SOURCE,
                "published_at": published[keep],
            }
        )
    )


# ---------------------------------------------------------------------------------------------
# News


_NEWS_TEMPLATES: dict[str, dict[int, tuple[tuple[str, str], ...]]] = {
    "biofuel": {
        1: (
            ("EPA raises biomass-based diesel mandate to {bbn:.2f} billion gallons",
             "The higher blending obligation is seen lifting soybean oil demand from renewable "
             "diesel plants by about {pct:.1f}%."),
            ("Renewable diesel expansions boost soybean oil feedstock demand",
             "New capacity of {num} thousand barrels a day is expected to tighten vegetable "
             "oil supplies."),
        ),
        -1: (
            ("EPA biofuel volumes disappoint at {bbn:.2f} billion gallons",
             "Traders cut expectations for soybean oil use in biodiesel by {pct:.1f}% after "
             "the proposal."),
            ("Small refinery exemptions granted to {num} refiners, RIN prices slump",
             "The waivers reduce blending obligations and weigh on feedstock demand."),
        ),
        0: (
            ("EPA schedules hearing on renewable fuel standard volumes",
             "Stakeholders will comment on proposed obligations of {bbn:.2f} billion "
             "gallons."),
        ),
    },
    "palm_levy": {
        1: (
            ("Indonesia raises palm oil export levy to ${usd:.0f} per tonne",
             "Higher levies are expected to curb palm shipments and push buyers toward "
             "soybean oil."),
            ("Malaysian palm oil stocks drop {pct:.1f}% as output disappoints",
             "Tighter palm supplies support competing vegetable oils."),
        ),
        -1: (
            ("Indonesia cuts palm oil export levy to revive shipments",
             "The levy falls to ${usd:.0f} per tonne, making palm cheaper against soybean "
             "oil."),
            ("Malaysian palm oil stocks climb {pct:.1f}% to a multi-month high",
             "Ample palm supplies weigh on the vegetable oil complex."),
        ),
        0: (
            ("Malaysia keeps crude palm oil export duty unchanged",
             "The reference price was set at ${usd:.0f} above last month's level; the duty "
             "rate stays the same."),
        ),
    },
    "brazil_harvest": {
        1: (
            ("Dry spell trims Brazil soybean crop estimate to {big:.0f} million tonnes",
             "Analysts cut their forecast by {pct:.1f}% after weeks without rain in Mato "
             "Grosso."),
            ("Argentine crushers strike, halting soybean oil exports",
             "About {num} crushing plants are idle, tightening world soybean oil supply."),
        ),
        -1: (
            ("Brazil harvests record soybean crop of {big:.0f} million tonnes",
             "The bigger crop adds to export competition and crush supplies."),
            ("Conab raises Brazil soybean estimate by {pct:.1f}%",
             "Favourable weather lifted yields across the main growing states."),
        ),
        0: (
            ("Brazil soybean harvest reaches {pct:.1f}% of area, in line with average",
             "Fieldwork progressed normally across the main states."),
        ),
    },
    "crude": {
        1: (
            ("Crude rallies {pct:.1f}% as OPEC+ extends output cuts",
             "Higher diesel prices improve biodiesel margins and support soybean oil."),
            ("Oil jumps on supply disruption fears",
             "Brent gained ${small:.1f} a barrel, lifting energy-linked vegetable oils."),
        ),
        -1: (
            ("Crude slides {pct:.1f}% on demand worries",
             "Weaker energy prices squeeze biodiesel margins and weigh on soybean oil."),
            ("OPEC+ agrees to raise output, oil falls",
             "Brent lost ${small:.1f} a barrel as more supply heads to market."),
        ),
        0: (
            ("Oil steady ahead of weekly inventory data",
             "Traders expect a change of about {small:.1f} million barrels in US crude "
             "stocks."),
        ),
    },
    "weather": {
        1: (
            ("Hot, dry forecast threatens US Midwest soybean yields",
             "Forecasters see temperatures {small:.0f} degrees above normal through "
             "pollination."),
            ("Drought expands across the US Corn Belt",
             "About {pct:.1f}% of soybean area is now in drought."),
        ),
        -1: (
            ("Timely rains lift US soybean crop ratings",
             "{pct:.1f}% more of the crop is rated good to excellent than a week ago."),
            ("Benign weather points to a large US soybean crop",
             "Private analysts raised their yield estimate by {small:.1f} bushels an acre."),
        ),
        0: (
            ("Weather models mixed for the US Corn Belt",
             "Forecasts disagree on rainfall over the next {num} days."),
        ),
    },
    "china_demand": {
        1: (
            ("China books {kt:.0f} thousand tonnes of US soybeans",
             "The flash sale is the largest in weeks and points to firm crush demand."),
            ("China's soybean oil imports surge {pct:.1f}% on the year",
             "Strong cooking oil demand pulls supplies from the Americas."),
        ),
        -1: (
            ("China cancels {kt:.0f} thousand tonnes of US soybean purchases",
             "Weak crush margins prompted buyers to defer cargoes."),
            ("Chinese crush margins turn negative, soybean imports slow",
             "Imports are seen {pct:.1f}% below last year's pace."),
        ),
        0: (
            ("China's soybean imports steady at {small:.1f} million tonnes",
             "Customs data showed arrivals in line with expectations."),
        ),
    },
    "trade_policy": {
        1: (
            ("US and China agree tariff truce, soybean purchases expected",
             "Officials said agricultural purchases could rise by {pct:.1f}% next year."),
            ("Washington restricts imported biofuel feedstocks",
             "The rule favours domestic soybean oil over imported used cooking oil."),
        ),
        -1: (
            ("China imposes {pct:.1f}% retaliatory tariff on US soybeans",
             "Buyers are expected to turn to Brazilian supplies."),
            ("Trade talks collapse, US farm exports at risk",
             "Negotiators left without a date for the next round."),
        ),
        0: (
            ("Trade negotiators meet again with no breakthrough",
             "Talks will resume in {num} days, officials said."),
        ),
    },
}  # fmt: skip


def _simulate_news(
    config: SimulatorConfig, days: np.ndarray, rngs: dict[str, np.random.Generator]
) -> tuple[pl.DataFrame, np.ndarray]:
    """Headlines with hidden tone, and the summed tone per business day (for the ZL lead)."""
    per_day = np.searchsorted(
        np.cumsum(config.news_daily_probs), rngs["news_count"].random(days.size), side="right"
    )
    per_day = np.minimum(per_day, len(config.news_daily_probs) - 1)
    day_index = np.repeat(np.arange(days.size), per_day)
    n = day_index.size

    bullish = (1.0 - config.news_neutral_share) / 2.0
    u = rngs["news_tone"].random(n)
    tone = np.where(u < bullish, 1, np.where(u < 2 * bullish, -1, 0))

    weights = np.ones((days.size, len(NEWS_TOPICS)))
    regimes = {w.name: w for w in config.regimes}
    for name, topic, weight in config.news_topic_emphasis:
        if name in regimes:
            inside = _window_mask(days, regimes[name].start, regimes[name].end)
            weights[inside, NEWS_TOPICS.index(topic)] *= weight
    cumulative = np.cumsum(weights, axis=1)
    cumulative /= cumulative[:, -1:]
    topic_u = rngs["news_topic"].random(n)
    topic_index = (topic_u[:, None] > cumulative[day_index]).sum(axis=1)
    topic_index = np.minimum(topic_index, len(NEWS_TOPICS) - 1)

    template_u = rngs["news_template"].random(n)
    numbers = rngs["news_numbers"].random((n, 7))
    headlines, bodies = [], []
    for k in range(n):
        options = _NEWS_TEMPLATES[NEWS_TOPICS[topic_index[k]]][int(tone[k])]
        headline, body = options[int(template_u[k] * len(options))]
        u_pct, u_big, u_small, u_kt, u_usd, u_bbn, u_num = numbers[k]
        fields = {
            "pct": 1.0 + 19.0 * u_pct,
            "big": 100.0 + 80.0 * u_big,
            "small": 1.0 + 11.0 * u_small,
            "kt": 100.0 + 800.0 * u_kt,
            "usd": 20.0 + 230.0 * u_usd,
            "bbn": 2.0 + 4.0 * u_bbn,
            "num": int(5 + 35 * u_num),
        }
        headlines.append(headline.format(**fields))
        bodies.append(body.format(**fields))

    truth = pl.DataFrame(
        {
            "published_at": days[day_index],
            "headline": pl.Series(headlines, dtype=pl.Utf8),
            "body": pl.Series(bodies, dtype=pl.Utf8),
            "source": NEWS_SOURCE,
            "topic": pl.Series([NEWS_TOPICS[t] for t in topic_index], dtype=pl.Utf8),
            "tone": tone.astype(np.int8),
        }
    )
    tone_by_day = np.zeros(days.size)
    np.add.at(tone_by_day, day_index, tone)
    return truth, tone_by_day


# ---------------------------------------------------------------------------------------------
# Helpers


def _validate(config: SimulatorConfig) -> None:
    if config.end < config.start:
        raise ValueError(f"simulator: end {config.end} is before start {config.start}")
    names = [s.symbol for s in config.symbols]
    if len(set(names)) != len(names):
        raise ValueError(f"simulator: symbols repeat in {names}")
    for s in config.symbols:
        unknown = [f for f, _ in s.loadings if f not in FACTORS]
        if unknown:
            raise ValueError(
                f"simulator: {s.symbol} loads unknown factors {unknown}; use {FACTORS}"
            )
        if s.reverts_to is not None and s.reverts_to not in names:
            raise ValueError(f"simulator: {s.symbol} reverts to unknown symbol {s.reverts_to}")
        if s.group not in GROUPS:
            raise ValueError(f"simulator: {s.symbol} has unknown group {s.group}; use {GROUPS}")
        if s.start_level <= 0 or s.annual_vol <= 0 or s.reversion_halflife_years <= 0:
            raise ValueError(
                f"simulator: {s.symbol} needs a positive start_level, annual_vol and "
                "reversion_halflife_years"
            )
    for w in config.regimes:
        unknown = [g for g, _ in w.drift + w.vol if g not in GROUPS]
        if unknown or any(v <= 0 for _, v in w.vol):
            raise ValueError(
                f"simulator: regime {w.name} needs groups from {GROUPS} and positive vol "
                f"multipliers, got unknown groups {unknown}"
            )
    for o in config.loading_overrides:
        unknown = [f for f, _ in o.loadings if f not in FACTORS]
        if unknown:
            raise ValueError(f"simulator: override {o.name} uses unknown factors {unknown}")
    missing = [c for c in config.cot_symbols if c not in names]
    if missing:
        raise ValueError(f"simulator: COT symbols {missing} are not simulated symbols")
    if not 0.0 < config.garch_alpha + config.garch_beta < 1.0:
        raise ValueError("simulator: garch_alpha + garch_beta must lie in (0, 1)")
    if config.student_t_df <= 2.0:
        raise ValueError("simulator: student_t_df must exceed 2 (finite variance)")
    if not 0.0 <= config.cot_noise_persistence < 1.0:
        raise ValueError("simulator: cot_noise_persistence must lie in [0, 1)")
    if min(config.cot_lookback_days, config.news_horizon_days) < 1:
        raise ValueError("simulator: cot_lookback_days and news_horizon_days must be >= 1")
    if abs(sum(config.news_daily_probs) - 1.0) > 1e-9:
        raise ValueError("simulator: news_daily_probs must sum to 1")
    for _, topic, _ in config.news_topic_emphasis:
        if topic not in NEWS_TOPICS:
            raise ValueError(f"simulator: unknown news topic {topic}; use {NEWS_TOPICS}")


def _present(config: SimulatorConfig, days: np.ndarray) -> list[SymbolSpec]:
    """Symbols that have at least one day in the run (RIN_D4 begins in 2010)."""
    last = days[-1]
    return [
        s for s in config.symbols if s.first_date is None or np.datetime64(s.first_date) <= last
    ]


def _parents_first(specs: tuple[SymbolSpec, ...]) -> list[SymbolSpec]:
    ordered: list[SymbolSpec] = []
    pending = list(specs)
    while pending:
        done = {s.symbol for s in ordered}
        ready = [s for s in pending if s.reverts_to is None or s.reverts_to in done]
        if not ready:
            raise ValueError(
                f"simulator: reverts_to forms a cycle among {[s.symbol for s in pending]}"
            )
        ordered += ready
        pending = [s for s in pending if s not in ready]
    return ordered


def _first_index(days: np.ndarray, first_date: dt.date | None) -> int:
    return 0 if first_date is None else int(np.searchsorted(days, np.datetime64(first_date, "D")))


def _business_days(start: dt.date, end: dt.date) -> np.ndarray:
    days = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)
    return days[np.is_busday(days)]


def _weekday(days: np.ndarray) -> np.ndarray:
    """Monday = 0 (1970-01-01 was a Thursday)."""
    return (days.astype("int64") + 3) % 7


def _window_mask(days: np.ndarray, start: dt.date, end: dt.date) -> np.ndarray:
    return (days >= np.datetime64(start, "D")) & (days <= np.datetime64(end, "D"))


def _standard_t(rng: np.random.Generator, df: float, size: tuple[int, int]) -> np.ndarray:
    return rng.standard_t(df, size) * math.sqrt((df - 2.0) / df)


def _ewma(values: np.ndarray, halflife_days: float) -> np.ndarray:
    """Causal exponential smoothing along time, starting from the first value."""
    if halflife_days <= 0:
        return values
    keep = 0.5 ** (1.0 / halflife_days)
    return _ar1(values, keep, gain=1.0 - keep, initial=values[0])


def _ar1(
    x: np.ndarray, keep: float, gain: float = 1.0, initial: float | np.ndarray = 0.0
) -> np.ndarray:
    """y_t = keep * y_(t-1) + gain * x_t along axis 0, with y_(-1) = initial.

    Closed form in blocks short enough that keep**-block stays small: vectorised, and it
    spares importing scipy.signal (about a second) wherever the simulator is imported.
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"simulator: AR(1) coefficient must lie in [0, 1], got {keep}")
    x = gain * np.asarray(x, dtype=float)
    if keep == 0.0:
        return x
    shape = (-1,) + (1,) * (x.ndim - 1)
    block = x.shape[0] if keep == 1.0 else max(1, int(math.log(1e6) / -math.log(keep)))
    y = np.empty_like(x)
    state = np.broadcast_to(np.asarray(initial, dtype=float), x.shape[1:])
    for start in range(0, x.shape[0], block):
        chunk = x[start : start + block]
        steps = np.arange(chunk.shape[0])
        growth = (keep**-steps).reshape(shape)
        decay = (keep**steps).reshape(shape)
        y[start : start + block] = decay * (keep * state + np.cumsum(chunk * growth, axis=0))
        state = y[start + chunk.shape[0] - 1]
    return y
