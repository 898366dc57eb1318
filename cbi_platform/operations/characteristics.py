"""Operating characteristics of the monitors: how often each cries wolf, how fast each catches a
fault of a stated size. The offline half of issue 20, run by `benchmarks/monitors.py`.

The monitors run offline over a daily decision series (what the platform would have served on
each trading day, `procurement.decision_series`) with faults planted into it, through the same
functions the daily run calls: `validation.accuracy_series`, `coverage_series`,
`regime_coverage_series` (their hysteresis state is a pure function of the history, so the state
on day d here is the state the daily condition reports on d), `drift.feature_drift` and
`prediction_drift`, `correlation.correlation_breaks` and `daily.stale_condition`.

The faults (`FAULTS`) are written down before any run: what is changed, from which day, and
which monitors are expected to catch it (the fault x monitor matrix). A planted fault lasts
from its start to the end of the trial. Delay is counted in business days from the first day
a monitor could see the fault: the start for faults in the inputs (a feed, a feature) and in
the predictions themselves (prediction drift), and the day the first faulted forecast matures
(start + h trading days) for monitors that judge outcomes (accuracy, coverage): an outcome
monitor cannot see a forecast fault before its forecasts resolve. Both delays are reported.

A detection is an episode of an expected monitor that opens on or after the fault's start and
within `horizon_days` of the trial; an episode already open at the start does not count. A
false alarm is an episode that opens on a day outside every fault window (planted or inherent:
the simulator's regime and correlation-break windows, the real market's documented shocks),
counted per 100 business days judged.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.operations import validation
from cbi_platform.operations.hysteresis import Hysteresis, states
from cbi_platform.operations.validation import ValidationSettings

ZONE_COLUMNS = ("p10", "p30", "p50", "p70", "p90", "lo90", "hi90")

# Monitors, by the name the tables use. Outcome monitors judge matured forecasts of a horizon.
OUTCOME_MONITORS = ("accuracy", "coverage", "regime_coverage")
INPUT_MONITORS = ("feature_drift", "prediction_drift", "correlation_break", "stale_data")


@dataclass(frozen=True)
class Fault:
    """One planted fault. `kind` says what is changed:

    - "bias": every served forecast and its zones x (1 + size) from the start (`alternate`:
      the sign flips every business day, +size, -size, ...);
    - "error_scale": forecast errors x size around the served forecast (forecast' = actual +
      size x (forecast - actual)), the zones moved with the forecast;
    - "zone_width": zones shrunk to size x their width around the median;
    - "feature_shift": one feature's level + size x its reference standard deviation;
    - "stale_feed": the target's feed stops: no new close after the start.
    `expected`: monitor names that should catch it (monitor[/horizon] prefixes)."""

    name: str
    kind: str
    size: float
    expected: tuple[str, ...]
    description: str
    alternate: bool = False


FAULTS: tuple[Fault, ...] = (
    Fault(
        "bias +2%",
        "bias",
        0.02,
        ("accuracy", "prediction_drift"),
        "served forecasts and zones 2% too high",
    ),
    Fault(
        "bias -2%",
        "bias",
        -0.02,
        ("accuracy", "prediction_drift"),
        "served forecasts and zones 2% too low",
    ),
    Fault(
        "bias +4%",
        "bias",
        0.04,
        ("accuracy", "coverage", "prediction_drift"),
        "served forecasts and zones 4% too high",
    ),
    Fault(
        "bias -4%",
        "bias",
        -0.04,
        ("accuracy", "coverage", "prediction_drift"),
        "served forecasts and zones 4% too low",
    ),
    Fault(
        "bias ±4% alternating",
        "bias",
        0.04,
        ("accuracy", "coverage", "prediction_drift"),
        "+4% and -4% on alternate business days (no mean bias)",
        alternate=True,
    ),
    Fault(
        "errors x1.5",
        "error_scale",
        1.5,
        ("accuracy", "coverage"),
        "forecast errors 1.5 times as large, zones moved with the forecast",
    ),
    Fault(
        "zones x0.6",
        "zone_width",
        0.6,
        ("coverage", "regime_coverage"),
        "every zone 0.6 times as wide around its median",
    ),
    Fault(
        "feature +2 sd",
        "feature_shift",
        2.0,
        ("feature_drift",),
        "one feature's level shifted by 2 reference standard deviations",
    ),
    Fault("stale feed", "stale_feed", 0.0, ("stale_data",), "the target's feed stops updating"),
)
# Faults the market brings (simulator windows; real shocks): monitors expected to notice.
MARKET_FAULTS: dict[str, tuple[str, ...]] = {
    "correlation_break": ("correlation_break",),
    "regime_switch": ("regime_coverage", "accuracy", "coverage"),
}


def fault_by_name(name: str) -> Fault:
    for fault in FAULTS:
        if fault.name == name:
            return fault
    raise KeyError(f"unknown fault {name!r}; one of {[f.name for f in FAULTS]}")


# ---- planting --------------------------------------------------------------------------------


def plant_forecasts(
    series: pl.DataFrame, fault: Fault, start: dt.date, actual: pl.DataFrame | None = None
) -> pl.DataFrame:
    """`series` (date, price, forecast, zone columns) with `fault` applied to rows dated on or
    after `start`. "error_scale" needs `actual`: (date, actual) of each row's target."""
    zones = [c for c in ZONE_COLUMNS if c in series.columns]
    after = pl.col("date") >= start
    if fault.kind == "bias":
        factor = pl.lit(1.0 + fault.size)
        if fault.alternate:
            k = pl.int_range(pl.len()).cast(pl.Float64)
            sign = pl.when(k % 2 == 0).then(1.0).otherwise(-1.0)
            factor = 1.0 + sign * fault.size
        factor = pl.when(after).then(factor).otherwise(1.0)
        out = series.with_columns(_f=factor)
        return out.with_columns(
            (pl.col(c) * pl.col("_f")).alias(c) for c in ["forecast", *zones]
        ).drop("_f")
    if fault.kind == "error_scale":
        if actual is None:
            raise ValueError("plant_forecasts: an error_scale fault needs the actuals")
        out = series.join(
            actual.select("date", pl.col("actual").alias("_a")), on="date", how="left"
        )
        shift = (
            pl.when(after & pl.col("_a").is_not_null())
            .then((fault.size - 1.0) * (pl.col("forecast") - pl.col("_a")))
            .otherwise(0.0)
        )
        out = out.with_columns(_s=shift)
        return out.with_columns(
            (pl.col(c) + pl.col("_s")).alias(c) for c in ["forecast", *zones]
        ).drop("_s", "_a")
    if fault.kind == "zone_width":
        mid = pl.col("p50")
        return series.with_columns(
            pl.when(after).then(mid + fault.size * (pl.col(c) - mid)).otherwise(pl.col(c)).alias(c)
            for c in zones
        )
    raise ValueError(f"plant_forecasts: {fault.name} ({fault.kind}) is not a forecast fault")


