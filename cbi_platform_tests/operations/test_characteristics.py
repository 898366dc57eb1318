"""Planted faults and the monitors that must catch them (issue 20): each fault is planted into a
synthetic served series whose forecasts are honest (a random walk with its true zones), and its
expected monitor must fire within the fault's stated delay, at the frozen settings of
monitoring.yaml. The false-alarm side is checked on the same series without a fault."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from cbi_platform.operations import characteristics as oc
from cbi_platform.operations import drift
from cbi_platform.operations.config import load_monitoring
from cbi_platform.operations.daily import stale_condition

CONFIG = load_monitoring()
H_DAYS = 5
DAILY_SD = 0.015
Z = {"p10": -1.2816, "p30": -0.5244, "p50": 0.0, "p70": 0.5244, "p90": 1.2816}


def _world(seed: int, n: int = 700):
    """Closes of a random walk and its honest 1w served series: forecast = today's close,
    zones = the true h-day quantiles."""
    rng = np.random.default_rng(seed)
    days = np.busday_offset(np.datetime64("2021-01-04"), np.arange(n), roll="forward")
    price = 50.0 * np.exp(np.cumsum(rng.normal(0.0, DAILY_SD, n)))
    closes = pl.DataFrame({"date": days.astype("datetime64[D]").tolist(), "value": price})
    width = DAILY_SD * np.sqrt(H_DAYS)
    series = pl.DataFrame(
        {
            "date": closes["date"],
            "horizon": ["1w"] * n,
            "price": price,
            "forecast": price,
            **{q: price * np.exp(z * width) for q, z in Z.items()},
            "lo90": price * np.exp(-1.6449 * width),
            "hi90": price * np.exp(1.6449 * width),
            "regime": ["normal"] * n,
        }
    )
    return closes, series


def _detect(fault_name: str, seed: int, start: int = 450):
    """The first day an expected outcome monitor opens, counted from the observable day, or
    None."""
    fault = oc.fault_by_name(fault_name)
    closes, series = _world(seed)
    calendar = closes["date"].to_list()
    start_day = calendar[start]
    actual = oc.history_from_series(series, calendar, H_DAYS).select(
        pl.col("as_of").alias("date"),
        pl.col("target_date"),
    )
    actual = actual.join(
        closes.rename({"date": "target_date", "value": "actual"}), on="target_date"
    ).drop("target_date")
    planted = oc.plant_forecasts(series, fault, start_day, actual)
    frames = oc.outcome_frames(planted, closes, calendar, H_DAYS, 0.90, CONFIG.validation)
    days = np.array(calendar, dtype="datetime64[D]")
    states = oc.outcome_states(frames, {d: "normal" for d in calendar}, days)
    observable = start + H_DAYS
    first = None
    for monitor in fault.expected:
        if monitor not in states:
            continue
        opened = [i for i in oc.opened(states[monitor]) if i >= start]
        if opened and (first is None or opened[0] - observable < first):
            first = max(0, opened[0] - observable)
    return first


@pytest.mark.parametrize(
    ("fault", "within", "share"),
    [
        ("bias +4%", 10, 0.9),
        ("bias -4%", 10, 0.9),
        ("bias ±4% alternating", 10, 0.9),
        ("errors x1.5", 20, 0.8),
        ("zones x0.6", 20, 0.8),
    ],
)
def test_each_forecast_fault_fires_its_monitor_within_the_stated_delay(fault, within, share):
    delays = [_detect(fault, seed) for seed in range(10)]
    caught = [d for d in delays if d is not None and d <= within]
    assert len(caught) >= share * len(delays), (fault, delays)


def test_an_honest_series_stays_near_the_false_alarm_budget():
    """The same honest series without a fault: alerts per 100 business days per monitor. The
    budget the levels were chosen for is 0.8; 10 x 700 days of one synthetic market allow some
    sampling slack (measured: accuracy 0, coverage 0.6, regime coverage 0.1)."""
    alarms: dict[str, int] = {}
    n_days = 0
    for seed in range(10):
        closes, series = _world(seed)
        calendar = closes["date"].to_list()
        frames = oc.outcome_frames(series, closes, calendar, H_DAYS, 0.90, CONFIG.validation)
        days = np.array(calendar, dtype="datetime64[D]")
        states = oc.outcome_states(frames, {d: "normal" for d in calendar}, days)
        for monitor, state in states.items():
            alarms[monitor] = alarms.get(monitor, 0) + len(oc.opened(state))
        n_days += days.size
    per_100 = {m: 100 * a / n_days for m, a in alarms.items()}
    assert per_100["accuracy"] <= 0.3 and per_100["coverage"] <= 1.2, per_100
    assert per_100["regime_coverage"] <= 0.8, per_100


def test_planting_changes_only_the_days_from_the_start():
    closes, series = _world(1, n=60)
    start = closes["date"][30]
    biased = oc.plant_forecasts(series, oc.fault_by_name("bias +2%"), start)
    ratio = (biased["forecast"] / series["forecast"]).to_numpy()
    assert np.allclose(ratio[:30], 1.0) and np.allclose(ratio[30:], 1.02)
    assert np.allclose((biased["lo90"] / series["lo90"]).to_numpy()[30:], 1.02)
    narrow = oc.plant_forecasts(series, oc.fault_by_name("zones x0.6"), start)
    width = (narrow["hi90"] - narrow["lo90"]) / (series["hi90"] - series["lo90"])
    assert np.allclose(width.to_numpy()[:30], 1.0) and np.allclose(width.to_numpy()[30:], 0.6)
    alternating = oc.plant_forecasts(series, oc.fault_by_name("bias ±4% alternating"), start)
    ratio = (alternating["forecast"] / series["forecast"]).to_numpy()[30:34]
    assert sorted(set(np.round(ratio, 6))) == [0.96, 1.04]


def test_a_stale_feed_fires_on_the_third_business_day():
    closes, _ = _world(2, n=40)
    stop = closes["date"][20]
    truncated = closes.filter(pl.col("date") < stop)
    days = closes["date"].to_list()[20:30]
    firing = [stale_condition(truncated, d, 2).firing for d in days]
    # last close the day before `stop`: behind 1, 2 business days do not fire, 3 does
    assert firing[:2] == [False, False] and all(firing[2:])


def test_one_feature_shifted_by_two_sd_fires_drift_within_days():
    settings = CONFIG.drift
    assert settings.single_feature_factor is not None
    hits, alarms = 0, 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        n_ref, n_cur = settings.reference_rows, 40
        names = [f"f_{k}" for k in range(12)]
        data = {k: rng.normal(0.0, 1.0, n_ref + n_cur) for k in names}
        frame = pl.DataFrame({"date": np.arange(n_ref + n_cur), **data})
        reference, current = frame.head(n_ref), frame.tail(n_cur)
        table = drift.feature_drift(reference, current.head(20), names, settings)
        (clean,) = drift.drift_conditions("1w", dt.date(2024, 1, 2), table, None, None, settings)
        alarms += clean.firing
        shifted = current.with_columns(pl.col("f_3") + 2.0)
        table = drift.feature_drift(reference, shifted.head(20), names, settings)
        (fault,) = drift.drift_conditions("1w", dt.date(2024, 1, 2), table, None, None, settings)
        hits += fault.firing and "f_3" in fault.evidence["features"]["extreme"]
    assert hits >= 9 and alarms <= 1, (hits, alarms)


def test_false_alarms_count_episode_starts_outside_fault_windows_and_detection_its_delay():
    days = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-31"))
    state = np.zeros(days.size, dtype=bool)
    state[3:6] = True  # a false alarm on day 3
    state[12:14] = True  # inside the excluded window: not counted
    state[20:25] = True  # after the fault starts (day 18): a detection
    excluded = oc.window_mask(days, [(dt.date(2024, 1, 11), dt.date(2024, 1, 15))])
    trial = oc.Trial(
        "accuracy/1w", "bias +4%", days, state, start=18, observable=19, excluded=excluded
    )
    assert oc.false_alarms(trial) == (1, 18 - int(excluded[:18].sum()))
    assert oc.detection(trial, within=10) == (True, 1, 2)
    assert oc.detection(trial, within=0) == (False, None, None)
    # an episode already open when the fault starts is not a detection
    open_before = state.copy()
    open_before[15:25] = True
    late = oc.Trial("accuracy/1w", "bias +4%", days, open_before, start=18, observable=19)
    assert oc.detection(late, within=10) == (False, None, None)


@pytest.mark.parametrize("seed", range(5))
def test_the_benchmarks_drift_hold_equals_the_daily_runs(seed):
    """monitors.py holds a drift state open `min_episode_days` with `hold_min_episode`; on any
    raw verdict sequence that must equal what the daily run's `drift.hold_episodes` does with
    its condition log, day by day."""
    from cbi_platform.conditions import DRIFT, Condition

    rng = np.random.default_rng(seed)
    raw = rng.random(60) < 0.3
    settings = drift.DriftSettings(min_episode_days=5)
    schema = {"key": pl.Utf8, "as_of": pl.Date, "seq": pl.Int64, "firing": pl.Boolean}
    log: list[dict] = []
    daily = []
    for k, firing in enumerate(raw):
        day = dt.date(2022, 1, 3) + dt.timedelta(days=k)
        c = Condition("drift/1w", DRIFT, bool(firing), "Drift (1w): x", day, "1w", {"fired": []})
        (held,) = drift.hold_episodes([c], pl.DataFrame(log, schema=schema), settings)
        daily.append(held.firing)
        log.append({"key": held.key, "as_of": day, "seq": k, "firing": held.firing})
    bench = oc.hold_min_episode(raw, settings.min_episode_days)
    assert bench.tolist() == daily
    assert bench.sum() > raw.sum()  # the hold did something on this sequence
    assert (oc.opened(bench).size) <= oc.opened(raw).size
