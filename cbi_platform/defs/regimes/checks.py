"""Blocking gate on `detected_regimes`: labels and classifier inputs are point in time."""

import time

import dagster as dg
import polars as pl

from cbi_platform.defs.regimes.assets import detected_regimes
from cbi_platform.defs.resources import MarketSourceResource
from cbi_platform.regimes.truncation import regime_truncation_gate


@dg.asset_check(
    asset=detected_regimes,
    blocking=True,
    additional_ins={"market_prices": dg.AssetIn("market_prices")},
    description="Leakage: regime labels and classifier inputs recomputed on history cut at "
    "several dates equal the full run and the table as written.",
)
def detected_regimes_truncation(
    detected_regimes: pl.DataFrame,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
) -> dg.AssetCheckResult:
    target = market_source.target_prices(market_prices)
    started = time.perf_counter()
    gate = regime_truncation_gate(
        target["date"], target["value"].to_numpy(), written=detected_regimes
    )
    return dg.AssetCheckResult(
        passed=gate.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=gate.summary[:2000],
        metadata={
            "evidence": dg.MetadataValue.json(gate.evidence),
            "rows_written": detected_regimes.height,
            "gate_seconds": round(time.perf_counter() - started, 3),
        },
    )


regime_checks = [detected_regimes_truncation]
