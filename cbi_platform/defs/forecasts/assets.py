"""Two steps per horizon, so the UI shows which one failed: `registered_version` (refit,
register, gates, promotion: `cbi_platform.release.register`) and `forecasts` (serve the version
the release room chose, build the record, append the history: `cbi_platform.serving.publish`)."""

import json

import dagster as dg
import polars as pl

from cbi_platform.defs.dagster_internals import leakage_check_results
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
from cbi_platform.features.contract import horizon_frame
from cbi_platform.regimes.detected import regime_outlook
from cbi_platform.release.register import HorizonInputs, register_version
from cbi_platform.reporting import markdown_table
from cbi_platform.serving.publish import live_zone, serve_version
from cbi_platform.serving.walk_forward_zones import publish_walk_forward_zones
from cbi_platform.tracking import registered_model_name

FEATURES = dg.AssetKey("features")


PROMOTION_SCHEMA = {
    "horizon": pl.Utf8,
    "version": pl.Utf8,
    "champion_before": pl.Utf8,
    "promoted": pl.Boolean,
    "serving_version": pl.Utf8,
    "provisional": pl.Boolean,
    "serving_failed_gates": pl.Utf8,  # JSON list
    "reasons": pl.Utf8,  # JSON list
    "failed_gates": pl.Utf8,  # JSON list
    "would_promote_at_2pct_margin": pl.Boolean,
    "protocol_hash": pl.Utf8,
}
JSON_COLUMNS = ("serving_failed_gates", "reasons", "failed_gates")


@dg.asset(
    group_name="forecasts",
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    metadata=PARTITION_EXPR,
    kinds={"polars", "duckdb", "mlflow"},
    description="A new version of cbi-zl-<h>: members refitted on all known targets, registered "
    "in MLflow with its metrics, leakage results and protocol hash, judged by the promotion "
    "gates (promoted with an audit row when it passes and beats the champion).",
)
def registered_version(
    context: dg.AssetExecutionContext,
    target_zones: pl.DataFrame,
    oof_predictions: pl.DataFrame,
    detected_regimes: pl.DataFrame,
    volatility_forecasts: pl.DataFrame,
    model_leaderboard: pl.DataFrame,
    features: pl.DataFrame,
    protocol: ProtocolResource,
    mlflow: MlflowResource,
    operations: OperationsResource,
    home: PlatformHome,
) -> dg.Output[pl.DataFrame]:
    tracker = mlflow.tracker()
    config = protocol.config()
    frozen = protocol.protocol()
    audit = operations.audit()
    rows, promotions = [], {}
    for horizon in context.partition_keys:
        ctx, vol_model = horizon_context(horizon, detected_regimes, volatility_forecasts)
        registration = register_version(
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
            audit=audit,
            card_dir=home.folder("model_cards", horizon),
            run_tags={
                "dagster.run_id": context.run.run_id,
                "dagster.partition": horizon,
                "dagster.asset": "registered_version",
            },
            protocol_hash=frozen.hash(),
            cache=home.folder("model_cache"),
        )
        promotion = registration.promotion
        promotions[horizon] = promotion
        rows.append(
            {
                "horizon": horizon,
                **{
                    k: json.dumps(promotion[k]) if k in JSON_COLUMNS else promotion[k]
                    for k in PROMOTION_SCHEMA
                    if k != "horizon"
                },
            }
        )
        verdict = "promoted" if promotion["promoted"] else "not promoted"
        context.log.info(
            f"{horizon}: registered v{registration.version} ({verdict}); "
            f"v{registration.serving_version} serves"
            + (" provisional" if registration.provisional else "")
        )
    out = pl.DataFrame(rows, schema=PROMOTION_SCHEMA)
    return dg.Output(
        out,
        metadata={
            "dagster/row_count": out.height,
            "promotion": dg.MetadataValue.json(promotions),
            "versions": dg.MetadataValue.md(
                markdown_table(
                    out.select(
                        "horizon", "version", "promoted", "serving_version", "provisional"
                    )
                )
            ),
        },
    )


@dg.asset(
    group_name="forecasts",
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    metadata=PARTITION_EXPR,
    kinds={"polars", "duckdb", "mlflow"},
    description="Latest forecast per horizon from the served (champion) version: price level, "
    "P10..P90, 90% band, achieved-probability statement, regime, drivers, volatility, data "
    "freshness; provisional when the served version failed a promotion gate; appended to the "
    "history. Publishes the walk-forward's past zones for the buyer's page.",
)
def forecasts(
    context: dg.AssetExecutionContext,
    registered_version: pl.DataFrame,
    target_zones: pl.DataFrame,
    detected_regimes: pl.DataFrame,
    volatility_forecasts: pl.DataFrame,
    model_leaderboard: pl.DataFrame,
    market_prices: pl.DataFrame,
    features: pl.DataFrame,
    market_source: MarketSourceResource,
    mlflow: MlflowResource,
    forecast_store: ForecastStoreResource,
    home: PlatformHome,
) -> dg.Output[pl.DataFrame]:
    tracker = mlflow.tracker()
    target = market_source.target_prices(market_prices)
    outlook = regime_outlook(target["date"], target["value"].to_numpy(), detected_regimes["regime"])
    rows, gaps = [], {}
    for horizon in context.partition_keys:
        chosen = registered_version.filter(pl.col("horizon") == horizon)
        if chosen.height != 1:
            raise ValueError(
                f"{horizon}: registered_version holds {chosen.height} rows for this horizon "
                "(expected 1): materialize registered_version for it first"
            )
        choice = chosen.row(0, named=True)
        ctx, _ = horizon_context(horizon, detected_regimes, volatility_forecasts)
        zones = target_zones.filter(pl.col("horizon") == horizon)
        just_registered = choice["serving_version"] == choice["version"]
        served = serve_version(
            tracker,
            horizon,
            choice["serving_version"],
            features=horizon_frame(features, horizon),
            context=ctx,
            leaderboard=model_leaderboard.filter(pl.col("horizon") == horizon),
            regimes=detected_regimes,
            regime_outlook=outlook,
            data_reference_date=market_source.reference_date(),
            registered_version=f"{registered_model_name(horizon)}/v{choice['version']}",
            provisional=choice["provisional"],
            failed_gates=json.loads(choice["serving_failed_gates"]),
            live=live_zone(zones, horizon) if just_registered else None,
            cache=home.folder("model_cache"),
        )
        rows.append(served.record)
        gaps[horizon] = served.reload_gap_logret
        publish_walk_forward_zones(home.path, horizon, zones)  # the page's past zones
        context.log.info(f"{horizon}: {served.record['statement']}")
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
            # null where the served version is an older champion (nothing to reproduce)
            "reload_gap_logret": dg.MetadataValue.json(gaps),
            "history_rows_inserted": inserted,
        },
    )
