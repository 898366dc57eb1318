"""Correlation-break monitor: soy–palm and soy–crude outside their own historical band.

ZL (soybean oil) normally moves with palm oil (substitute vegetable oil) and with crude (biodiesel
economics). When such a link breaks, models that learned it mislead, so a sustained break is a
retraining condition (`CORRELATION_BREAK`).

Method (plain numpy/polars, no Dagster):

1. `rolling_correlation`: the two symbols' closes are aligned on their COMMON dates first
   (different sources have different holidays), non-positive or non-finite closes are dropped
   (e.g. WTI's -36.98 on 2020-04-20, which has no log), then daily log returns between
   consecutive common dates are correlated over a trailing window of `window` returns.
2. `correlation_breaks`: POINT IN TIME. The band at date t is the `lower_pct` / `upper_pct`
   percentile of the rolling correlation over the dates strictly BEFORE t (an expanding
   history; at least `min_history` values, else the band is null). A day is `outside` when the
   correlation is below the lower or above the upper bound, `run_length` counts consecutive
   outside days, and the pair is `breaking` once the run reaches `consecutive_days`. Nothing at
   t depends on data after t (a test truncates the input at every date and compares).
3. `monitor_correlations`: for each pair in `PAIRS` the first partner symbol present in the
   prices is used; a pair with no daily partner (the real shared data has only monthly palm,
   `PALM_M`) is reported as skipped with a reason, never silently dropped.
4. `correlation_conditions`: one `Condition` per monitored pair for the alerting and retraining
   sensors; `break_episodes` lists (start, end) of breaking runs for reports.

Settings (`CorrelationSettings`). Chosen on the simulator, whose documented breaks are
`soy_crude_break` 2014-07-01..2015-12-31 (ZL-WTI ~0.35 -> ~0) and `soy_palm_break`
2022-05-01..2022-11-30 (ZL-PALM ~0.5 -> ~0), over the default seed and 11 more seeds, trading
detection delay against false alarms in 2002-2013 (no correlation change there):

    ======================  =====  =========================================================
    setting                 dflt   why
    ======================  =====  =========================================================
    `window`                42     two months of daily returns: the sampling sd of a rolling
                                   correlation near 0.4 is about (1 - r^2) / sqrt(42) ~ 0.13,
                                   small enough to see a drop to ~0, quick enough to see it
                                   within weeks (63 detects the palm break ~2 weeks later)
    `lower_pct`,            2.5,   the pair's own central 95% range of past rolling
    `upper_pct`             97.5   correlations, so one rule fits soy-palm (~0.5) and
                                   soy-crude (~0.35). 5/95 detects ~1 week earlier but
                                   doubles false alarms (0.9 vs 0.5 episodes a year per pair)
    `consecutive_days`      10     two weeks outside in a row: rolling correlations are
                                   strongly autocorrelated, so short excursions are common;
                                   15 halves false alarms again but delays by ~1-2 weeks
    `min_history`           504    two years of rolling values before a band is trusted:
                                   tail percentiles of fewer autocorrelated values are unstable
    `clear_days`            10     hysteresis: a break clears after two weeks back inside its
                                   band, so a correlation that blinks back for a day or two
                                   does not close and re-open the alert
    ======================  =====  =========================================================

Measured with the defaults (12 seeds; median / worst calendar days from the documented start
to the first breaking day inside the window): soy-palm 36 / 65, soy-crude 70 / 283 (the
crude break is the weaker one: its ~0.35 drop is under three sampling sds); breaking days in
2002-2013 ~1.7% (worst seed 2.6%), ~0.5 episodes a year per pair (measured before the
`clear_days` hysteresis, which lengthens episodes without adding any). Default seed (bounds
asserted in `cbi_platform_tests/operations/test_correlation.py`): soy-palm first breaking day
inside the window 2022-05-02 (the alarm began 2022-04-19 on a chance dip of the realized
correlation just before the window and held; 100% of window days breaking with 10 clear days,
79% without), soy-crude 2014-08-08 (37%; 28% without); in 2002-2013, 5 soy-palm and 7
soy-crude episodes with or without it, breaking on 4.7% and 3.6% of days (2.3% and 1.4%
without). `clear_days` (10, two weeks back inside the band before a break clears) is the
hysteresis of issue 20; `benchmarks/monitors.py` measures its false alarms. Real data
(ZL-WTI, band from 2006-10): breaking 2.5% of days, in 2007-09..12, 2008-07 and 2008-10
(correlation unusually HIGH, commodity boom and crash) and 2013-01, 2017-02 and 2017-05..06
(unusually low, below zero). The
expanding band absorbs a long break (the simulated crude band's lower bound falls from +0.02
in mid-2014 to -0.11 by the end of 2015), so a lasting change eventually stops firing instead
of requesting retraining forever; that is also why the crude break fires in episodes rather
than throughout its 18 months.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.conditions import CORRELATION_BREAK, Condition

# pair -> (target symbol, partner candidates in order of preference). "Soy" is ZL, the target;
# `monitor_correlations` substitutes its own `target` argument for the first element.
PAIRS: dict[str, tuple[str, tuple[str, ...]]] = {
    "soy_palm": ("ZL", ("PALM",)),
    "soy_crude": ("ZL", ("WTI", "BRENT", "CL")),
}

BREAK_COLUMNS = ("date", "corr", "band_lo", "band_hi", "outside", "run_length", "breaking")


@dataclass(frozen=True)
class CorrelationSettings:
    """Thresholds of the correlation-break monitor (defaults explained in the module doc)."""

    window: int = 42
    lower_pct: float = 2.5
    upper_pct: float = 97.5
    consecutive_days: int = 10
    min_history: int = 504
    clear_days: int = 10

    def __post_init__(self) -> None:
        if self.window < 3:
            raise ValueError(f"window must be at least 3 returns, got {self.window}")
        if not 0 <= self.lower_pct < self.upper_pct <= 100:
            raise ValueError(
                f"need 0 <= lower_pct < upper_pct <= 100, got {self.lower_pct}, {self.upper_pct}"
            )
        if self.consecutive_days < 1 or self.min_history < 1 or self.clear_days < 1:
            raise ValueError("consecutive_days, min_history and clear_days must be positive")


@dataclass(frozen=True)
class PairResult:
    """One pair's judgement. `frame` is `correlation_breaks`' output (None when skipped)."""

    pair: str
    target: str
    partner: str | None
    skipped: bool
    reason: str | None = None
    frame: pl.DataFrame | None = field(default=None, repr=False)

    def latest(self) -> dict[str, Any] | None:
        """The last row of `frame` as a dict, or None when skipped or empty."""
        if self.frame is None or self.frame.height == 0:
            return None
        return self.frame.row(self.frame.height - 1, named=True)

    @property
    def breaking(self) -> bool:
        row = self.latest()
        return bool(row and row["breaking"])


def _daily_closes(prices: pl.DataFrame, symbol: str) -> pl.DataFrame:
    return (
        prices.filter(pl.col("symbol") == symbol)
        .select("date", pl.col("value").cast(pl.Float64))
        .filter(pl.col("value").is_finite() & (pl.col("value") > 0))
        .unique("date", keep="last")
        .sort("date")
    )


def aligned_returns(prices: pl.DataFrame, a: str, b: str) -> pl.DataFrame:
    """Daily log returns (date, ret_a, ret_b) between consecutive dates on which both symbols
    have a positive close, so both returns of a row span the same days."""
    joined = _daily_closes(prices, a).join(
        _daily_closes(prices, b), on="date", how="inner", suffix="_b"
    )
    return (
        joined.sort("date")
        .select(
            "date",
            pl.col("value").log().diff().alias("ret_a"),
            pl.col("value_b").log().diff().alias("ret_b"),
        )
        .slice(1)
    )


def rolling_correlation(prices: pl.DataFrame, a: str, b: str, window: int = 42) -> pl.DataFrame:
    """(date, corr): Pearson correlation of the last `window` aligned daily log returns of `a`
    and `b` (long-form `prices` with date, symbol, value). The first `window - 1` returns get no
    row; a window with zero variance gives a null corr."""
    rets = aligned_returns(prices, a, b)
    if rets.height < window:
        return pl.DataFrame(schema={"date": pl.Date(), "corr": pl.Float64()})
    x = rets["ret_a"].to_numpy()
    y = rets["ret_b"].to_numpy()
    corr = _rolling_corr(x, y, window)
    out = pl.DataFrame({"date": rets["date"][window - 1 :], "corr": corr[window - 1 :]})
    return out.with_columns(pl.col("corr").fill_nan(None))


def _rolling_corr(x: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Trailing-window Pearson correlation, centred per window for numerical stability."""
    xs = np.lib.stride_tricks.sliding_window_view(x, window)
    ys = np.lib.stride_tricks.sliding_window_view(y, window)
    xc = xs - xs.mean(axis=1, keepdims=True)
    yc = ys - ys.mean(axis=1, keepdims=True)
    den = np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (xc * yc).sum(axis=1) / den, np.nan)
    out = np.full(x.shape[0], np.nan)
    out[window - 1 :] = np.clip(r, -1.0, 1.0)
    return out