def plant_feature(frame: pl.DataFrame, feature: str, sd: float, size: float, start: dt.date):
    """`frame` with `feature` + size x sd on rows dated on or after `start`."""
    return frame.with_columns(
        pl.when(pl.col("date") >= start)
        .then(pl.col(feature) + size * sd)
        .otherwise(pl.col(feature))
        .alias(feature)
    )


# ---- the monitors, day by day ----------------------------------------------------------------


def history_from_series(series: pl.DataFrame, calendar: Sequence[dt.date], h_days: int):
    """The forecast history the daily run would have stored: as_of = date, target_date = the
    trading day h_days later on `calendar` (rows without one are dropped), role served."""
    cal = np.array(calendar, dtype="datetime64[D]")
    dates = series["date"].to_numpy().astype("datetime64[D]")
    idx = np.searchsorted(cal, dates) + h_days
    ok = idx < cal.size
    target = np.where(ok, cal[np.minimum(idx, cal.size - 1)], np.datetime64("NaT"))
    return (
        series.with_columns(pl.Series("target_date", target).cast(pl.Date))
        .filter(pl.lit(ok))
        .rename({"date": "as_of"})
        .with_columns(role=pl.lit("served"), horizon=pl.col("horizon").cast(pl.Utf8))
    )


def _state_by_day(days: np.ndarray, when: pl.Series, firing: pl.Series) -> np.ndarray:
    """The state on each of `days`: that of the last judgement dated on or before it."""
    if when.len() == 0:
        return np.zeros(days.size, dtype=bool)
    at = when.cast(pl.Date).to_numpy().astype("datetime64[D]")
    idx = np.searchsorted(at, days, side="right") - 1
    states = firing.fill_null(False).to_numpy().astype(bool)
    return np.where(idx >= 0, states[np.maximum(idx, 0)], False)


