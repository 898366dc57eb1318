"""The backtest engine: programme invariants, no look-ahead (two layers), statistics over
windows, parameter choice on development windows only, decision quality after deployment."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbi_platform.procurement.backtest import (
    BENCHMARK,
    ForecastBook,
    SelectionRule,
    block_length,
    checked_decide,
    choose_parameters,
    context_for_day,
    decision_quality,
    latest_usable,
    lookahead_alarm,
    moving_block_bootstrap,
    newey_west_test,
    perfect_foresight_bound,
    protocol_windows,
    run_backtest,
    savings_by_regime,
    savings_statistics,
)
from cbi_platform.procurement.contract import LookAheadError
from cbi_platform.procurement.policies import Decision, ExpectedCost
from cbi_platform.procurement.programme import (
    BuyingWindow,
    Programme,
    buying_windows,
    effective_cost,
    load_config,
)
from cbi_platform_tests.procurement.conftest import (
    dist_row,
    forecast_frame,
    make_context,
    make_prices,
    splice,
)

PROGRAMME = Programme()
GREEDY = {"name": "greedy", "kind": "expected_cost", "params": {"margin": 0.0}}
PROFITEER = {"name": "profiteer", "kind": "expected_cost", "params": {"margin": 0.5}}


@pytest.fixture(scope="module")
def windows(prices):
    return buying_windows(prices["date"].to_list(), 21, 21, start=prices["date"][300])


@pytest.fixture(scope="module")
def honest(prices, rw_forecasts, windows):
    return run_backtest(rw_forecasts, prices, PROGRAMME, load_config().policies + [GREEDY], windows)


# ---- programme and windows --------------------------------------------------------------


def test_windows_and_costs():
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(10)]
    ws = buying_windows(days, 4, 3)
    assert [(w.first.day, w.last.day) for w in ws] == [(1, 4), (4, 7), (7, 10)]
    assert buying_windows(days, 4, 3, start=days[1], end=days[8]) == [
        BuyingWindow(days[1], days[4]),
        BuyingWindow(days[4], days[7]),
    ]
    carry = PROGRAMME.carry(np.array([20, 0]))
    assert carry == pytest.approx([0.25 * 20 / 21, 0.0])
    assert effective_cost(np.array([1.0, 3.0]), np.array([40.0, 44.0]), carry) == pytest.approx(
        (40 + 0.25 * 20 / 21 + 3 * 44) / 4
    )
    assert PROGRAMME.dollars(1.0) == pytest.approx(18_000.0)  # 1 c/lb on 1.8 million lb


# ---- engine invariants ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Chaotic:
    """Asks for anything: negative, NaN, infinite, more than remains (pure in the day)."""

    seed: int
    name: str = "chaotic"
    kind = "chaotic"

    def decide(self, ctx):
        rng = np.random.default_rng([self.seed, ctx.day.toordinal()])
        choice = rng.integers(0, 6)
        ask = [-5e5, math.nan, math.inf, 0.0, rng.uniform() * ctx.remaining_lb, 3 * ctx.total_lb]
        return Decision(float(ask[choice]), "split", "chaos")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1000),
    window_days=st.integers(1, 15),
    step=st.integers(1, 15),
    floor=st.sampled_from([0.0, 0.02, 0.3]),
    ceiling=st.sampled_from([None, 44.0, 46.0]),
)
def test_engine_always_buys_exactly_the_programme_inside_the_window(
    seed, window_days, step, floor, ceiling
):
    prices = make_prices(n=60, seed=seed)
    forecasts = forecast_frame(prices)
    programme = Programme(min_daily_fraction=floor, price_ceiling=ceiling)
    ws = buying_windows(prices["date"].to_list(), window_days, step, start=prices["date"][25])
    policies = [Chaotic(seed), *load_config().policies]
    result = run_backtest(forecasts, prices, programme, policies, ws)
    sched = result.schedules
    assert sched["buy_lb"].min() >= 0
    invalid = sched.filter(pl.col("requested_lb").is_nan() | (pl.col("requested_lb") < 0))
    # Every fix is on record; with 30+ chaotic days, (2/3)^30 < 1e-5 of none being invalid.
    assert (invalid["engine_note"] != "").all()
    asked = sched.filter(pl.col("policy") == "chaotic").height
    assert invalid.height or asked < 30
    total = programme.total_lb
    for w in ws:
        for name in result.policies:
            s = sched.filter((pl.col("window_start") == w.first) & (pl.col("policy") == name))
            assert s["day"].min() == w.first and s["day"].max() == w.last  # nothing after
            assert s["buy_lb"].sum() == pytest.approx(total, rel=1e-12)
            assert s["remaining_lb"][-1] == pytest.approx(0.0, abs=1e-6)
            before_last = s.head(s.height - 1)
            if ceiling is not None:
                assert before_last.filter(pl.col("price") > ceiling)["buy_lb"].sum() == 0
            remaining_before = np.concatenate([[total], s["remaining_lb"].to_numpy()[:-1]])
            floor_lb = np.minimum(remaining_before, floor * total)[:-1]
            allowed = before_last["price"].to_numpy() <= (ceiling or math.inf)
            assert np.all(before_last["buy_lb"].to_numpy()[allowed] >= floor_lb[allowed] - 1e-6)


def test_perfect_foresight_is_the_cheapest_day_with_its_carry(honest):
    # the lowest price is day 0, but its carry makes day 2 the cheapest
    day, cost = perfect_foresight_bound(np.array([45.0, 45.1, 45.2]), np.array([0.5, 0.25, 0.0]))
    assert (day, cost) == (2, pytest.approx(45.2))
    sched = honest.schedules.filter(pl.col("policy") == BENCHMARK)
    cheapest = sched.group_by("window_start").agg((pl.col("price") + pl.col("carry")).min())
    joined = honest.bounds.join(cheapest, on="window_start")
    assert (joined["pf_cost_cents"] - joined["price"]).abs().max() < 1e-12


def test_perfect_foresight_is_below_every_policy_in_every_window(honest):
    w = honest.windows
    assert (w["cost_cents"] >= w["pf_cost_cents"] - 1e-9).all()
    assert (w["pf_savings_cents"] >= -1e-9).all()
    assert honest.bounds.height == len(honest.windows["window_start"].unique())
    assert w.filter(pl.col("policy") == BENCHMARK)["savings_cents"].abs().max() == 0


def test_front_load_buys_on_day_one_and_even_spreads(honest):
    sched = honest.schedules
    front = sched.filter(pl.col("policy") == "front_load")
    first_days = front.group_by("window_start").agg(pl.col("day").min())
    bought = front.join(first_days, on=["window_start", "day"])
    assert bought["buy_lb"].sum() == pytest.approx(front["buy_lb"].sum())
    even = sched.filter(pl.col("policy") == "even")["buy_lb"]
    assert even.min() == pytest.approx(PROGRAMME.total_lb / 21)


# ---- no look-ahead, layer (a): rows not yet known never reach a policy ------------------


def test_the_book_gives_exactly_the_latest_usable_row(prices, rw_forecasts, stamped_forecasts):
    stamped = stamped_forecasts
    gappy = rw_forecasts.filter(pl.col("date").dt.weekday() != 3)  # stale rows on Wednesdays
    days = prices["date"].to_list()
    for frame in (stamped, gappy):
        book = ForecastBook(frame)
        for day in days[::97] + days[-3:]:
            expected = latest_usable(frame, day)
            got = book.rows_on(day)
            assert got.keys() == expected.keys()
            for hz in got:
                assert got[hz]["date"] == expected[hz]["date"]
                assert got[hz]["known_at"] <= day and got[hz]["date"] <= day


@dataclasses.dataclass(frozen=True)
class Spy:
    """Records what it is handed (a test probe, not a policy) and buys at the even pace."""

    seen: list
    name: str = "spy"
    kind = "spy"

    def decide(self, ctx):
        for row in ctx.forecasts.values():
            self.seen.append((ctx.day, row["date"], row["known_at"], row["horizon_days"]))
        return Decision(ctx.pace_lb, "split", "spy")


def test_honestly_stamped_future_prices_never_reach_a_policy(
    prices, rw_forecasts, lying_forecasts, stamped_forecasts, windows
):
    """A 'forecast' that is the realised future close, stamped known_at = its target day, is
    handed only once its target has passed, when it says nothing new: the policy that
    profits from it when the stamp lies gains nothing from it."""
    seen: list = []
    leak = run_backtest(stamped_forecasts, prices, PROGRAMME, [PROFITEER, Spy(seen)], windows)
    assert seen and all(known <= day and date <= day for day, date, known, _ in seen)
    position = {d: i for i, d in enumerate(prices["date"].to_list())}
    assert all(position[day] - position[date] >= h for day, date, _, h in seen)
    honest = run_backtest(rw_forecasts, prices, PROGRAMME, [PROFITEER], windows)
    cheat = run_backtest(lying_forecasts, prices, PROGRAMME, [PROFITEER], windows)

    def mean_savings(result):
        return result.policy_windows("profiteer")["savings_cents"].mean()

    assert mean_savings(cheat) > 0.25 + mean_savings(honest)  # the leak would pay, if it reached
    assert mean_savings(leak) <= mean_savings(honest) + 0.02  # it does not


def test_a_doctored_context_raises_naming_row_day_and_policy():
    day = dt.date(2020, 6, 1)
    future = dist_row(45.0, 48.0, sd=0.01, h=5, horizon="1w", day=day)
    future["known_at"] = day + dt.timedelta(days=7)
    ctx = make_context(forecasts={"1w": future}, day=day)
    with pytest.raises(LookAheadError, match=r"'greedy'.*2020-06-01.*1w.*2020-06-08"):
        checked_decide(ExpectedCost(name="greedy"), ctx)
    dated_later = {**future, "known_at": day, "date": day + dt.timedelta(days=1)}
    with pytest.raises(LookAheadError, match="2020-06-02"):
        checked_decide(ExpectedCost(name="greedy"), make_context(forecasts={"1w": dated_later}))
    fine = make_context(forecasts={"1w": {**future, "known_at": day}}, day=day)
    assert checked_decide(ExpectedCost(name="greedy"), fine).action == "buy"


def test_the_engine_checks_what_it_hands_out(prices, rw_forecasts, windows):
    """Were the book ever to hand out a future row, the run stops with LookAheadError."""

    class LeakyBook(ForecastBook):
        def rows_on(self, day):
            rows = dict(super().rows_on(day))
            rows["1w"] = {**rows["1w"], "known_at": day + dt.timedelta(days=1)}
            return rows

    with pytest.raises(LookAheadError, match="'even'"):
        run_backtest(LeakyBook(rw_forecasts), prices, PROGRAMME, [], windows[:2])


def test_context_for_day_reads_only_the_past(prices, stamped_forecasts):
    stamped = stamped_forecasts
    day = prices["date"][500]
    ctx = context_for_day(stamped, prices, PROGRAMME, day, 9e5, 10, prices["date"][509])
    assert ctx.closes.size == 501 and ctx.price == prices["price"][500]
    assert all(r["known_at"] <= day for r in ctx.forecasts.values())
    with pytest.raises(ValueError, match="no close"):
        context_for_day(stamped, prices, PROGRAMME, dt.date(2015, 1, 3), 1, 1, day)


# ---- no look-ahead, layer (b): a leak that lies about known_at is too good to be true ----


def test_the_alarm_stays_quiet_on_honest_forecasts(honest):
    alarm = lookahead_alarm(honest)
    assert not alarm.firing, alarm.message
    assert (honest.forecast_skill["rel_mae"] - 1.0).abs().max() < 1e-9  # random walk = itself
    alarm.raise_if_firing()


def test_a_lying_leak_trips_the_forecast_error_alarm(
    prices, windows, lying_forecasts, stamped_forecasts
):
    result = run_backtest(lying_forecasts, prices, PROGRAMME, [GREEDY], windows)
    alarm = lookahead_alarm(result)
    assert alarm.firing
    assert "1w forecasts' MAE is 0.00" in alarm.message
    with pytest.raises(LookAheadError, match="Look-ahead suspected"):
        alarm.raise_if_firing()
    # the same rows honestly stamped are no forecast at all: nothing to score, no alarm
    quiet = run_backtest(stamped_forecasts, prices, PROGRAMME, [GREEDY], windows)
    assert quiet.forecast_skill.height == 0 and not lookahead_alarm(quiet).firing


def test_a_lying_leak_trips_the_capture_alarm(prices, windows):
    """With every day of the window forecast exactly, the greedy policy buys on the cheapest
    day: it keeps all of the perfect-foresight savings."""
    daily = {f"{h}d": h for h in range(1, 21)}
    lying = forecast_frame(prices.head(900), "leak_lying", horizons=daily, with_cdf=False)
    some = [w for w in windows if w.last <= prices["date"][880]]
    assert len(some) >= 20
    result = run_backtest(lying, prices, PROGRAMME, [GREEDY], some)
    alarm = lookahead_alarm(result, relative_mae=0.0)  # the capture criterion alone
    assert alarm.firing and "keeps 100% of the perfect-foresight savings" in alarm.message
    assert not lookahead_alarm(result, relative_mae=0.0, min_windows=len(some) + 1).firing


# ---- statistics over windows ------------------------------------------------------------


def test_block_bootstrap_interval_covers_the_true_mean_most_of_the_time():
    rng = np.random.default_rng(3)
    covered, n, true_mean = 0, 60, 0.4
    reps = 150
    for r in range(reps):
        e = rng.standard_normal(n + 2)
        x = true_mean + (e[2:] + e[1:-1] + e[:-2]) / 3  # overlapping windows: MA(2)
        ci = moving_block_bootstrap(x, block=3, n_boot=1000, seed=r, confidence=0.9)
        covered += ci["low"] <= true_mean <= ci["high"]
    assert 0.78 <= covered / reps <= 0.97


def test_newey_west_p_value_is_large_for_zero_mean_noise_and_small_for_a_real_saving():
    rng = np.random.default_rng(11)
    ps = []
    for _ in range(300):
        e = rng.standard_normal(62)
        ps.append(newey_west_test((e[2:] + e[1:-1] + e[:-2]) / 3, lags=2)["p"])
    ps = np.array(ps)
    assert np.mean(ps < 0.05) < 0.15 and np.median(ps) > 0.3  # near 5%, a little over at n=60
    shifted = 0.8 + rng.standard_normal(60)
    assert newey_west_test(shifted, lags=0)["p"] < 0.001
    assert moving_block_bootstrap(shifted, 1, 2000, 0)["p"] < 0.01
    assert block_length(21, 21) == 1 and block_length(63, 21) == 3


def test_savings_statistics_and_regimes(honest, windows):
    stats = savings_statistics(honest, n_boot=500)
    row = stats.filter(pl.col("policy") == "front_load").row(0, named=True)
    s = honest.policy_windows("front_load")["savings_cents"].to_numpy()
    assert row["n_windows"] == len(windows)
    assert row["mean_savings_cents"] == pytest.approx(s.mean())
    assert row["ci_low_cents"] <= row["mean_savings_cents"] <= row["ci_high_cents"]
    assert row["mean_savings_dollars"] == pytest.approx(s.mean() * 18_000)
    assert row["worst_shortfall_cents"] == pytest.approx(-s.min())
    worst = honest.policy_windows("front_load").sort("savings_cents")["window_start"][0]
    assert row["worst_window_start"] == worst
    assert row["share_better"] == pytest.approx(np.mean(s > 0))
    assert 0 <= row["p_bootstrap"] <= 1 and 0 <= row["p_newey_west"] <= 1
    assert row["nw_lags"] == 0 and row["block_length"] == 1
    regimes = savings_by_regime(honest).filter(pl.col("policy") == "front_load")
    assert set(regimes["regime"]) <= {"normal", "bull", "bear", "crisis"}
    assert regimes["n_windows"].sum() == len(windows)
    weighted = (regimes["mean_savings_cents"] * regimes["n_windows"]).sum() / len(windows)
    assert weighted == pytest.approx(s.mean())


# ---- parameter choice on development windows only ---------------------------------------

GRID = {"expected_cost": {"margin": [5.0, 0.5, 0.0]}, "cvar": {"buy_fraction": [0.1, 0.5]}}


def test_choose_parameters_never_reads_the_scored_period(prices, rw_forecasts, lying_forecasts):
    boundary = prices["date"][700]
    lying = lying_forecasts
    with_rw = splice(rw_forecasts, rw_forecasts, boundary)
    with_leak = splice(rw_forecasts, lying, boundary)
    dev = protocol_windows(with_rw, prices, 21, 21, "development")
    scored = protocol_windows(with_rw, prices, 21, 21, "scored")
    assert dev and scored and max(w.last for w in dev) < boundary
    rule = SelectionRule(max_worst_shortfall_cents=100.0)
    a = choose_parameters(GRID, with_rw, prices, PROGRAMME, dev, rule)
    b = choose_parameters(GRID, with_leak, prices, PROGRAMME, dev, rule)
    assert a.chosen == b.chosen and a.table.equals(b.table)
    assert (a.table["n_windows"] == len(dev)).all()
    # ... though the scored rows would change the choice, were they allowed to
    on_scored = choose_parameters(
        GRID, with_leak.with_columns(window=pl.lit("development")), prices, PROGRAMME, scored, rule
    )
    assert on_scored.chosen["expected_cost"] != a.chosen["expected_cost"]
    with pytest.raises(ValueError, match="scored/live"):
        choose_parameters(GRID, with_leak, prices, PROGRAMME, scored, rule)


def test_choose_parameters_applies_the_pre_registered_rule(prices, rw_forecasts, windows):
    dev = windows[:20]
    loose = choose_parameters(GRID, rw_forecasts, prices, PROGRAMME, dev, SelectionRule(100.0))
    table = loose.table.filter(pl.col("kind") == "expected_cost")
    best = table.sort("mean_savings_cents", descending=True, maintain_order=True).row(0, named=True)
    assert loose.chosen["expected_cost"] == json.loads(best["params"])
    assert table["chosen"].sum() == 1
    # margins 5.0 and 0.5 both equal even buying here: the tie goes to the first in the grid
    ties = table.filter(pl.col("mean_savings_cents") == 0.0)
    assert ties.height >= 2
    strict = choose_parameters(GRID, rw_forecasts, prices, PROGRAMME, dev, SelectionRule(0.0))
    st_table = strict.table
    assert st_table.filter(pl.col("chosen"))["admissible"].all()
    assert (st_table.filter(pl.col("chosen"))["worst_shortfall_cents"] <= 0.0).all()
    assert strict.chosen["expected_cost"] == {"margin": 5.0}
    assert strict.chosen["cvar"] is None  # no candidate keeps every window within 0 c/lb


# ---- after deployment -------------------------------------------------------------------


def test_decision_quality_fires_and_clears_at_the_threshold():
    even = [45.0] * 6
    ours = [45.1, 45.9, 45.5, 45.5, 45.5, 45.5]  # last 3: 0.5 c/lb dearer than even
    q = decision_quality(ours, even, window=3, threshold=0.4)
    assert q["firing"] and q["n_windows"] == 3
    assert q["rolling_mean_shortfall_cents"] == pytest.approx(0.5)
    assert not decision_quality(ours, even, window=3, threshold=0.5)["firing"]
    assert not decision_quality(ours[:2], even[:2], window=3, threshold=0.0)["firing"]  # too few
    recovered = ours + [44.5, 44.5, 44.5]
    assert not decision_quality(recovered, even + [45.0] * 3, window=3, threshold=0.4)["firing"]
    incomplete = ours + [math.nan]
    assert decision_quality(incomplete, even + [45.0], window=3, threshold=0.4)["firing"]
    with pytest.raises(ValueError):
        decision_quality([1.0], [1.0, 2.0], window=1, threshold=0.0)