def _percentile_sorted(values: list[float], pct: float) -> float:
    """numpy's default ('linear') percentile of an already sorted list."""
    pos = pct / 100.0 * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def correlation_breaks(
    corr_frame: pl.DataFrame, settings: CorrelationSettings | None = None
) -> pl.DataFrame:
    """Point-in-time band and break flags for a (date, corr) frame; columns `BREAK_COLUMNS`.

    band_lo/band_hi at t: percentiles of the non-null corr values dated strictly before t
    (null until `min_history` of them exist). outside: corr below band_lo or above band_hi
    (False when corr or band is null). run_length: consecutive outside days ending at t.
    breaking (with hysteresis): starts when run_length reaches consecutive_days and lasts
    until the correlation has been back inside its band for clear_days days in a row, so a
    break whose correlation wanders back across the band edge for a day or two stays one
    episode (clear_days 1: breaking is run_length >= consecutive_days)."""
    settings = settings or CorrelationSettings()
    frame = corr_frame.select("date", "corr").sort("date")
    corr = frame["corr"].to_list()
    history: list[float] = []
    lo_out: list[float | None] = []
    hi_out: list[float | None] = []
    outside: list[bool] = []
    runs: list[int] = []
    breaking: list[bool] = []
    run = inside = 0
    is_breaking = False
    for value in corr:
        lo = hi = None
        if len(history) >= settings.min_history:
            lo = _percentile_sorted(history, settings.lower_pct)
            hi = _percentile_sorted(history, settings.upper_pct)
        finite = value is not None and math.isfinite(value)
        out = bool(finite and lo is not None and (value < lo or value > hi))
        run = run + 1 if out else 0
        inside = 0 if out else inside + 1
        if run >= settings.consecutive_days:
            is_breaking = True
        elif is_breaking and inside >= settings.clear_days:
            is_breaking = False
        breaking.append(is_breaking)
        lo_out.append(lo)
        hi_out.append(hi)
        outside.append(out)
        runs.append(run)
        if finite:
            bisect.insort(history, value)
    return frame.with_columns(
        pl.Series("band_lo", lo_out, dtype=pl.Float64),
        pl.Series("band_hi", hi_out, dtype=pl.Float64),
        pl.Series("outside", outside, dtype=pl.Boolean),
        pl.Series("run_length", runs, dtype=pl.Int64),
        pl.Series("breaking", breaking, dtype=pl.Boolean),
    )


