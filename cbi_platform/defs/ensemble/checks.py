"""Warning check: the live 90% target zone is a band a buyer can use (not absurdly wide, not
collapsed), judged against the history (cbi_platform.ensemble.zone_sanity)."""

import dagster as dg
import polars as pl

from cbi_platform.defs.partitions import horizon_partitions
from cbi_platform.defs.resources import MarketSourceResource
from cbi_platform.ensemble.zone_sanity import live_band_sanity


@dg.asset_check(
    asset=dg.AssetKey("target_zones"),
    blocking=False,
    partitions_def=horizon_partitions,
    additional_ins={"market_prices": dg.AssetIn("market_prices")},
    description="The ensemble's live 90% band per horizon against the largest h-day move in the "
    "history and the random walk's normal band: WARN when it is much wider (or narrower) than "
    "either (thresholds in zone_sanity's docstring).",
)
def target_zones_sanity(
    target_zones: pl.DataFrame,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
) -> dg.AssetCheckResult:
    history = market_source.target_prices(market_prices).select("date", price="value")
    verdicts = live_band_sanity(target_zones, history)
    flagged = [v for v in verdicts if not v.sane]
    summary = (
        "; ".join(r for v in flagged for r in v.reasons if " is too " in r)
        if flagged
        else f"live 90% bands within the references at {[v.horizon for v in verdicts]}"
    )
    return dg.AssetCheckResult(
        passed=not flagged,
        severity=dg.AssetCheckSeverity.WARN,
        description=summary,
        metadata={
            "horizons": len(verdicts),
            "flagged": ", ".join(v.horizon for v in flagged) or "none",
            "bands": dg.MetadataValue.json([v.as_dict() for v in verdicts]),
        },
    )


ensemble_checks = [target_zones_sanity]
