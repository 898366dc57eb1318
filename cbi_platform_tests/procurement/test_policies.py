"""Policies: bounds, decision direction on constructed distributions, the legacy rule, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbi_platform.procurement.policies import (
    ACTIONS,
    POLICIES,
    CVaR,
    EvenPace,
    ExpectedCost,
    FrontLoad,
    LegacyRule,
    ValueTrigger,
    build_policy,
    distribution_cvar,
    distribution_mean,
    quantile_levels,
)
from cbi_platform.procurement.programme import Programme, load_config
from cbi_platform_tests.procurement.conftest import dist_row, make_context

TOTAL = Programme().total_lb
ZONES = ("p10", "p30", "p50", "p70", "p90")


# ---- reading a distribution -------------------------------------------------------------


def test_mean_from_cdf_is_the_log_normal_mean():
    row = dist_row(45.0, 45.0, sd=0.05, h=21)
    assert quantile_levels(row)[1] == "cdf"
    # knots span +-3 sd, so the tails are clipped: within 0.05% of 45 exp(sd^2 / 2)
    assert distribution_mean(row) == pytest.approx(45.0 * math.exp(0.05**2 / 2), rel=5e-4)


def test_zones_are_used_without_cdf_then_the_point_forecast():
    row = dist_row(45.0, 47.0, sd=0.03, h=21, with_cdf=False)
    assert quantile_levels(row)[1] == "zones"
    assert distribution_mean(row) == pytest.approx(row["p50"], rel=2e-3)
    skewed = {**row, "p90": row["p90"] + 3.0}
    assert distribution_mean(skewed) > distribution_mean(row) + 0.2
    point = dist_row(45.0, 47.0, sd=0.03, h=21, with_cdf=False, with_zones=False)
    assert quantile_levels(point)[1] == "point"
    assert distribution_mean(point) == pytest.approx(47.0)
    assert quantile_levels({**point, "forecast": None}) is None


def test_cvar_of_a_normal_matches_the_closed_form():
    sd = 0.04
    row = dist_row(45.0, 45.0, sd=sd, h=21)
    # log-normal upper tail mean E[e^X | X > q_a] = e^(s^2/2) Phi(s - z_a) / (1 - a)
    from scipy import stats

    z = stats.norm.ppf(0.9)
    exact = 45.0 * math.exp(sd**2 / 2) * stats.norm.cdf(sd - z) / 0.1
    assert distribution_cvar(row, 0.9) == pytest.approx(exact, rel=2e-3)


@settings(max_examples=60, deadline=None)
@given(
    zones=st.lists(st.floats(20.0, 80.0), min_size=5, max_size=5),
    knots=st.lists(st.floats(-0.5, 0.5), min_size=2, max_size=12, unique=True),
    use_cdf=st.booleans(),
    alpha=st.floats(0.01, 0.99),
)
def test_cvar_is_never_below_the_mean(zones, knots, use_cdf, alpha):
    row = {"price": 45.0, "forecast": 45.0, **dict(zip(ZONES, zones, strict=True))}
    if use_cdf:
        row["cdf_logret"] = sorted(knots)
        row["cdf_prob"] = list(np.linspace(0.02, 0.98, len(knots)))
    mean, cvar = distribution_mean(row), distribution_cvar(row, alpha)
    assert cvar >= mean - 1e-9
    assert distribution_cvar(row, min(alpha + 0.005, 0.995)) >= cvar - 1e-9


# ---- decision direction -----------------------------------------------------------------


def test_expected_cost_buys_everything_when_the_whole_distribution_is_dearer():
    ctx = make_context(45.0, {"1w": dist_row(45.0, 48.0, sd=0.005, h=5, horizon="1w")})
    assert ctx.forecasts["1w"]["p10"] > ctx.price + ctx.carry()  # the whole distribution above
    d = ExpectedCost(margin=0.25).decide(ctx)
    assert d.buy_lb == pytest.approx(ctx.remaining_lb)
    assert d.action == "buy"
    assert "48." in d.reason and "45.00" in d.reason  # numbers a buyer can check


def test_expected_cost_waits_when_the_distribution_sits_well_below():
    ctx = make_context(45.0, {"1w": dist_row(45.0, 42.0, sd=0.005, h=5, horizon="1w")})
    d = ExpectedCost(margin=0.25).decide(ctx)
    assert d.buy_lb == 0.0 and d.action == "wait"
    d = ExpectedCost(margin=0.25, min_fraction=0.1).decide(ctx)
    assert d.buy_lb == pytest.approx(0.1 * ctx.remaining_lb)


def test_expected_cost_splits_when_close_and_ignores_horizons_past_the_window():
    ctx = make_context(45.0, {"1w": dist_row(45.0, 45.0, sd=0.01, h=5, horizon="1w")})
    d = ExpectedCost(margin=0.25).decide(ctx)
    assert d.buy_lb == pytest.approx(ctx.pace_lb) and d.action == "split"
    # the 1m distribution says far cheaper, but 21 days do not fit in the 10 left
    late = make_context(45.0, {"1m": dist_row(45.0, 30.0, sd=0.01, h=21)}, days_left=10)
    d = ExpectedCost(margin=0.25).decide(late)
    assert d.buy_lb == pytest.approx(late.pace_lb)
    assert "no forecast horizon" in d.reason


def test_expected_cost_counts_the_carry_saved_by_waiting():
    """Same expected price in 20 days: waiting saves 20/21 of a month's carry (0.24 c/lb)."""
    ctx = make_context(45.0, {"20d": dist_row(45.0, 45.0, sd=1e-4, h=20)})
    assert ctx.carry() == pytest.approx(0.25 * 20 / 21)  # 20 trading days to delivery
    assert ctx.carry(20) == 0.0 and make_context(days_left=1).carry() == 0.0
    d = ExpectedCost(margin=0.2).decide(ctx)
    assert d.details["cost_now"] == pytest.approx(45.0 + 0.25 * 20 / 21)
    assert d.details["edge"] == pytest.approx(-0.25 * 20 / 21, abs=1e-3)
    assert d.action == "wait"
    assert ExpectedCost(margin=0.3).decide(ctx).action == "split"