def break_episodes(frame: pl.DataFrame) -> list[tuple[dt.date, dt.date]]:
    """(first, last) date of each run of consecutive `breaking` rows, in date order. The first
    date is the day the break was declared (the run had reached `consecutive_days`)."""
    episodes: list[tuple[dt.date, dt.date]] = []
    start = prev = None
    for day, brk in frame.select("date", "breaking").iter_rows():
        if brk:
            if start is None:
                start = day
            prev = day
        elif start is not None:
            episodes.append((start, prev))
            start = None
    if start is not None:
        episodes.append((start, prev))
    return episodes


def _point_in_time(prices: pl.DataFrame, as_of: dt.date | None) -> pl.DataFrame:
    if as_of is None:
        return prices
    keep = pl.col("date") <= as_of
    if "published_at" in prices.columns:
        keep = keep & (pl.col("published_at") <= as_of)
    return prices.filter(keep)


def monitor_correlations(
    prices: pl.DataFrame,
    target: str = "ZL",
    settings: CorrelationSettings | None = None,
    pairs: dict[str, tuple[str, tuple[str, ...]]] | None = None,
    as_of: dt.date | None = None,
) -> dict[str, PairResult]:
    """Judge every pair of `pairs` (default `PAIRS`) on long-form `prices`.

    `target` replaces the pairs' own first symbol. The first partner candidate with daily rows
    in `prices` is used. With `as_of`, only rows dated and (if the column exists) published on
    or before it are used, so a value published the next day (EIA crude) is not seen early.
    A pair is skipped, with a reason, when the target or every partner is absent or when the
    common history is shorter than one window."""
    settings = settings or CorrelationSettings()
    pairs = PAIRS if pairs is None else pairs
    prices = _point_in_time(prices, as_of)
    present = set(prices["symbol"].unique().to_list()) if prices.height else set()
    results: dict[str, PairResult] = {}
    for pair, (_default_target, candidates) in pairs.items():
        if target not in present:
            results[pair] = PairResult(pair, target, None, True, f"target {target} has no rows")
            continue
        partner = next((c for c in candidates if c in present), None)
        if partner is None:
            monthly = sorted(s for s in present if any(s == f"{c}_M" for c in candidates))
            extra = f" (only monthly {', '.join(monthly)}, too coarse)" if monthly else ""
            reason = f"no daily series for any of {', '.join(candidates)}{extra}"
            results[pair] = PairResult(pair, target, None, True, reason)
            continue
        corr = rolling_correlation(prices, target, partner, settings.window)
        if corr.height == 0:
            reason = f"{target} and {partner} share fewer than {settings.window + 1} dates"
            results[pair] = PairResult(pair, target, partner, True, reason)
            continue
        results[pair] = PairResult(
            pair, target, partner, False, None, correlation_breaks(corr, settings)
        )
    return results


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _run_start(frame: pl.DataFrame) -> dt.date | None:
    """First day of the run of outside days ending at the last row (None if not outside)."""
    run = int(frame["run_length"][-1])
    return frame["date"][frame.height - run] if run else None


