"""The forecast the buyer reads: published by `cbi_platform.serving.publish`, one call per
horizon, then appended to the forecast history."""

import json

import dagster as dg
import polars as pl
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from cbi_platform.defs.ensemble.assets import horizon_context
from cbi_platform.defs.partitions import PARTITION_EXPR, horizon_backfill, horizon_partitions
from cbi_platform.defs.resources import (
    ForecastStoreResource,
    MarketSourceResource,
    MlflowResource,
    OperationsResource,
    PlatformHome,
    ProtocolResource,
)
from cbi_platform.evaluation import horizon_run
from cbi_platform.evaluation.promotion import LEAKAGE_CHECKS
from cbi_platform.features.contract import horizon_frame
from cbi_platform.market.schema import target_series
from cbi_platform.regimes.detected import regime_outlook
from cbi_platform.reporting import markdown_table
from cbi_platform.serving.publish import HorizonInputs, publish_horizon

FEATURES = dg.AssetKey("features")


def _horizons_of(record) -> list[str]:
    """The partitions a range run's (partition-less) check evaluation judged, from its evidence."""
    event = record.event.dagster_event if record.event else None
    evaluation = event.event_specific_data if event else None
    value = getattr(evaluation, "metadata", {}).get("horizons")
    return list(value.value) if value is not None else []


def leakage_check_results(instance: dg.DagsterInstance, horizon: str) -> dict[str, bool | None]:
    """The latest evaluation of each blocking check on `features` for this partition: True
    (passed), False (failed) or None (none recorded, or planned and never evaluated). A run over
    several partitions records one partition-less evaluation whose evidence names them."""
    keys = [dg.AssetCheckKey(FEATURES, name) for name in LEAKAGE_CHECKS]
    storage = instance.event_log_storage
    by_partition = storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=horizon)
    )
    by_range = storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=None)
    )
    results: dict[str, bool | None] = {}
    for key in keys:
        records = [by_partition.get(key)]
        ranged = by_range.get(key)
        if ranged is not None and horizon in _horizons_of(ranged):
            records.append(ranged)
        found = [r for r in records if r is not None]
        latest = max(found, key=lambda r: r.id) if found else None
        if latest is None or latest.status == AssetCheckExecutionRecordStatus.PLANNED:
            results[key.name] = None
        else:
            results[key.name] = latest.status == AssetCheckExecutionRecordStatus.SUCCEEDED
    return results


@dg.asset(
    group_name="forecasts",
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    metadata=PARTITION_EXPR,
    kinds={"polars", "duckdb", "mlflow"},
    description="Latest forecast per horizon from the served (champion) version: price level, "
    "P10..P90, 90% band, achieved-probability statement, regime, drivers, volatility, data "
    "freshness; provisional when no version passed promotion; appended to the history.",
)
def forecasts(
    context: dg.AssetExecutionContext,
    target_zones: pl.DataFrame,
    oof_predictions: pl.DataFrame,
    detected_regimes: pl.DataFrame,
    volatility_forecasts: pl.DataFrame,
    model_leaderboard: pl.DataFrame,
    market_prices: pl.DataFrame,
    features: pl.DataFrame,
    market_source: MarketSourceResource,
    protocol: ProtocolResource,
    mlflow: MlflowResource,
    forecast_store: ForecastStoreResource,
    operations: OperationsResource,
    home: PlatformHome,
) -> dg.Output[pl.DataFrame]:
    tracker = mlflow.tracker()
    target = target_series(market_prices, market_source.target())
    outlook = regime_outlook(target["date"], target["value"].to_numpy(), detected_regimes["regime"])
    config = protocol.config()
    frozen = protocol.protocol()
    rows, promotions = [], {}
    for horizon in context.partition_keys:
        ctx, vol_model = horizon_context(horizon, detected_regimes, volatility_forecasts)
        published = publish_horizon(
            tracker,
            HorizonInputs(
                horizon=horizon,
                features=horizon_frame(features, horizon),
                oof=oof_predictions.filter(pl.col("horizon") == horizon),
                zones=target_zones.filter(pl.col("horizon") == horizon),
                context=ctx,
                vol_model=vol_model,
                leaderboard=model_leaderboard.filter(pl.col("horizon") == horizon),
                regimes=detected_regimes,
                specs=protocol.specs(horizon),
                ensemble_config=horizon_run.ensemble_config(config),
                leakage=leakage_check_results(context.instance, horizon),
                spacing_days=float(frozen.step),
                fit_cache=config.fit_cache,
            ),
            card_dir=home.folder("model_cards", horizon),
            run_tags={
                "dagster.run_id": context.run.run_id,
                "dagster.partition": horizon,
                "dagster.asset": "forecasts",
            },
            regime_outlook=outlook,
            data_reference_date=market_source.reference_date(),
            protocol_hash=frozen.hash(),
        )
        rows.append(published.record)
        promotions[horizon] = published.promotion
        if published.promotion["promoted"]:  # the audit trail also covers the gates' decisions
            operations.audit().record(
                horizon,
                "auto_promote",
                actor="promotion gates (forecasts asset)",
                reason="; ".join(published.promotion["reasons"]),
                from_version=published.promotion["champion_before"],
                to_version=published.promotion["version"],
                evidence={"run_id": context.run.run_id},
            )
        context.log.info(f"{horizon}: {published.record['statement']}")
    inserted = forecast_store.store().append(rows)
    json_columns = ("drivers", "drivers_detail", "failed_gates")
    out = pl.DataFrame(
        [{k: json.dumps(v) if k in json_columns else v for k, v in r.items()} for r in rows],
        infer_schema_length=None,
    )
    return dg.Output(
        out,
        metadata={
            "dagster/row_count": out.height,
            "statements": dg.MetadataValue.md(
                "\n".join(f"- **{r['horizon']}**: {r['statement']}" for r in rows)
            ),
            "forecast": dg.MetadataValue.md(
                markdown_table(
                    out.select(
                        "horizon",
                        "model_version",
                        "provisional",
                        "as_of",
                        "target_date",
                        "price",
                        "forecast",
                        "p10",
                        "p50",
                        "p90",
                        "band_probability",
                        "band_probability_nominal",
                        "regime",
                        "vol_model",
                    )
                )
            ),
            "p50_vs_point": dg.MetadataValue.md(
                "\n".join(f"- **{r['horizon']}**: {r['p50_note']}" for r in rows)
            ),
            "drivers": dg.MetadataValue.md(
                "\n".join(
                    f"- **{r['horizon']}** ({r['driver_note']}): " + "; ".join(r["drivers"])
                    for r in rows
                )
            ),
            "drivers_detail": dg.MetadataValue.json(
                {r["horizon"]: r["drivers_detail"] for r in rows}
            ),
            "provisional": dg.MetadataValue.json(
                {r["horizon"]: r["failed_gates"] for r in rows if r["provisional"]}
            ),
            "promotion": dg.MetadataValue.json(promotions),
            "history_rows_inserted": inserted,
        },
    )