def test_cvar_buys_against_the_tail_and_paces_when_even_the_tail_is_cheap():
    ctx = make_context(45.0, {"1w": dist_row(45.0, 45.0, sd=0.03, h=5, horizon="1w")})
    d = CVaR(alpha=0.9, buy_fraction=0.3).decide(ctx)
    assert d.buy_lb == pytest.approx(0.3 * ctx.remaining_lb)
    assert d.details["cvar"] > d.details["mean"]
    cheap = make_context(45.0, {"1w": dist_row(45.0, 40.0, sd=0.005, h=5, horizon="1w")})
    d = CVaR(alpha=0.9, buy_fraction=0.3).decide(cheap)
    assert d.buy_lb == pytest.approx(cheap.pace_lb)
    # a wide 1m distribution just below today: on the mean (plus the carry saved) waiting
    # wins, so expected_cost waits; its worst 10% is dear, so CVaR buys
    wide = make_context(45.0, {"1m": dist_row(45.0, 44.9, sd=0.06, h=21)}, days_left=22)
    assert ExpectedCost(margin=0.1).decide(wide).buy_lb == 0.0
    assert CVaR(alpha=0.9, buy_fraction=0.3).decide(wide).buy_lb == pytest.approx(0.3 * TOTAL)


def test_value_trigger():
    closes = np.concatenate([np.linspace(50, 60, 63), [45.0]])
    d = ValueTrigger(percentile=20, lookback=63, buy_fraction=0.5).decide(
        make_context(closes=closes)
    )
    assert d.buy_lb == pytest.approx(0.5 * TOTAL) and d.details["trigger_level"] > 45
    high = np.concatenate([np.linspace(50, 60, 63), [58.0]])
    d = ValueTrigger(percentile=20, lookback=63, buy_fraction=0.5).decide(make_context(closes=high))
    assert d.buy_lb == 0.0 and d.action == "wait"
    paced = ValueTrigger(percentile=20, lookback=63, buy_fraction=0.5, min_fraction=None)
    ctx = make_context(closes=high, days_left=7)
    assert paced.decide(ctx).buy_lb == pytest.approx(TOTAL / 7)
    # the lookback counts: over the last 10 closes (59-60) 58 is cheap
    short = ValueTrigger(percentile=20, lookback=10, buy_fraction=0.5).decide(
        make_context(closes=high)
    )
    assert short.buy_lb == pytest.approx(0.5 * TOTAL)


def _path(returns, start=50.0):
    return start * np.exp(
        np.concatenate([[0.0], np.cumsum(np.concatenate([np.zeros(10), returns]))])
    )


