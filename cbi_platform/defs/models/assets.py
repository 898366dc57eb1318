"""Model assets: walk-forward volatility, and every member's out-of-fold predictions with SHAP."""

import time

import dagster as dg
import polars as pl

from cbi_platform.defs.partitions import PARTITION_EXPR, horizon_backfill, horizon_partitions
from cbi_platform.defs.resources import MarketSourceResource, MlflowResource, ProtocolResource
from cbi_platform.evaluation import horizon_run
from cbi_platform.evaluation.metrics import leaderboard
from cbi_platform.evaluation.volatility_eval import score_volatility, volatility_walk_forward
from cbi_platform.explain.shap_tables import coverage_table
from cbi_platform.features.contract import HORIZONS, horizon_frame
from cbi_platform.market.schema import target_series
from cbi_platform.reporting import markdown_table


@dg.asset(
    group_name="models",
    kinds={"arch", "polars", "duckdb"},
    description="GARCH(1,1) and GJR-GARCH h-day volatility at every walk-forward origin, all "
    "horizons from one fit, scored against realised volatility.",
)
def volatility_forecasts(
    context: dg.AssetExecutionContext,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    protocol: ProtocolResource,
) -> dg.Output[pl.DataFrame]:
    target = target_series(market_prices, market_source.target())
    plan = horizon_run.origin_plan(target["date"], "1w", protocol.config())
    started = time.perf_counter()
    frame = volatility_walk_forward(target["value"].to_numpy(), plan, dict(HORIZONS))
    scores = score_volatility(frame)
    context.log.info(
        f"volatility: {plan.n_origins} origins x {frame['model'].n_unique() - 1} models (+ naive) "
        f"in {time.perf_counter() - started:.1f}s"
    )
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": frame.height,
            "scores": dg.MetadataValue.md(markdown_table(scores)),
        },
    )


@dg.multi_asset(
    group_name="models",
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    outs={
        "oof_predictions": dg.AssetOut(
            description="Walk-forward out-of-fold predictions of every member (embargo >= h).",
            kinds={"lightgbm", "xgboost", "statsmodels", "duckdb"},
            metadata=PARTITION_EXPR,
        ),
        "oof_shap": dg.AssetOut(
            description="SHAP contributions of each tree/linear member at each origin, from the "
            "model fitted at that origin.",
            kinds={"shap", "duckdb"},
            metadata=PARTITION_EXPR,
        ),
    },
)
def member_models(
    context: dg.AssetExecutionContext,
    features: pl.DataFrame,
    detected_regimes: pl.DataFrame,
    protocol: ProtocolResource,
    mlflow: MlflowResource,
):
    cfg = protocol.config()
    tracker = mlflow.tracker()
    oofs, shaps, boards, links = [], [], [], {}
    for horizon in context.partition_keys:
        frame = horizon_frame(features, horizon)
        specs = horizon_run.zoo_specs(horizon, tuple(protocol.model_kinds))
        context.log.info(f"{horizon}: walk-forward of {len(specs)} models on {frame.height} rows")
        started = time.perf_counter()
        oof, shap, plan = horizon_run.member_predictions(
            frame, detected_regimes, horizon, cfg, specs=specs, progress=context.log.info
        )
        board = leaderboard(oof, spacing_days=plan.spacing_days)
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.partition": horizon,
            "dagster.asset": "oof_predictions",
        }
        if plan.notice:
            context.log.warning(plan.notice)
        with tracker.run(f"oof_predictions[{horizon}]", tags) as run_id:
            tracker.log_params(
                run_id, {"protocol_hash": cfg.protocol.hash(), **cfg.protocol.as_dict()}
            )
            tracker.log_metrics(
                run_id,
                {
                    "seconds": time.perf_counter() - started,
                    "n_models": len(specs),
                    "n_origins": plan.n_origins,
                },
            )
            tracker.log_walk_forward(
                run_id,
                oof,
                board,
                {
                    s.name: {
                        **s.params,
                        "family": s.family,
                        "kind": s.kind,
                        "weighted": s.weighted,
                        "refit_every": s.refit_every,
                    }
                    for s in specs
                },
                tags,
            )
            links[horizon] = tracker.run_url(mlflow.ui_url, run_id)
        oofs.append(oof)
        shaps.append(shap)
        boards.append(board)
    oof_all, shap_all = pl.concat(oofs), pl.concat(shaps, how="vertical_relaxed")
    board_all = pl.concat(boards).select(
        "horizon", "model", "n", "mape", "mase", "rel_mae", "dm_pvalue", "directional_accuracy"
    )
    yield dg.Output(
        oof_all,
        output_name="oof_predictions",
        metadata={
            "dagster/row_count": oof_all.height,
            "models": oof_all["model"].n_unique(),
            "protocol_hash": cfg.protocol.hash(),
            "protocol": dg.MetadataValue.json(cfg.protocol.as_dict()),
            "origins_by_window": dg.MetadataValue.json(
                oof_all.filter(pl.col("model") == "random_walk")
                .group_by("horizon", "role")
                .len()
                .sort("horizon", "role")
                .to_dicts()
            ),
            "fallbacks": dg.MetadataValue.json(
                oof_all.filter(pl.col("fallback_reason").is_not_null())
                .group_by("horizon", "model")
                .len()
                .to_dicts()
            ),
            "members_vs_random_walk": dg.MetadataValue.md(markdown_table(board_all)),
            "mlflow_runs": dg.MetadataValue.json(links),
            **{f"mlflow_{h}": dg.MetadataValue.url(u) for h, u in links.items()},
        },
    )
    yield dg.Output(
        shap_all,
        output_name="oof_shap",
        metadata={
            "dagster/row_count": shap_all.height,
            "shap_coverage": dg.MetadataValue.md(markdown_table(coverage_table(shap_all))),
        },
    )