def outcome_frames(
    series: pl.DataFrame,
    closes: pl.DataFrame,
    calendar: Sequence[dt.date],
    h_days: int,
    achieved: float,
    settings: ValidationSettings,
) -> dict[str, pl.DataFrame]:
    """The daily run's statistic series of one horizon's served `series`: "accuracy"
    (`accuracy_series`), "coverage" (`coverage_series`) and "regime_coverage"
    (`regime_coverage_series`), each with its `judged` flags and its `firing` state under
    `settings`; `outcome_states` can replay them under other levels."""
    horizon = series["horizon"][0]
    history = history_from_series(series, calendar, h_days)
    scored = validation.score_matured(history, closes, role=None)
    return {
        "accuracy": validation.accuracy_series(scored, settings),
        "coverage": validation.coverage_series(scored, {horizon: achieved}, settings),
        "regime_coverage": validation.regime_coverage_series(scored, {horizon: achieved}, settings),
    }


def outcome_states(
    frames: Mapping[str, pl.DataFrame],
    regime_by_day: Mapping[dt.date, str | None],
    days: np.ndarray,
    rules: Mapping[str, Hysteresis] | None = None,
) -> dict[str, np.ndarray]:
    """Each outcome monitor's state on each of `days` (the state of its last judgement on or
    before the day). `rules` replays a monitor's statistic under other hysteresis levels
    (None: the `firing` column as the daily run computed it). regime_coverage is open on a day
    when the regime current that day has an open episode."""
    rules = rules or {}

    def replay(frame: pl.DataFrame, statistic: str, rule: Hysteresis | None) -> pl.Series:
        if rule is None:
            return frame["firing"]
        values = np.where(
            frame["judged"].fill_null(False).to_numpy(),
            frame[statistic].cast(pl.Float64).fill_null(np.nan).to_numpy(),
            np.nan,
        )
        return pl.Series(states(values, rule), dtype=pl.Boolean)

    acc, cov = frames["accuracy"], frames["coverage"]
    out = {
        "accuracy": _state_by_day(
            days, acc["target_date"], replay(acc, "statistic", rules.get("accuracy"))
        ),
        "coverage": _state_by_day(
            days, cov["target_date"], replay(cov, "coverage90", rules.get("coverage"))
        ),
    }
    state = np.zeros(days.size, dtype=bool)
    current = np.array([regime_by_day.get(d.item()) for d in days], dtype=object)
    for regime, part in frames["regime_coverage"].group_by("regime"):
        part = part.sort("target_date")
        firing = replay(part, "coverage90", rules.get("regime_coverage"))
        state |= _state_by_day(days, part["target_date"], firing) & (current == regime[0])
    out["regime_coverage"] = state
    return out


# ---- scoring --------------------------------------------------------------------------------


@dataclass
class Trial:
    """One monitor's states over one trial: business `days`, the boolean `state` on each, and
    the index of the fault's start and of the first day the monitor could see it (None: a
    fault-free run)."""

    monitor: str
    fault: str | None
    days: np.ndarray
    state: np.ndarray
    start: int | None = None
    observable: int | None = None
    excluded: np.ndarray | None = None  # days inside an inherent fault window
    period: str = "development"
    meta: dict[str, Any] = field(default_factory=dict)


