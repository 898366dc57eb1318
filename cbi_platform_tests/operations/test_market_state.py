"""The market state the intelligence card reads: the regime's current run, the correlations
against their band, COT positioning point in time, news sentiment, and the atomic publication."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest

from cbi_platform.market.simulator import SimulatorConfig, simulate_market
from cbi_platform.operations.correlation import monitor_correlations
from cbi_platform.operations.market_state import (
    cot_positioning,
    market_state,
    market_state_path,
    news_state,
    publish_market_state,
    publish_news_state,
    regime_spell,
)
from cbi_platform_tests.conftest import _business_days

END = dt.date(2016, 6, 30)


@pytest.fixture(scope="module")
def prices() -> pl.DataFrame:
    return simulate_market(SimulatorConfig(end=END)).prices


def test_regime_spell_counts_the_current_unbroken_run():
    days = _business_days(dt.date(2025, 1, 6), 7)
    labels = pl.DataFrame(
        {
            "date": days,
            "regime": [None, "bull", "normal", "normal", "bull", "bull", "bull"],
            "trailing_vol": [0.2] * 7,
            "crisis_threshold": [0.4] * 7,
        }
    )
    spell = regime_spell(labels)
    assert spell["regime"] == "bull" and spell["since"] == days[4].isoformat()
    assert spell["trading_days"] == 3 and spell["as_of"] == days[-1].isoformat()
    whole = regime_spell(labels.with_columns(regime=pl.lit("normal")))
    assert whole["trading_days"] == 7 and whole["since"] == days[0].isoformat()
    assert regime_spell(labels.with_columns(regime=pl.lit(None, dtype=pl.Utf8))) is None


def test_cot_is_the_latest_report_published_by_the_day(prices):
    cot = prices.filter(pl.col("symbol") == "COT_ZL").sort("date")
    as_of = cot["published_at"].cast(pl.Date)[-3]  # the day the third-last report became usable
    state = cot_positioning(prices, "ZL", as_of)
    known = cot.filter(pl.col("published_at").cast(pl.Date) <= as_of)
    assert state["as_of"] == known["date"][-1].isoformat()
    assert state["net_pct_oi"] == pytest.approx(known["value"][-1], abs=0.01)
    assert state["change_4w"] == pytest.approx(known["value"][-1] - known["value"][-5], abs=0.01)
    past = known["value"].to_numpy()[-157:-1]
    assert state["history_reports"] == 156
    assert state["percentile"] == pytest.approx(np.mean(past <= known["value"][-1]) * 100, abs=0.1)
    # A report dated before the day but published after it is not known yet.
    later = cot_positioning(prices, "ZL", cot["published_at"].cast(pl.Date)[-1])
    assert later["as_of"] > state["as_of"]


def test_no_cot_series_gives_none(prices):
    assert cot_positioning(prices.filter(pl.col("symbol") != "COT_ZL"), "ZL", END) is None


def test_market_state_holds_regime_correlations_and_cot(prices, tmp_path):
    results = monitor_correlations(prices, "ZL", as_of=END)
    state = market_state(prices, "ZL", END, results)
    assert state["regime"]["regime"] in {"crisis", "bull", "bear", "normal"}
    assert state["regime"]["trading_days"] >= 1 and state["regime"]["as_of"] <= END.isoformat()
    pairs = {c["pair"]: c for c in state["correlations"]}
    assert set(pairs) == {"soy_palm", "soy_crude"}
    crude = pairs["soy_crude"]
    latest = results["soy_crude"].latest()
    assert crude["corr"] == pytest.approx(latest["corr"], abs=1e-4)
    assert crude["state"] in {"inside", "below", "above"}
    lo, hi = crude["band_lo"], crude["band_hi"]
    expected = "below" if crude["corr"] < lo else "above" if crude["corr"] > hi else "inside"
    assert crude["state"] == expected
    assert state["cot"]["symbol"] == "COT_ZL"
    path = publish_market_state(tmp_path, state)
    assert path == market_state_path(tmp_path)
    assert json.loads(path.read_text()) == state
    assert not list(path.parent.glob(".*"))


def test_a_pair_without_its_partner_is_reported_skipped(prices):
    no_palm = prices.filter(pl.col("symbol") != "PALM")
    state = market_state(no_palm, "ZL", END, monitor_correlations(no_palm, "ZL", as_of=END))
    palm = next(c for c in state["correlations"] if c["pair"] == "soy_palm")
    assert palm["skipped"] and "PALM" in palm["skipped"] and palm["as_of"] is None


def test_news_state_reads_the_latest_day_and_ranks_it(tmp_path):
    days = _business_days(dt.date(2025, 1, 6), 5)
    daily = pl.DataFrame(
        {
            "date": days,
            "published_at": days,
            "f_news_sent_mean": [0.1, -0.2, None, 0.0, 0.05],
            "f_news_sent_disp": [0.1] * 5,
            "f_news_count": [3, 4, 0, 2, 6],
            "f_news_sent_surprise": [None, None, None, 0.01, 0.02],
        }
    )
    state = news_state(daily, scorer="vader")
    assert state["as_of"] == days[-1].isoformat() and state["articles"] == 6
    assert state["mean_score"] == 0.05 and state["surprise"] == 0.02
    assert state["percentile"] == pytest.approx(200 / 3, abs=0.1)  # above -0.2 and 0.0 of 3
    assert state["history_days"] == 3
    assert news_state(daily.head(0)) is None
    path = publish_news_state(tmp_path, None)
    assert json.loads(path.read_text()) is None
