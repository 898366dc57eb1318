"""Correlation-break monitor: rolling correlation, point-in-time bands, the simulator's documented
breaks, false alarms outside them, and the real shared data."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cbi_platform.conditions import CORRELATION_BREAK
from cbi_platform.market.simulator import SimulatorConfig, simulate_market
from cbi_platform.operations.correlation import (
    BREAK_COLUMNS,
    PAIRS,
    CorrelationSettings,
    aligned_returns,
    break_episodes,
    correlation_breaks,
    correlation_conditions,
    monitor_correlations,
    rolling_correlation,
)
from cbi_platform_tests.conftest import SHARED_DATA, SHARED_MANIFEST

PALM_WINDOW = (dt.date(2022, 5, 1), dt.date(2022, 11, 30))  # simulator: soy_palm_break
CRUDE_WINDOW = (dt.date(2014, 7, 1), dt.date(2015, 12, 31))  # simulator: soy_crude_break
QUIET = (dt.date(2002, 1, 1), dt.date(2013, 12, 31))  # no correlation change simulated
SIM_END = dt.date(2022, 12, 31)  # a shorter run is a prefix of the default one


def _long(symbol: str, dates: list[dt.date], values: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"symbol": symbol, "date": dates, "value": values})


def _business_days(n: int, start: dt.date = dt.date(2020, 1, 1)) -> list[dt.date]:
    days = pl.date_range(start, start + dt.timedelta(days=2 * n), eager=True)
    return days.filter(days.dt.weekday() <= 5).head(n).to_list()


@pytest.fixture(scope="module")
def sim_prices() -> pl.DataFrame:
    return simulate_market(SimulatorConfig(end=SIM_END)).prices


@pytest.fixture(scope="module")
def sim_results(sim_prices) -> dict:
    return monitor_correlations(sim_prices)


# ---------------------------------------------------------------- rolling correlation


def test_rolling_correlation_matches_numpy_on_aligned_log_returns():
    rng = np.random.default_rng(0)
    days = _business_days(80)
    x = rng.standard_normal(80) * 0.01
    y = 0.6 * x + rng.standard_normal(80) * 0.01
    a = 50 * np.exp(np.cumsum(x))
    b = 70 * np.exp(np.cumsum(y))
    prices = pl.concat([_long("A", days, a), _long("B", days, b)])
    out = rolling_correlation(prices, "A", "B", window=20)
    assert out.columns == ["date", "corr"]
    assert out.height == 79 - 19  # 79 returns, the first full window ends on return 20
    assert out["date"][0] == days[20]
    ra, rb = np.diff(np.log(a)), np.diff(np.log(b))
    expected = np.corrcoef(ra[-20:], rb[-20:])[0, 1]
    assert out["corr"][-1] == pytest.approx(expected, rel=1e-9)


def test_rolling_correlation_aligns_on_common_dates_and_drops_non_positive_prices():
    rng = np.random.default_rng(1)
    days = _business_days(60)
    a = 50 * np.exp(np.cumsum(rng.standard_normal(60) * 0.01))
    b = 70 * np.exp(np.cumsum(rng.standard_normal(60) * 0.01))
    b_holes = b.copy()
    b_holes[30] = -5.0  # a negative print (WTI 2020-04-20): no log, dropped
    prices = pl.concat(
        [_long("A", days, a), _long("B", days[:10] + days[11:], np.delete(b_holes, 10))]
    )
    out = rolling_correlation(prices, "A", "B", window=10)
    keep = [i for i in range(60) if i not in (10, 30)]  # B misses day 10, day 30 is negative
    ra, rb = np.diff(np.log(a[keep])), np.diff(np.log(b[keep]))
    assert out.height == len(keep) - 1 - 9
    assert out["date"].to_list() == [days[i] for i in keep[10:]]
    assert out["corr"][-1] == pytest.approx(np.corrcoef(ra[-10:], rb[-10:])[0, 1])
    # the return after B's hole spans day 9 -> 11 in BOTH series, not 10 -> 11 in A only
    rets = aligned_returns(prices, "A", "B").filter(pl.col("date") == days[11]).row(0)
    assert rets[1] == pytest.approx(np.log(a[11] / a[9]))
    assert rets[2] == pytest.approx(np.log(b[11] / b[9]))


# ---------------------------------------------------------------- bands and runs


def test_correlation_breaks_band_uses_only_earlier_values():
    rng = np.random.default_rng(2)
    days = _business_days(200)
    corr = rng.uniform(0.2, 0.6, 200)
    corr[150:170] = -0.2 - 0.01 * np.arange(20)  # a sustained break, new lows each day
    settings = CorrelationSettings(min_history=100, consecutive_days=10)
    out = correlation_breaks(pl.DataFrame({"date": days, "corr": corr}), settings)
    assert out.columns == list(BREAK_COLUMNS)
    assert out["band_lo"][:100].is_null().all() and out["band_lo"][100] is not None
    for t in (100, 149, 160, 199):
        assert out["band_lo"][t] == pytest.approx(np.percentile(corr[:t], 2.5))
        assert out["band_hi"][t] == pytest.approx(np.percentile(corr[:t], 97.5))
    assert out["outside"][150:170].all()
    assert out["run_length"][150:170].to_list() == list(range(1, 21))
    assert out["breaking"][150:170].to_list() == [False] * 9 + [True] * 11
    # hysteresis: back inside from day 170, it clears on the 10th inside day (179)
    assert break_episodes(out) == [(days[159], days[178])]
    assert not out["breaking"][:150].any() and not out["breaking"][179:].any()


def test_a_break_that_blinks_back_inside_stays_one_episode():
    rng = np.random.default_rng(4)
    days = _business_days(220)
    corr = rng.uniform(0.2, 0.6, 220)
    corr[150:165] = -0.2 - 0.01 * np.arange(15)  # a break (new lows each day) ...
    corr[165:168] = 0.4  # ... whose correlation is back inside for three days ...
    corr[168:185] = -0.4 - 0.01 * np.arange(17)  # ... and out again
    frame = pl.DataFrame({"date": days, "corr": corr})
    held = correlation_breaks(frame, CorrelationSettings(min_history=100, clear_days=10))
    flapping = correlation_breaks(frame, CorrelationSettings(min_history=100, clear_days=1))
    assert break_episodes(held) == [(days[159], days[193])]
    assert len(break_episodes(flapping)) == 2


def test_correlation_breaks_handle_nulls_and_short_history():
    days = _business_days(30)
    corr = [None] * 5 + [0.5] * 25
    out = correlation_breaks(
        pl.DataFrame({"date": days, "corr": corr}, schema={"date": pl.Date, "corr": pl.Float64}),
        CorrelationSettings(min_history=100),
    )
    assert out["band_lo"].is_null().all() and not out["outside"].any()
    assert break_episodes(out) == []


def test_band_and_breaks_are_point_in_time_for_every_cut():
    rng = np.random.default_rng(3)
    days = _business_days(160)
    corr = np.clip(np.cumsum(rng.standard_normal(160)) * 0.05 + 0.3, -1, 1)
    frame = pl.DataFrame({"date": days, "corr": corr})
    settings = CorrelationSettings(min_history=40, consecutive_days=3)
    full = correlation_breaks(frame, settings)
    assert full["breaking"].any()  # the check below compares something that moves
    for cut in range(1, 160):
        part = correlation_breaks(frame.head(cut), settings)
        assert part.equals(full.head(cut)), f"row changed when data after {days[cut - 1]} is cut"


def test_monitor_is_point_in_time_on_the_simulator(sim_prices, sim_results):
    settings = CorrelationSettings()
    for cut in (dt.date(2014, 9, 30), dt.date(2015, 6, 30), dt.date(2022, 6, 15)):
        truncated = monitor_correlations(sim_prices.filter(pl.col("date") <= cut), "ZL", settings)
        for pair, res in truncated.items():
            full = sim_results[pair].frame.filter(pl.col("date") <= cut)
            assert res.frame.equals(full), (pair, cut)
    # as_of filters by date and publication in the same way
    as_of = monitor_correlations(sim_prices, as_of=dt.date(2015, 6, 30))
    assert as_of["soy_crude"].frame["date"].max() <= dt.date(2015, 6, 30)


# ---------------------------------------------------------------- simulator


def _first_breaking(frame: pl.DataFrame, window: tuple[dt.date, dt.date]) -> dt.date | None:
    inside = frame.filter(pl.col("date").is_between(*window) & pl.col("breaking"))
    return inside["date"].min()


def _false_alarm_share(frame: pl.DataFrame) -> float:
    return float(frame.filter(pl.col("date").is_between(*QUIET))["breaking"].mean())


def test_simulated_soy_palm_break_trips_early_inside_its_window(sim_results):
    res = sim_results["soy_palm"]
    assert res.partner == "PALM" and not res.skipped
    frame = res.frame
    first = _first_breaking(frame, PALM_WINDOW)
    share = frame.filter(pl.col("date").is_between(*PALM_WINDOW))["breaking"].mean()
    episodes = [e for e in break_episodes(frame) if e[1] >= PALM_WINDOW[0]]
    print(f"soy_palm: first breaking day in window {first}, share of window breaking {share:.2f}")
    print(f"soy_palm: episodes from the window on {episodes}")
    # default seed: declared 2022-04-19 on a chance pre-window dip of the realized correlation
    # and kept breaking into the window (first in-window day 2022-05-02, 79% of window days)
    assert first is not None and first <= dt.date(2022, 8, 31)
    assert share >= 0.5
    assert episodes[0][0] >= dt.date(2022, 4, 1)  # not a leftover from an older alarm


def test_simulated_soy_crude_break_trips_inside_its_window(sim_results):
    res = sim_results["soy_crude"]
    assert res.partner == "WTI" and not res.skipped
    frame = res.frame
    first = _first_breaking(frame, CRUDE_WINDOW)
    share = frame.filter(pl.col("date").is_between(*CRUDE_WINDOW))["breaking"].mean()
    print(f"soy_crude: first breaking day in window {first}, share of window breaking {share:.2f}")
    # default seed: 2014-08-08 (the weaker break: ~0.35 -> ~0), 28% of window days
    assert first is not None and first <= dt.date(2014, 12, 31)
    assert not frame.filter(pl.col("date").is_between(dt.date(2014, 6, 1), dt.date(2014, 6, 30)))[
        "breaking"
    ].any()  # not breaking just before it starts
    assert share >= 0.15


def test_false_alarms_outside_the_documented_windows_are_rare(sim_results):
    for pair, res in sim_results.items():
        share = _false_alarm_share(res.frame)
        n_eps = len([e for e in break_episodes(res.frame) if QUIET[0] <= e[0] <= QUIET[1]])
        print(f"{pair}: breaking share 2002-2013 {share:.3f}, {n_eps} episodes")
        # default seed, with 10 clear days of hysteresis: soy_palm 0.047 (5 episodes),
        # soy_crude 0.036 (7 episodes); what an engineer reads is the episodes
        assert 0.0 < share < 0.06  # some noise trips it (not blind), but rarely
        assert 1 <= n_eps <= 8


def test_other_seeds_detect_both_breaks_after_they_start():
    # the default seed's palm alarm began just before the window; other seeds show the delay
    for seed in (1, 2, 3):
        prices = simulate_market(SimulatorConfig(seed=seed, end=SIM_END)).prices
        results = monitor_correlations(prices)
        for pair, window, latest in (
            ("soy_palm", PALM_WINDOW, dt.date(2022, 8, 31)),
            ("soy_crude", CRUDE_WINDOW, dt.date(2014, 12, 31)),
        ):
            episodes = [e for e in break_episodes(results[pair].frame) if e[1] >= window[0]]
            assert episodes and window[0] <= episodes[0][0] <= latest, (seed, pair, episodes)


# ---------------------------------------------------------------- pairs and conditions


def test_missing_partner_is_skipped_with_a_reason_and_the_next_candidate_is_used(sim_prices):
    no_palm_no_wti = sim_prices.filter(~pl.col("symbol").is_in(["PALM", "WTI"]))
    results = monitor_correlations(no_palm_no_wti)
    assert set(results) == set(PAIRS)
    assert results["soy_palm"].skipped and "PALM" in results["soy_palm"].reason
    assert results["soy_crude"].partner == "BRENT" and not results["soy_crude"].skipped
    conditions = correlation_conditions(results, dt.date(2022, 12, 30))
    assert [c.key for c in conditions] == ["correlation_break/soy_crude"]

    no_target = monitor_correlations(sim_prices, target="XX")
    assert all(r.skipped and "XX" in r.reason for r in no_target.values())


def test_correlation_conditions_fire_inside_a_break_and_carry_evidence(sim_prices):
    as_of = dt.date(2022, 7, 15)
    results = monitor_correlations(sim_prices, as_of=as_of)
    conditions = {c.key: c for c in correlation_conditions(results, as_of, link="run-1")}
    assert set(conditions) == {"correlation_break/soy_palm", "correlation_break/soy_crude"}
    palm = conditions["correlation_break/soy_palm"]
    assert palm.kind == CORRELATION_BREAK and palm.horizon is None and palm.link == "run-1"
    assert palm.firing is True and palm.as_of == as_of
    ev = palm.evidence
    assert ev["partner"] == "PALM" and ev["direction"] == "below"
    assert ev["corr"] < ev["band_lo"] < ev["band_hi"]
    assert ev["run_length"] >= CorrelationSettings().consecutive_days
    run_start = dt.date.fromisoformat(ev["run_start"])
    assert np.busday_count(run_start, dt.date.fromisoformat(ev["date"])) + 1 == ev["run_length"]
    assert conditions["correlation_break/soy_crude"].firing is False
    json.dumps(ev)

    quiet = dt.date(2013, 6, 28)
    calm = correlation_conditions(monitor_correlations(sim_prices, as_of=quiet), quiet)
    assert [c.firing for c in calm] == [False, False]
    assert all(c.evidence["run_start"] is None or c.evidence["run_length"] > 0 for c in calm)


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_bundle():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    from cbi_platform.market.files import load_files_source

    return load_files_source(Path(SHARED_MANIFEST))


def test_real_data_soy_crude_runs_and_soy_palm_is_skipped(real_bundle):
    results = monitor_correlations(
        real_bundle.prices, target=real_bundle.target, as_of=real_bundle.as_of
    )
    palm = results["soy_palm"]
    assert palm.skipped and "PALM" in palm.reason and "PALM_M" in palm.reason
    crude = results["soy_crude"]
    assert not crude.skipped and crude.partner == "WTI"
    frame = crude.frame
    # WTI of day d is published on d+1: at as_of 2024-06-21 the last common day is 06-20
    assert frame["date"].max() < real_bundle.as_of
    assert frame["band_lo"].drop_nulls().len() > 3000
    episodes = break_episodes(frame)
    print("real soy_crude episodes:", [(a.isoformat(), b.isoformat()) for a, b in episodes])
    share = float(frame.filter(pl.col("band_lo").is_not_null())["breaking"].mean())
    print(f"real soy_crude breaking share {share:.3f}")
    # 2007-2008: unusually high ZL-WTI correlation (commodity boom), 2013, 2017: low
    assert episodes and 0.0 < share < 0.10
    conditions = correlation_conditions(results, real_bundle.as_of)
    assert [c.key for c in conditions] == ["correlation_break/soy_crude"]
    json.dumps(conditions[0].evidence)