def _direction(row: dict[str, Any]) -> str | None:
    if not row["outside"]:
        return None
    return "below" if row["corr"] < row["band_lo"] else "above"


def correlation_conditions(
    results: dict[str, PairResult], as_of: dt.date, link: str | None = None
) -> list[Condition]:
    """One `Condition` per monitored pair, keyed "correlation_break/<pair>", firing while the
    pair is breaking at its latest date. Skipped pairs give no condition (nothing was judged,
    and "not firing" would resolve an open alert without evidence); their reason stays in the
    `PairResult`. Evidence is JSON-ready: partner, date of the latest correlation, corr, band,
    direction (below/above), run_length and run_start (first outside day of the current run)."""
    conditions: list[Condition] = []
    for pair, res in results.items():
        row = res.latest()
        if res.skipped or row is None or res.frame is None:
            continue
        start = _run_start(res.frame)
        evidence = {
            "target": res.target,
            "partner": res.partner,
            "date": row["date"].isoformat(),
            "corr": _round(row["corr"]),
            "band_lo": _round(row["band_lo"]),
            "band_hi": _round(row["band_hi"]),
            "direction": _direction(row),
            "run_length": int(row["run_length"]),
            "run_start": start.isoformat() if start else None,
        }
        names = f"{res.target}-{res.partner} correlation"
        if evidence["corr"] is None or evidence["band_lo"] is None:
            title = f"{names}: too little history for a band"
        elif row["breaking"]:
            title = (
                f"{names} {evidence['corr']:+.2f} {evidence['direction']} its band "
                f"[{evidence['band_lo']:+.2f}, {evidence['band_hi']:+.2f}] for "
                f"{row['run_length']} days (since {evidence['run_start']})"
            )
        elif row["outside"]:
            title = f"{names} outside its band for {row['run_length']} day(s), not yet a break"
        else:
            title = f"{names} {evidence['corr']:+.2f} within its band"
        conditions.append(
            Condition(
                key=f"correlation_break/{pair}",
                kind=CORRELATION_BREAK,
                firing=bool(row["breaking"]),
                title=title,
                as_of=as_of,
                horizon=None,
                evidence=evidence,
                link=link,
            )
        )
    return conditions
