"""A buyer's programme backtest: the default programme reproduces the platform's backtest,
volume scales dollars only, his window and carry change the costs the way the programme
defines them, the shown policy follows the development rule, and the coming window's range
from the served zones is ordered and exact where it can be checked by hand."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from cbi_platform.procurement import backtest as bt
from cbi_platform.procurement import programme_backtest as pb
from cbi_platform.procurement.programme import load_config
from cbi_platform_tests.procurement.conftest import forecast_frame, make_prices


@pytest.fixture(scope="module")
def data():
    prices = make_prices(420, seed=5)
    return forecast_frame(prices, "random_walk", scored_from=0), prices


@pytest.fixture(scope="module")
def config():
    return load_config()


def _served(price: float, spread: float = 0.02, as_of=dt.date(2025, 3, 28)) -> list[dict]:
    rows = []
    for horizon, days in (("1w", 5), ("1m", 21), ("3m", 63)):
        sd = spread * math.sqrt(days / 5)
        zones = {"p10": -1.28, "p30": -0.52, "p50": 0.0, "p70": 0.52, "p90": 1.28}
        rows.append(
            {"as_of": as_of, "horizon": horizon, "price": price}
            | {k: price * math.exp(z * sd) for k, z in zones.items()}
        )
    return rows


def test_the_default_programme_reproduces_the_platforms_backtest(data, config):
    forecasts, prices = data
    result = pb.run_programme_backtest(forecasts, prices, config.programme, config)
    # what the procurement_backtest asset computes: every policy, the same windows
    usable = forecasts.filter(pl.col("horizon").is_in(list(config.pipeline.horizons)))
    windows = bt.default_windows(prices, config.programme, config.backtest, usable["date"].min())
    platform = bt.run_backtest(usable, prices, config.programme, config.policies, windows)
    even = platform.policy_windows("even")["cost_cents"].to_numpy()
    assert result["windows"] == len(windows) == even.size
    record = result["record"]["even"]
    assert record["mean_cents"] == float(even.mean())
    assert record["p10_cents"] == float(np.quantile(even, 0.1))
    assert record["p90_cents"] == float(np.quantile(even, 0.9))
    assert record["mean_dollars"] == pytest.approx(float(even.mean()) * 1_800_000 / 100)
    assert result["recommended_policy"] == config.pipeline.recommend == "even"
    assert result["record"]["recommended"] == record
    assert result["worst_shortfall_cents"] == 0.0 and result["within_tolerance"]


def test_doubling_the_volume_doubles_the_dollars_and_leaves_cents(data, config):
    forecasts, prices = data
    one = pb.run_programme_backtest(forecasts, prices, config.programme, config, _served(45.0))
    twice = dataclasses.replace(config.programme, railcars_per_window=20)
    two = pb.run_programme_backtest(forecasts, prices, twice, config, _served(45.0))
    for part in ("even", "recommended"):
        for stat in ("mean", "p10", "p50", "p90"):
            assert two["record"][part][f"{stat}_cents"] == one["record"][part][f"{stat}_cents"]
            assert two["record"][part][f"{stat}_dollars"] == pytest.approx(
                2 * one["record"][part][f"{stat}_dollars"]
            )
    for stat in ("p10", "p50", "p90"):
        cents = f"{stat}_cents"
        assert two["coming_window"]["even"][cents] == one["coming_window"]["even"][cents]
        assert two["coming_window"]["even"][f"{stat}_dollars"] == pytest.approx(
            2 * one["coming_window"]["even"][f"{stat}_dollars"]
        )


def test_his_window_and_carry_change_the_cost_as_the_programme_defines_it(data, config):
    forecasts, prices = data
    mine = dataclasses.replace(config.programme, window_days=10, carry_cents_per_lb_month=1.05)
    result = pb.run_programme_backtest(forecasts, prices, mine, config)
    first = forecasts["date"].min()
    closes = prices.filter(pl.col("date") >= first)["price"].to_numpy()
    # even buying over each 10-day window, a window every 21 days: the mean close + mean carry
    starts = range(0, closes.size - 10 + 1, config.backtest.window_step)
    carry = 1.05 * np.arange(9, -1, -1) / 21
    by_hand = np.array([closes[i : i + 10].mean() + carry.mean() for i in starts])
    assert result["windows"] == by_hand.size
    assert result["record"]["even"]["mean_cents"] == pytest.approx(by_hand.mean(), rel=1e-12)
    assert result["record"]["even"]["p50_cents"] == pytest.approx(np.median(by_hand), rel=1e-12)


def test_the_policy_shown_follows_the_development_rule(data, config):
    real = pb.load_development_record()
    # on the real record no searched policy saved on average: even at every tolerance
    for tolerance in (0.0, 1.0, 2.0, 5.0, 20.0):
        assert pb.recommended_policy(tolerance, config, real) == "even"
    made_up = {
        **real,
        "cvar": {"mean_savings_cents": 0.1, "worst_shortfall_cents": 1.5},
        "value_trigger": {"mean_savings_cents": 0.2, "worst_shortfall_cents": 3.0},
        "front_load": {"mean_savings_cents": 9.0, "worst_shortfall_cents": 0.0},  # not searched
    }
    assert pb.recommended_policy(1.0, config, made_up) == "even"
    assert pb.recommended_policy(2.0, config, made_up) == "cvar"
    assert pb.recommended_policy(3.0, config, made_up) == "value_trigger"
    # a shown policy other than even: its windows, its worst window against the tolerance
    forecasts, prices = data
    tolerant = dataclasses.replace(config.programme, max_worst_shortfall_cents=2.0)
    result = pb.run_programme_backtest(forecasts, prices, tolerant, config, None, made_up)
    assert result["recommended_policy"] == "cvar"
    usable = forecasts.filter(pl.col("horizon").is_in(list(config.pipeline.horizons)))
    windows = bt.default_windows(prices, tolerant, config.backtest, usable["date"].min())
    platform = bt.run_backtest(usable, prices, tolerant, config.policies, windows)
    cvar = platform.policy_windows("cvar")
    assert result["record"]["recommended"]["mean_cents"] == pytest.approx(
        float(cvar["cost_cents"].mean()), rel=1e-12
    )
    worst = float((0.0 - cvar["savings_cents"]).max())
    assert result["worst_shortfall_cents"] == pytest.approx(worst, rel=1e-12)
    assert result["within_tolerance"] == (worst <= 2.0)


def test_the_coming_window_range_is_ordered_and_exact_where_it_can_be(config):
    programme = config.programme
    served = _served(45.0)
    coming = pb.coming_window_range(served, programme)
    even = coming["even"]
    assert even["p10_cents"] < even["p50_cents"] < even["p90_cents"]
    assert coming["horizons"] == ["1w", "1m", "3m"] and coming["as_of"] == "2025-03-28"
    carry = programme.carry_cents_per_lb_month * 10 / 21  # mean of 20/21 .. 0/21 months
    assert coming["carry_cents"] == pytest.approx(carry)
    # zones with no spread: every quantile is today's price, the cost is price + carry
    flat = pb.coming_window_range(_served(45.0, spread=0.0), programme)["even"]
    for level in ("p10", "p50", "p90"):
        assert flat[f"{level}_cents"] == pytest.approx(45.0 + carry)
        assert flat[f"{level}_dollars"] == pytest.approx((45.0 + carry) * 18_000)
    # by hand: day 21 is the 1m zone itself; day 5 the 1w zone
    one_day = dataclasses.replace(programme, window_days=5, carry_cents_per_lb_month=0.0)
    p90 = pb.coming_window_range(served, one_day)["even"]["p90_cents"]
    at_1w = served[0]["p90"]
    x = np.log(at_1w / 45.0) * np.sqrt(np.arange(1, 6)) / np.sqrt(5)
    assert p90 == pytest.approx(float(np.mean(45.0 * np.exp(x))))
    # a window longer than the longest served horizon extrapolates by sqrt(days)
    long = dataclasses.replace(programme, window_days=126)
    wide = pb.coming_window_range(served, long)["even"]
    assert wide["p90_cents"] - wide["p10_cents"] > even["p90_cents"] - even["p10_cents"]
    assert pb.coming_window_range([], programme) is None
    incomplete = [dict(r, p10=None) for r in served]
    assert pb.coming_window_range(incomplete, programme) is None


def test_no_decision_series_is_a_clear_error(data, config):
    forecasts, prices = data
    with pytest.raises(ValueError, match="no decision forecasts for the horizons"):
        pb.run_programme_backtest(forecasts.head(0), prices, config.programme, config)
    short = dataclasses.replace(config.programme, window_days=126)
    few = prices.head(100)
    with pytest.raises(ValueError, match="no buying window of 126 trading days"):
        pb.run_programme_backtest(forecasts, few, short, config)
