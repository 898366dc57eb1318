"""Ensemble and target-zone assets, per horizon."""

import dagster as dg
import polars as pl

from cbi_platform.defs.partitions import PARTITION_EXPR, horizon_backfill, horizon_partitions
from cbi_platform.defs.resources import MarketSourceResource, ProtocolResource
from cbi_platform.ensemble.conformal import coverage_report
from cbi_platform.evaluation import horizon_run
from cbi_platform.evaluation.origins import DEVELOPMENT, SCORED
from cbi_platform.evaluation.volatility_eval import best_volatility_model, score_volatility
from cbi_platform.features.contract import horizon_frame
from cbi_platform.reporting import markdown_table

WINDOWS = {"development": (DEVELOPMENT,), "scored": (SCORED,)}


def horizon_context(
    horizon: str, detected_regimes: pl.DataFrame, volatility_forecasts: pl.DataFrame
) -> tuple[pl.DataFrame, str]:
    """Regime and volatility at each origin; the vol model is chosen on the development window."""
    vol_model = best_volatility_model(
        score_volatility(volatility_forecasts, role=DEVELOPMENT), horizon
    )
    return horizon_run.context_frame(
        detected_regimes, volatility_forecasts, horizon, vol_model
    ), vol_model


@dg.multi_asset(
    group_name="ensemble",
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    outs={
        "ensemble_predictions": dg.AssetOut(
            description="Walk-forward ensemble (combiner chosen on earlier origins, shrunk to the "
            "random walk), one row per origin.",
            kinds={"lightgbm", "duckdb"},
            metadata=PARTITION_EXPR,
        ),
        "ensemble_weights": dg.AssetOut(
            description="Effective member weights of the ensemble at each origin.",
            kinds={"duckdb"},
            metadata=PARTITION_EXPR,
        ),
    },
)
def ensemble(
    context: dg.AssetExecutionContext,
    oof_predictions: pl.DataFrame,
    detected_regimes: pl.DataFrame,
    volatility_forecasts: pl.DataFrame,
    protocol: ProtocolResource,
):
    forecasts, weights, chosen = [], [], []
    for horizon in context.partition_keys:
        oof = oof_predictions.filter(pl.col("horizon") == horizon)
        ctx, _ = horizon_context(horizon, detected_regimes, volatility_forecasts)
        result = horizon_run.ensemble_step(oof, ctx, protocol.config())
        forecasts.append(result.forecasts)
        weights.append(result.member_weights)
        chosen.append(
            result.forecasts.group_by("horizon", "combiner").agg(
                origins=pl.len(), mean_shrink_weight=pl.col("shrink_weight").mean()
            )
        )
    out = pl.concat(forecasts, how="vertical_relaxed")
    yield dg.Output(
        out,
        output_name="ensemble_predictions",
        metadata={
            "dagster/row_count": out.height,
            "combiners_chosen": dg.MetadataValue.md(markdown_table(pl.concat(chosen))),
        },
    )
    w = pl.concat(weights, how="vertical_relaxed")
    yield dg.Output(w, output_name="ensemble_weights", metadata={"dagster/row_count": w.height})


@dg.asset(
    group_name="ensemble",
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    metadata=PARTITION_EXPR,
    kinds={"mapie", "duckdb"},
    description="Conformal target zones (P10..P90, 90% band) for the ensemble and the random "
    "walk, calibrated on walk-forward residuals known at each origin.",
)
def target_zones(
    context: dg.AssetExecutionContext,
    oof_predictions: pl.DataFrame,
    ensemble_predictions: pl.DataFrame,
    detected_regimes: pl.DataFrame,
    volatility_forecasts: pl.DataFrame,
    market_prices: pl.DataFrame,
    features: pl.DataFrame,
    market_source: MarketSourceResource,
    protocol: ProtocolResource,
) -> dg.Output[pl.DataFrame]:
    method = protocol.protocol().zone_method
    target = market_source.target_prices(market_prices)
    history = target.select("date", price="value")
    zones, coverage, windows = [], [], []
    for horizon in context.partition_keys:
        ctx, vol_model = horizon_context(horizon, detected_regimes, volatility_forecasts)
        z = horizon_run.zones_step(
            oof_predictions.filter(pl.col("horizon") == horizon),
            ensemble_predictions.filter(pl.col("horizon") == horizon),
            ctx,
            method,
            history=history,
            features=horizon_frame(features, horizon),
        ).with_columns(vol_model=pl.lit(vol_model))
        context.log.info(f"{horizon}: zones by {method} (volatility model {vol_model})")
        zones.append(z)
        coverage.append(coverage_report(z))
        windows.append(horizon_run.window_coverage(z, WINDOWS))
    out = pl.concat(zones, how="vertical_relaxed")
    cov = pl.concat(coverage, how="vertical_relaxed")
    by_window = pl.concat(windows, how="diagonal_relaxed")
    return dg.Output(
        out,
        metadata={
            "dagster/row_count": out.height,
            "zone_method": method,
            "coverage": dg.MetadataValue.md(markdown_table(cov)),
            "scores_by_window": dg.MetadataValue.md(markdown_table(by_window)),
        },
    )
