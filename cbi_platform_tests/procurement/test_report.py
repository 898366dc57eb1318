"""Report: the tables hold the numbers the statistics computed; the plot is a PNG with the
bound labelled unattainable; the recommendation reads as one paragraph with the record."""

from __future__ import annotations

import pytest

from cbi_platform.procurement.backtest import (
    PERFECT_FORESIGHT,
    bound_statistics,
    lookahead_alarm,
    run_backtest,
    savings_statistics,
)
from cbi_platform.procurement.policies import Decision
from cbi_platform.procurement.programme import Programme, buying_windows, load_config
from cbi_platform.procurement.report import (
    backtest_report,
    cumulative_savings_plot,
    policy_table,
    recommendation_text,
)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result(prices, rw_forecasts):
    windows = buying_windows(prices["date"].to_list(), 21, 21, start=prices["date"][600])
    return run_backtest(rw_forecasts, prices, Programme(), load_config().policies, windows)


@pytest.fixture(scope="module")
def stats(result):
    return savings_statistics(result, n_boot=300)


def test_policy_table_carries_every_policy_and_the_bound(result, stats):
    table = policy_table(stats, bound_statistics(result))
    lines = table.splitlines()
    assert len(lines) == 2 + len(result.policies) + 1
    assert PERFECT_FORESIGHT in lines[-1] and "unattainable" in lines[-1]
    front = stats.filter(stats["policy"] == "front_load").row(0, named=True)
    row = next(line for line in lines if line.startswith("| front_load |"))
    assert f"{front['mean_savings_cents']:+.3f}" in row
    assert f"${abs(front['worst_shortfall_dollars']):,.0f}" in row
    assert "90% CI c/lb" in lines[0] and "p (Newey-West)" in lines[0]


def test_report_and_plot(result, stats):
    png = cumulative_savings_plot(result)
    assert png.startswith(PNG) and len(png) > 5_000
    text = backtest_report(result, stats, alarm=lookahead_alarm(result))
    assert "unattainable bound" in text and "By regime" in text
    assert "no sign of look-ahead" in text and "data:image/png;base64," in text
    assert "data:image" not in backtest_report(result, stats, include_plot=False)


def test_recommendation_text(stats):
    decision = Decision(
        720_000.0,
        "split",
        "Buy 40% now: 72% probability the price is higher in 21 trading days.",
    )
    record = stats.filter(stats["policy"] == "front_load").row(0, named=True)
    text = recommendation_text(decision, "front_load", record)
    assert text.startswith("Today the front_load policy says SPLIT 720,000 lb. Buy 40% now")
    assert f"{record['n_windows']} windows" in text
    assert f"{abs(record['mean_savings_cents']):.2f} c/lb" in text
    assert ("saved" in text) == (record["mean_savings_cents"] >= 0)
    assert str(record["worst_window_start"]) in text
    assert "\n" not in text
    assert "no backtested record" in recommendation_text(decision, "new", None)