def hold_min_episode(state: np.ndarray, min_days: int) -> np.ndarray:
    """A drift state with the daily run's hysteresis (`drift.hold_episodes`): once open, an
    episode stays open for at least `min_days` judgement days, each held day counting towards
    the streak as the condition log records it. One entry per judgement day."""
    raw = np.asarray(state, dtype=bool)
    out = np.zeros(raw.size, dtype=bool)
    streak = 0
    for i, firing in enumerate(raw):
        if firing or 0 < streak < min_days:
            out[i] = True
            streak += 1
        else:
            streak = 0
    return out


def opened(state: np.ndarray) -> np.ndarray:
    """Indices of the days an episode opens (closed the day before, open on the day)."""
    prev = np.concatenate([[False], state[:-1]])
    return np.flatnonzero(state & ~prev)


def false_alarms(trial: Trial) -> tuple[int, int]:
    """(episodes opened on judged fault-free days, fault-free days): outside every window."""
    free = np.ones(trial.days.size, dtype=bool)
    if trial.excluded is not None:
        free &= ~trial.excluded
    if trial.start is not None:
        free[trial.start :] = False
    starts = [i for i in opened(trial.state) if free[i]]
    return len(starts), int(free.sum())


def detection(trial: Trial, within: int) -> tuple[bool, int | None, int | None]:
    """(detected, delay from the observable day, delay from the start), business days: the
    first episode opening on or after the start, no later than `within` days after the
    observable day."""
    assert trial.start is not None and trial.observable is not None
    for i in opened(trial.state):
        if i < trial.start:
            continue
        if i - trial.observable > within:
            break
        return True, max(0, int(i - trial.observable)), int(i - trial.start)
    return False, None, None


def summarise(trials: Sequence[Trial], within: int) -> pl.DataFrame:
    """Per (period, fault, monitor): trials, detection rate, median and 90th-percentile delay
    (from the observable day and from the start); fault None rows: false alarms per 100
    business days."""
    rows = []
    groups: dict[tuple, list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.period, t.fault, t.monitor), []).append(t)
    for (period, fault, monitor), group in groups.items():
        if fault is None:
            alarms = days = 0
            for t in group:
                a, d = false_alarms(t)
                alarms += a
                days += d
            rows.append(
                {
                    "period": period,
                    "fault": "none",
                    "monitor": monitor,
                    "trials": len(group),
                    "days": days,
                    "false_alarms": alarms,
                    "per_100_days": 100.0 * alarms / days if days else None,
                }
            )
            continue
        found = [detection(t, within) for t in group]
        delays = [d for ok, d, _ in found if ok]
        from_start = [d for ok, _, d in found if ok]
        rows.append(
            {
                "period": period,
                "fault": fault,
                "monitor": monitor,
                "trials": len(group),
                "detected": sum(ok for ok, _, _ in found),
                "rate": sum(ok for ok, _, _ in found) / len(group),
                "median_delay": float(np.median(delays)) if delays else None,
                "p90_delay": float(np.percentile(delays, 90)) if delays else None,
                "median_from_start": float(np.median(from_start)) if from_start else None,
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None)


def business_day_index(days: np.ndarray, day: dt.date) -> int:
    return int(np.searchsorted(days, np.datetime64(day, "D")))


def window_mask(days: np.ndarray, windows: Sequence[tuple[dt.date, dt.date]]) -> np.ndarray:
    mask = np.zeros(days.size, dtype=bool)
    for start, end in windows:
        mask |= (days >= np.datetime64(start, "D")) & (days <= np.datetime64(end, "D"))
    return mask


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def monitor_names(horizons: Sequence[str]) -> list[str]:
    return [f"{m}/{h}" for h in horizons for m in OUTCOME_MONITORS] + list(INPUT_MONITORS)


def expected_monitors(fault: str, horizons: Sequence[str]) -> list[str]:
    """The monitor names a fault (planted or a market fault) is expected to be caught by."""
    prefixes = MARKET_FAULTS.get(fault) or fault_by_name(fault).expected
    return [m for m in monitor_names(horizons) if m.split("/")[0] in prefixes]


__all__ = [
    "FAULTS",
    "Fault",
    "MARKET_FAULTS",
    "Trial",
    "detection",
    "false_alarms",
    "outcome_states",
    "plant_feature",
    "plant_forecasts",
    "summarise",
]