@pytest.mark.parametrize(
    ("returns", "signal", "fraction"),
    [
        (np.array([0.025, -0.025] * 10 + [-0.05]), "strong_buy", 0.6),
        (np.array([0.014, -0.014] * 10 + [-0.02]), "buy", 0.3),
        (np.array([0.013, -0.013] * 8 + [-0.007] * 5), "buy_the_dip", 0.3),
        (np.array([0.012, -0.012] * 8 + [-0.007] * 5), "none", None),  # stand-in 17.7 <= 18
        (0.002 * np.sin(np.arange(30)), "none", None),
    ],
)
def test_legacy_rule_on_constructed_closes(returns, signal, fraction):
    closes = _path(returns)
    ind = LegacyRule.indicators(closes)
    log_r = np.diff(np.log(closes[-22:]))
    assert ind["vix_standin"] == pytest.approx(np.std(log_r, ddof=1) * np.sqrt(252) * 100)
    assert ind["ma20"] == pytest.approx(closes[-20:].mean())
    ctx = make_context(closes=closes, days_left=10)
    d = LegacyRule(strong_fraction=0.6, buy_fraction=0.3).decide(ctx)
    assert d.details["signal"] == signal
    assert "VIX stand-in" in d.reason
    expected = ctx.pace_lb if fraction is None else fraction * ctx.remaining_lb
    assert d.buy_lb == pytest.approx(expected)


def test_benchmarks():
    ctx = make_context(days_left=8, remaining_lb=800.0)
    assert EvenPace().decide(ctx).buy_lb == pytest.approx(100.0)
    assert FrontLoad().decide(ctx).buy_lb == pytest.approx(800.0)
    assert LegacyRule().decide(make_context(closes=[45.0] * 5)).buy_lb == pytest.approx(TOTAL / 21)


# ---- every policy: bounds and purity ----------------------------------------------------


def _all_policies():
    config = load_config()
    return [build_policy(e) for e in config.policies] + [
        ExpectedCost(name="ec0", margin=0.0, min_fraction=0.0),
        ValueTrigger(name="vt_all", percentile=100, lookback=5, buy_fraction=1.0),
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    days_left=st.integers(1, 70),
    remaining_share=st.floats(0.0, 1.0),
    n_closes=st.integers(1, 80),
    levels=st.lists(st.floats(20.0, 80.0), min_size=3, max_size=3),
)
def test_every_policy_stays_within_what_remains(seed, days_left, remaining_share, n_closes, levels):
    rng = np.random.default_rng(seed)
    closes = 45 * np.exp(np.cumsum(0.02 * rng.standard_normal(n_closes)))
    price = float(closes[-1])
    forecasts = {
        hz: dist_row(price, lv, sd=float(rng.uniform(1e-4, 0.2)), h=h, horizon=hz)
        for (hz, h), lv in zip((("1w", 5), ("1m", 21), ("3m", 63)), levels, strict=True)
    }
    ctx = make_context(
        forecasts=forecasts,
        closes=closes,
        remaining_lb=remaining_share * TOTAL,
        days_left=days_left,
    )
    for policy in _all_policies():
        snapshot = {hz: dict(r) for hz, r in ctx.forecasts.items()}
        d = policy.decide(ctx)
        assert math.isfinite(d.buy_lb), policy.name
        assert 0.0 <= d.buy_lb <= ctx.remaining_lb + 1e-6, (policy.name, d)
        assert d.action in ACTIONS and d.reason
        assert policy.decide(ctx) == d  # pure: same context, same decision
        assert {hz: dict(r) for hz, r in ctx.forecasts.items()} == snapshot


# ---- configuration ----------------------------------------------------------------------


def test_the_yaml_builds_every_policy_and_every_grid_kind_exists():
    config = load_config()
    built = [build_policy(e) for e in config.policies]
    assert {p.kind for p in built} >= {
        "even",
        "front_load",
        "legacy_rule",
        "expected_cost",
        "cvar",
        "value_trigger",
    }
    for p, entry in zip(built, config.policies, strict=True):
        assert p.name == entry["name"] and p.params == (entry.get("params") or {})
    assert set(config.grid) <= set(POLICIES)
    assert config.programme.total_lb == 1_800_000
    assert config.programme.max_worst_shortfall_cents == 2.0


def test_build_policy_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match="unattainable bound"):
        build_policy({"name": "pf", "kind": "perfect_foresight"})
    with pytest.raises(ValueError, match="unknown policy kind"):
        build_policy({"name": "x", "kind": "hunch"})
    with pytest.raises(ValueError, match="margn"):
        build_policy({"name": "x", "kind": "expected_cost", "params": {"margn": 1}})
    with pytest.raises(ValueError, match="alpha"):
        build_policy({"name": "x", "kind": "cvar", "params": {"alpha": 1.5}})
