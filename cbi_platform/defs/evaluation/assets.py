"""The leaderboard: every model and the ensemble next to the random walk, scored origins only."""

import dagster as dg
import polars as pl

from cbi_platform.defs.partitions import PARTITION_EXPR, horizon_backfill, horizon_partitions
from cbi_platform.defs.resources import MlflowResource
from cbi_platform.evaluation import horizon_run
from cbi_platform.evaluation.metrics import REPORTED_METRICS
from cbi_platform.evaluation.plots import error_by_origin_png
from cbi_platform.reporting import markdown_table, png_markdown

SHOWN = REPORTED_METRICS


@dg.asset(
    group_name="evaluation",
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    metadata=PARTITION_EXPR,
    kinds={"polars", "duckdb", "mlflow"},
    description="MAPE, sMAPE, RMSE, MASE, directional accuracy, relative MAE, skill and DM test "
    "versus the random walk, per model; breakdowns by detected regime and move size.",
)
def model_leaderboard(
    context: dg.AssetExecutionContext,
    oof_predictions: pl.DataFrame,
    ensemble_predictions: pl.DataFrame,
    target_zones: pl.DataFrame,
    detected_regimes: pl.DataFrame,
    mlflow: MlflowResource,
) -> dg.Output[pl.DataFrame]:
    tracker = mlflow.tracker()
    boards, md, links = [], {}, {}
    for horizon in context.partition_keys:
        oof = oof_predictions.filter(pl.col("horizon") == horizon)
        ens = ensemble_predictions.filter(pl.col("horizon") == horizon)
        zones = target_zones.filter(pl.col("horizon") == horizon)
        tables = horizon_run.evaluation_tables(oof, ens, zones, detected_regimes, None)
        board = tables.leaderboard.sort("rel_mae", nulls_last=True)
        boards.append(board)
        plot_oof = pl.concat([oof, horizon_run.ensemble_as_oof(ens, oof)], how="vertical_relaxed")
        best = [m for m in board["model"].to_list() if m not in ("random_walk",)][:3]
        png = error_by_origin_png(plot_oof, sorted(set(best) | {"ensemble"}), horizon=horizon)
        cols = ["model"] + [c for c in SHOWN if c in board.columns]
        md[f"leaderboard_{horizon}"] = dg.MetadataValue.md(markdown_table(board.select(cols)))
        md[f"error_by_origin_{horizon}"] = dg.MetadataValue.md(
            png_markdown(png, f"error by origin {horizon}")
        )
        md[f"by_regime_{horizon}"] = dg.MetadataValue.md(
            markdown_table(
                tables.by_regime.filter(pl.col("model").is_in(["ensemble", "random_walk"]))
            )
        )
        md[f"by_move_size_{horizon}"] = dg.MetadataValue.md(
            markdown_table(
                tables.by_move_size.filter(pl.col("model").is_in(["ensemble", "random_walk"]))
            )
        )
        md[f"coverage_{horizon}"] = dg.MetadataValue.md(markdown_table(tables.coverage))
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.partition": horizon,
            "dagster.asset": "model_leaderboard",
        }
        with tracker.run(f"model_leaderboard[{horizon}]", tags) as run_id:
            for row in board.to_dicts():
                tracker.log_metrics(
                    run_id,
                    {
                        f"{row['model']}.{k}": row[k]
                        for k in SHOWN
                        if k in row and isinstance(row[k], int | float)
                    },
                )
            links[horizon] = tracker.run_url(mlflow.ui_url, run_id)
    out = pl.concat(boards, how="vertical_relaxed")
    ens_rows = out.filter(pl.col("model") == "ensemble")
    return dg.Output(
        out,
        metadata={
            "dagster/row_count": out.height,
            "ensemble_rel_mae": dg.MetadataValue.json(
                dict(zip(ens_rows["horizon"], ens_rows["rel_mae"], strict=True))
            ),
            **md,
            **{f"mlflow_{h}": dg.MetadataValue.url(u) for h, u in links.items()},
        },
    )
