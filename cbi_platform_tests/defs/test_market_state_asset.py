"""The daily correlation monitor publishes the market state the buyer's intelligence card reads
(issue 22 §4): materialized in-process on the simulator, the published JSON is what
`market_state` says of the same warehouse table."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import duckdb

from cbi_platform.defs.market.assets import market_prices, raw_market_data
from cbi_platform.defs.operations.assets import correlation_monitor
from cbi_platform.defs.resources import build_resources
from cbi_platform.operations.config import load_monitoring
from cbi_platform.operations.correlation import monitor_correlations
from cbi_platform.operations.market_state import market_state, market_state_path


def test_correlation_monitor_publishes_the_market_state(tmp_path):
    home = tmp_path / "home"
    resources = build_resources({"CBI_HOME": str(home), "CBI_SIM_END": "2006-06-30"})
    result = dg.materialize(
        [raw_market_data, market_prices, correlation_monitor],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    published = json.loads(market_state_path(home).read_text())
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        prices = con.sql("select * from cbi.market_prices").pl()
    as_of = dt.date.fromisoformat(published["as_of"])
    settings = load_monitoring().correlation  # what the asset's operations resource reads
    pairs = monitor_correlations(prices, "ZL", settings=settings, as_of=as_of)
    expected = market_state(prices, "ZL", as_of, pairs)
    assert published == expected
    assert published["regime"]["trading_days"] >= 1
    assert published["cot"]["symbol"] == "COT_ZL"
    assert {c["pair"] for c in published["correlations"]} == {"soy_palm", "soy_crude"}
