"""The seeded simulator: reproducible, canonical, and with the documented market structure.

The statistical tests check the structure the module docstring promises (fat tails, clustering,
regime volatility, correlation breaks, the weak news lead); none relies on prices being easy to
forecast.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import numpy as np
import polars as pl
import pytest

from cbi_platform.market import simulator
from cbi_platform.market.schema import (
    MARKET_PRICES_SCHEMA,
    NEWS_SCHEMA,
    SYMBOLS,
    conform_news,
    conform_prices,
)
from cbi_platform.market.simulator import (
    DEFAULT_CONFIG,
    SimulatorConfig,
    simulate_market,
    simulate_market_with_truth,
)
from cbi_platform.regimes.calendar import load_regime_calendar

D = dt.date
DAILY_SYMBOLS = ("ZL", "ZS", "ZM", "PALM", "WTI", "BRENT", "DXY", "USDBRL", "RIN_D4")
COT_SYMBOLS = ("COT_ZL", "COT_ZS", "COT_ZM")
OHLCV_SYMBOLS = ("ZL", "ZS", "ZM")
SHORT = dataclasses.replace(DEFAULT_CONFIG, end=D(2001, 12, 31))
# The simulator's own regime windows (not the regime calendar's); "historical" is the rest.
# A crisis is a falling phase and its recovery, read as one span.
_REGIMES = {w.name: (w.start, w.end) for w in DEFAULT_CONFIG.regimes}
CRISIS_WINDOWS = (
    (_REGIMES["credit_crunch_fall"][0], _REGIMES["credit_crunch_recovery"][1]),
    (_REGIMES["pandemic_crash"][0], _REGIMES["pandemic_recovery"][1]),
)
OTHER_WINDOWS = tuple(
    span for name, span in _REGIMES.items() if not name.startswith(("credit_crunch", "pandemic"))
)
SOY_PALM_BREAK = (D(2022, 5, 1), D(2022, 11, 30))


@pytest.fixture(scope="module")
def default_run():
    return simulate_market_with_truth(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def prices(default_run) -> pl.DataFrame:
    return default_run[0].prices


@pytest.fixture(scope="module")
def log_returns(prices) -> pl.DataFrame:
    """Wide daily log returns, one column per daily symbol (null before a symbol starts)."""
    wide = (
        prices.filter(pl.col("symbol").is_in(DAILY_SYMBOLS))
        .pivot(on="symbol", index="date", values="value")
        .sort("date")
    )
    return wide.select("date", *[pl.col(s).log().diff().alias(s) for s in DAILY_SYMBOLS]).slice(1)


def _between(frame: pl.DataFrame, start: dt.date, end: dt.date) -> pl.DataFrame:
    return frame.filter(pl.col("date").is_between(start, end))


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_identical_frames(default_run):
    again = simulate_market()
    assert again.prices.equals(default_run[0].prices)
    assert again.news.equals(default_run[0].news)


def test_different_seed_gives_different_frames():
    first = simulate_market(SHORT)
    other = simulate_market(dataclasses.replace(SHORT, seed=SHORT.seed + 1))
    assert first.prices.shape == other.prices.shape
    assert not first.prices.equals(other.prices)
    assert not first.news.equals(other.news)
    # Same start levels, different paths: most closes differ.
    joined = first.prices.join(other.prices, on=["symbol", "date"], suffix="_other")
    assert (joined["value"] != joined["value_other"]).mean() > 0.9


def test_a_shorter_run_is_a_prefix_of_the_default_run(prices, default_run):
    short = simulate_market(SHORT)
    assert short.as_of == SHORT.end
    expected = prices.filter((pl.col("date") <= SHORT.end) & (pl.col("published_at") <= SHORT.end))
    assert short.prices.equals(expected)
    assert short.news.equals(default_run[0].news.filter(pl.col("published_at") <= SHORT.end))


# --- schema -----------------------------------------------------------------------------------


def test_prices_conform_to_the_canonical_schema(prices, default_run):
    bundle = default_run[0]
    assert dict(prices.schema) == MARKET_PRICES_SCHEMA
    assert conform_prices(prices).equals(prices)
    assert bundle.as_of == DEFAULT_CONFIG.end
    assert set(prices["symbol"].unique()) == set(DAILY_SYMBOLS) | set(COT_SYMBOLS)
    assert set(prices["symbol"].unique()) <= set(SYMBOLS)
    assert prices.select(pl.struct("symbol", "date").is_duplicated().any()).item() is False
    assert prices["date"].dt.weekday().max() <= 5  # polars: Monday = 1 ... Friday = 5
    assert prices["published_at"].dt.weekday().max() <= 5
    assert prices["source"].unique().to_list() == ["simulated"]
    assert prices["unit"].null_count() == 0
    assert prices["value"].null_count() == 0
    assert prices["date"].min() == D(2000, 1, 3)
    assert prices["date"].max() == D(2025, 12, 31)


def test_daily_prices_are_positive_closes_known_at_the_close(prices):
    daily = prices.filter(pl.col("symbol").is_in(DAILY_SYMBOLS))
    assert (daily["published_at"] == daily["date"]).all()
    for column in ("value", "open", "high", "low"):
        assert (daily[column].drop_nulls() > 0).all(), column
    first = daily.group_by("symbol").agg(
        pl.col("date").min(), pl.col("value").sort_by("date").first()
    )
    first = dict(zip(first["symbol"], zip(first["date"], first["value"], strict=True), strict=True))
    assert first["RIN_D4"][0] == D(2010, 7, 1)
    assert first["ZL"] == (D(2000, 1, 3), 20.0)
    zl = daily.filter(pl.col("symbol") == "ZL")["value"]
    assert 5.0 < zl.min() and zl.max() < 200.0  # a plausible range, not a runaway path
    # Every daily symbol has a row on every business day from its first date.
    counts = daily.group_by("symbol").agg(pl.len()).sort("symbol")
    n_days = daily.filter(pl.col("symbol") == "ZL").height
    assert n_days == np.busday_count(D(2000, 1, 3), D(2026, 1, 1))
    assert counts.filter(pl.col("symbol") != "RIN_D4")["len"].to_list() == [n_days] * 8


def test_news_conforms_and_is_dated_on_business_days(default_run):
    news = default_run[0].news
    assert dict(news.schema) == NEWS_SCHEMA
    assert (
        conform_news(news)
        .sort(["published_at", "headline", "body"])
        .equals(news.sort(["published_at", "headline", "body"]))
    )
    assert news.null_count().sum_horizontal().item() == 0
    assert news["source"].unique().to_list() == ["simulated-wire"]
    assert news["published_at"].dt.weekday().max() <= 5
    assert news["published_at"].is_between(DEFAULT_CONFIG.start, DEFAULT_CONFIG.end).all()
    weeks = np.busday_count(DEFAULT_CONFIG.start, DEFAULT_CONFIG.end + dt.timedelta(days=1)) / 5
    per_week = news.height / weeks
    assert 1.0 <= per_week <= 3.0
    truth = default_run[1]
    assert truth.select("published_at", "headline", "body").equals(
        news.select("published_at", "headline", "body")
    )
    assert set(truth["tone"].unique()) == {-1, 0, 1}


# --- COT --------------------------------------------------------------------------------------


def test_cot_is_dated_tuesdays_and_published_the_following_monday(prices):
    cot = prices.filter(pl.col("symbol").is_in(COT_SYMBOLS))
    assert cot.height > 3 * 1300
    assert (cot["date"].dt.weekday() == 2).all()  # Tuesday
    assert (cot["published_at"].dt.weekday() == 1).all()  # Monday
    assert (cot["published_at"] == cot["date"] + dt.timedelta(days=6)).all()
    assert (cot["published_at"] > cot["date"]).all()
    assert cot["published_at"].max() <= DEFAULT_CONFIG.end
    assert (cot["unit"] == "pct_oi").all()
    assert cot["value"].abs().max() <= 60.0
    assert cot["value"].std() > 10.0  # it moves, not pinned at a bound or at zero
    gaps = cot.sort("symbol", "date").select(pl.col("date").diff().over("symbol").drop_nulls())
    assert gaps["date"].unique().to_list() == [dt.timedelta(days=7)]


def test_cot_follows_trailing_momentum(prices):
    for symbol in OHLCV_SYMBOLS:
        close = prices.filter(pl.col("symbol") == symbol).sort("date")
        momentum = close.select("date", (pl.col("value").log().diff(63)).alias("momentum"))
        cot = prices.filter(pl.col("symbol") == f"COT_{symbol}").join(momentum, on="date")
        cot = cot.drop_nulls("momentum")
        assert cot.select(pl.corr("value", "momentum")).item() > 0.6, symbol


# --- OHLC -------------------------------------------------------------------------------------


def test_ohlc_is_consistent(prices):
    bars = prices.filter(pl.col("symbol").is_in(OHLCV_SYMBOLS))
    assert bars.select("open", "high", "low", "volume").null_count().sum_horizontal().item() == 0
    consistent = bars.select(
        (pl.col("low") <= pl.min_horizontal("open", "value")).all().alias("low_ok"),
        (pl.col("high") >= pl.max_horizontal("open", "value")).all().alias("high_ok"),
    )
    assert consistent.row(0) == (True, True)
    assert (bars["high"] > bars["low"]).mean() > 0.99
    assert (bars["volume"] > 0).all()
    assert (bars["volume"] == bars["volume"].round()).all()
    others = prices.filter(~pl.col("symbol").is_in(OHLCV_SYMBOLS))
    assert others.select("open", "high", "low", "volume").null_count().min_horizontal().item() == (
        others.height
    )


# --- return structure -------------------------------------------------------------------------


def test_zl_returns_have_fat_tails_and_volatility_clustering(log_returns):
    r = log_returns["ZL"].to_numpy()
    centred = r - r.mean()
    excess_kurtosis = (centred**4).mean() / (centred**2).mean() ** 2 - 3.0
    assert excess_kurtosis > 1.0
    squared = centred**2
    assert np.corrcoef(squared[1:], squared[:-1])[0, 1] > 0.05
    assert abs(np.corrcoef(r[1:], r[:-1])[0, 1]) < 0.05  # clustering in size, not direction


def test_regime_windows_keep_away_from_the_regime_calendar():
    """The simulator's breakpoints must not be the calendar's: a model weighted by the calendar
    would otherwise be handed the data-generating process (where drift, vol and correlations
    change). Every window start and end lies more than 20 days from every calendar one."""
    calendar = load_regime_calendar()
    edges = [(w.name, edge) for w in calendar.windows for edge in (w.start, w.end)]
    assert edges
    windows = [(w.name, w.start, w.end) for w in DEFAULT_CONFIG.regimes]
    windows += [(o.name, o.start, o.end) for o in DEFAULT_CONFIG.loading_overrides]
    too_close = [
        (name, mine, calendar_name, edge)
        for name, start, end in windows
        for mine in (start, end)
        for calendar_name, edge in edges
        if abs((mine - edge).days) <= 20
    ]
    assert too_close == []


def test_simulated_bundle_names_its_target():
    assert simulate_market(SHORT).target == "ZL"


def test_crisis_windows_raise_realized_volatility(log_returns):
    vol = log_returns.select("date", (pl.col("ZL").rolling_std(21) * 252**0.5).alias("vol"))
    vol = vol.drop_nulls()
    historical = vol
    for start, end in CRISIS_WINDOWS + OTHER_WINDOWS:
        historical = historical.filter(~pl.col("date").is_between(start, end))
    historical_median = historical["vol"].median()
    assert 0.18 < historical_median < 0.32  # ZL's base vol is 25% a year
    for start, end in CRISIS_WINDOWS:
        assert _between(vol, start, end)["vol"].median() > 1.25 * historical_median, start


def test_cross_asset_correlations_in_normal_times(log_returns):
    normal = log_returns.filter(
        ~pl.col("date").is_between(D(2014, 7, 1), D(2015, 12, 31))
        & ~pl.col("date").is_between(*SOY_PALM_BREAK)
    )

    def corr(a: str, b: str) -> float:
        return normal.select(pl.corr(a, b)).item()

    assert 0.35 < corr("ZL", "PALM") < 0.65
    assert 0.2 < corr("ZL", "WTI") < 0.5
    assert corr("WTI", "BRENT") > 0.85
    assert corr("ZL", "ZS") > 0.4 and corr("ZM", "ZS") > 0.55  # the crush
    assert -0.3 < corr("ZS", "USDBRL") < -0.05  # a weaker real is bearish soy, a little
    assert -0.2 < corr("ZL", "DXY") < 0.0


@pytest.mark.parametrize(
    ("other", "start", "end"),
    [("WTI", D(2014, 7, 1), D(2015, 12, 31)), ("PALM", *SOY_PALM_BREAK)],
    ids=["soy_crude_break", "soy_palm_break"],
)
def test_documented_correlation_breaks(log_returns, other, start, end):
    window = 63
    rolling = log_returns.select(
        "date",
        pl.col("date").shift(window - 1).alias("window_start"),
        pl.rolling_corr("ZL", other, window_size=window).alias("corr"),
    ).drop_nulls()
    inside = rolling.filter((pl.col("window_start") >= start) & (pl.col("date") <= end))
    outside = rolling.filter((pl.col("date") < start) | (pl.col("window_start") > end))
    assert inside.height > 50
    inside_median, outside_median = inside["corr"].median(), outside["corr"].median()
    assert outside_median > 0.25
    assert inside_median < 0.15
    assert inside_median < outside_median - 0.2


def test_news_tone_leads_zl_returns_weakly(prices, default_run):
    truth = default_run[1]
    zl = prices.filter(pl.col("symbol") == "ZL").sort("date")
    log_close = np.log(zl["value"].to_numpy())
    position = {d: i for i, d in enumerate(zl["date"].to_list())}
    at = np.array([position[d] for d in truth["published_at"].to_list()])
    tone = truth["tone"].to_numpy().astype(float)
    usable = (at >= 5) & (at + 5 < log_close.size)
    at, tone = at[usable], tone[usable]
    next_5 = log_close[at + 5] - log_close[at]
    previous_5 = log_close[at] - log_close[at - 5]
    lead = np.corrcoef(tone, next_5)[0, 1]
    lag = np.corrcoef(tone, previous_5)[0, 1]
    assert 0.08 < lead < 0.3  # weak: a hint, not a crystal ball
    assert abs(lag) < lead / 2


def test_headline_wording_carries_the_tone(default_run):
    truth = default_run[1]
    for tone in (-1, 0, 1):
        headlines = truth.filter(pl.col("tone") == tone)["headline"]
        others = truth.filter(pl.col("tone") != tone)["headline"]
        # Templates differ by tone, so one tone's headline templates never match another's.
        strip = r"[0-9.$%]+"
        assert not set(headlines.str.replace_all(strip, "#")) & set(
            others.str.replace_all(strip, "#")
        ), tone


# --- runtime and configurations ---------------------------------------------------------------


def test_default_run_is_fast():
    started = time.perf_counter()
    simulate_market()
    assert time.perf_counter() - started < 10.0


def test_a_short_configuration_works():
    bundle = simulate_market(SHORT)
    prices = bundle.prices
    assert prices["date"].max() == D(2001, 12, 31)
    assert prices["published_at"].max() <= D(2001, 12, 31)
    assert "RIN_D4" not in prices["symbol"].unique().to_list()  # begins in 2010
    assert set(prices["symbol"].unique()) == set(DAILY_SYMBOLS) - {"RIN_D4"} | set(COT_SYMBOLS)
    assert bundle.news.height > 100
    assert any("RIN_D4" in notice for notice in bundle.notices)


def test_a_run_of_a_few_days_works():
    bundle = simulate_market(dataclasses.replace(DEFAULT_CONFIG, end=D(2000, 1, 7)))
    assert bundle.prices.filter(pl.col("symbol") == "ZL").height == 5
    # The Tuesday's COT is released after the run ends, so it is not known yet.
    assert bundle.prices.filter(pl.col("symbol").str.starts_with("COT_")).height == 0


def test_invalid_configurations_are_rejected():
    with pytest.raises(ValueError, match="before start"):
        simulate_market(dataclasses.replace(DEFAULT_CONFIG, end=D(1999, 1, 1)))
    with pytest.raises(ValueError, match="garch"):
        simulate_market(dataclasses.replace(SHORT, garch_alpha=0.2, garch_beta=0.85))
    heavy = tuple(
        dataclasses.replace(s, loadings=(("soy", 0.9), ("crude", 0.9))) if s.symbol == "ZL" else s
        for s in SHORT.symbols
    )
    with pytest.raises(ValueError, match="loadings of ZL"):
        simulate_market(dataclasses.replace(SHORT, symbols=heavy))


def test_module_docstring_documents_every_parameter():
    doc = simulator.__doc__ or ""
    for field in dataclasses.fields(SimulatorConfig):
        assert f"`{field.name}`" in doc, field.name


def test_config_is_hashable_and_frozen():
    assert hash(SimulatorConfig()) == hash(DEFAULT_CONFIG)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_CONFIG.seed = 1  # type: ignore[misc]
