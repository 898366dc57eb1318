"""The target_zones sanity check is registered as a warning, and warns with its evidence."""

from __future__ import annotations

import datetime as dt
import math

import dagster as dg
import numpy as np
import polars as pl

from cbi_platform.defs.ensemble.checks import target_zones_sanity
from cbi_platform.defs.pipeline import ALL_CHECKS
from cbi_platform.defs.resources import MarketSourceResource


def _market_prices(days: int = 3300) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    logp = np.log(40.0) + np.concatenate([[0.0], np.cumsum(rng.normal(0, 0.015, days - 1))])
    dates = pl.date_range(dt.date(2000, 1, 3), dt.date(2060, 1, 1), "1d", eager=True)[:days]
    return pl.DataFrame({"date": dates, "symbol": "ZL", "value": np.exp(logp)})


def _zones(prices: pl.DataFrame, half_log_width: float) -> pl.DataFrame:
    last = prices.row(-1, named=True)
    p = last["value"]
    return pl.DataFrame(
        {
            "horizon": ["12m"],
            "model": ["ensemble"],
            "origin": [last["date"]],
            "price": [p],
            "lo90": [p * math.exp(-half_log_width)],
            "hi90": [p * math.exp(half_log_width)],
        }
    )


def test_the_check_is_registered_as_a_non_blocking_check_of_target_zones():
    specs = {spec.name: spec for c in ALL_CHECKS for spec in c.check_specs}
    spec = specs["target_zones_sanity"]
    assert spec.asset_key == dg.AssetKey("target_zones")
    assert not spec.blocking


def test_the_check_warns_on_an_absurd_band_with_its_evidence():
    prices = _market_prices()
    wide = target_zones_sanity(
        target_zones=_zones(prices, math.asinh(1.205)),  # 241% of the price wide
        market_prices=prices,
        market_source=MarketSourceResource(),
    )
    assert not wide.passed
    assert wide.severity == dg.AssetCheckSeverity.WARN
    assert "12m 90% band 241.0% of the price" in wide.description
    assert wide.metadata["flagged"].value == "12m"
    band = wide.metadata["bands"].value[0]
    assert band["verdict"] == "too wide" and band["largest_move"] < band["log_width90"] / 2

    sane = target_zones_sanity(
        target_zones=_zones(prices, 1.645 * 0.015 * math.sqrt(252)),  # the normal band
        market_prices=prices,
        market_source=MarketSourceResource(),
    )
    assert sane.passed and sane.metadata["flagged"].value == "none"


def test_the_check_runs_after_a_partitioned_target_zones_materialization():
    """Wiring: the partitioned check reads its horizon's zones and the unpartitioned prices."""
    from cbi_platform.defs.partitions import horizon_partitions

    prices = _market_prices()

    @dg.asset(name="market_prices")
    def market_prices_stub() -> pl.DataFrame:
        return prices

    @dg.asset(name="target_zones", partitions_def=horizon_partitions, deps=["market_prices"])
    def target_zones_stub() -> pl.DataFrame:
        return _zones(prices, math.asinh(1.205))

    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([market_prices_stub], instance=instance)
    result = dg.materialize(
        [market_prices_stub, target_zones_stub, target_zones_sanity],
        selection=[target_zones_stub, target_zones_sanity],
        partition_key="12m",
        instance=instance,
        resources={"market_source": MarketSourceResource()},
    )
    evaluations = result.get_asset_check_evaluations()
    assert [e.check_name for e in evaluations] == ["target_zones_sanity"]
    assert not evaluations[0].passed
    assert evaluations[0].severity == dg.AssetCheckSeverity.WARN
