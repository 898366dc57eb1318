"""Blocking check: models that declare monotone constraints honour them when fitted."""

import dagster as dg
import polars as pl

from cbi_platform.defs.partitions import horizon_partitions
from cbi_platform.evaluation.horizon_run import zoo_specs
from cbi_platform.features.contract import horizon_frame
from cbi_platform.models.monotone import verify_monotone_specs


@dg.asset_check(
    asset=dg.AssetKey("oof_predictions"),
    blocking=True,
    partitions_def=horizon_partitions,
    additional_ins={"features": dg.AssetIn("features")},
    description="Every spec with a monotone option, fitted on the horizon's data, has a monotone "
    "partial dependence (mean and individual curves) in each constrained feature.",
)
def oof_predictions_monotone(
    context: dg.AssetCheckExecutionContext, features: pl.DataFrame
) -> dg.AssetCheckResult:
    keys = (
        context.partition_keys
        if context.has_partition_key_range or context.has_partition_key
        else []
    )
    results = []
    for horizon in keys or sorted(features["horizon"].unique().to_list()):
        frame = horizon_frame(features, horizon)
        for r in verify_monotone_specs(frame, zoo_specs(horizon)):
            results.append(
                {
                    "horizon": horizon,
                    "model": r.model,
                    "feature": r.feature,
                    "sign": r.sign,
                    "monotone": r.monotone,
                }
            )
    failed = [r for r in results if not r["monotone"]]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(results) - len(failed)}/{len(results)} constraints honoured"
        + (f"; violated: {failed}" if failed else ""),
        metadata={"constraints": dg.MetadataValue.json(results)},
    )


model_checks = [oof_predictions_monotone]
