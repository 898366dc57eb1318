"""Model assets: walk-forward volatility; each model group's out-of-fold predictions (its own
step per horizon, the seam the `gpu` pool and parallel executors attach to); and their union,
which the ensemble, zones, leaderboard and forecasts read.

Groups (models/registry.py GROUPS): benchmarks, statistical, trees, specialists, neural. Every
group that trains a network runs in the single-slot `gpu` pool. Backfill one group for one
horizon from the UI by materializing `oof_<group>[h]`, then `oof_predictions[h]` downstream.
"""

import time

import dagster as dg
import polars as pl

from cbi_platform.defs.partitions import PARTITION_EXPR, horizon_backfill, horizon_partitions
from cbi_platform.defs.resources import (
    GpuResource,
    MarketSourceResource,
    MlflowResource,
    ProtocolResource,
)
from cbi_platform.evaluation import horizon_run
from cbi_platform.evaluation.metrics import leaderboard
from cbi_platform.evaluation.volatility_eval import score_volatility, volatility_walk_forward
from cbi_platform.evaluation.walk_forward import (
    FIT_REPORT_SCHEMA,
    OOF_SCHEMA,
    environment,
    in_spawned_process,
)
from cbi_platform.explain.shap_tables import SHAP_TABLE_SCHEMA, coverage_table
from cbi_platform.features.contract import HORIZONS, horizon_frame
from cbi_platform.models.registry import GPU_GROUPS, GROUPS, load_specs
from cbi_platform.reporting import markdown_table

NEURAL_VOL_FAMILIES = ("lstm_vol",)  # trained in the gpu pool by `neural_volatility`


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
    target = market_source.target_prices(market_prices)
    plan = horizon_run.origin_plan(target["date"], "1w", protocol.config())
    started = time.perf_counter()
    specs = [s for s in load_specs(kinds=["volatility"]) if s.family not in NEURAL_VOL_FAMILIES]
    frame = volatility_walk_forward(target["value"].to_numpy(), plan, dict(HORIZONS), specs)
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


@dg.asset(
    group_name="models",
    kinds={"keras", "polars", "duckdb"},
    pool="gpu",
    description="A small LSTM on realised volatility (specs.yaml family lstm_vol), on a recorded "
    "schedule of at most max_fits fits, scored beside GARCH and GJR-GARCH against realised "
    "volatility. Zones keep the GARCH family (no Keras fit at every refresh).",
)
def neural_volatility(
    context: dg.AssetExecutionContext,
    market_prices: pl.DataFrame,
    volatility_forecasts: pl.DataFrame,
    market_source: MarketSourceResource,
    protocol: ProtocolResource,
    gpu: GpuResource,
) -> dg.Output[pl.DataFrame]:
    specs = [s for s in load_specs(kinds=["volatility"]) if s.family in NEURAL_VOL_FAMILIES]
    if "neural" not in protocol.model_kinds or not specs:
        context.log.info("neural volatility: networks are not in this run's model_kinds")
        return dg.Output(
            volatility_forecasts.clear(),
            metadata={"dagster/row_count": 0, "skipped": "networks not in model_kinds"},
        )
    target = market_source.target_prices(market_prices)
    plan = horizon_run.origin_plan(target["date"], "1w", protocol.config())
    started = time.perf_counter()
    # In a spawned process, like every network fit: TensorFlow never loads in this one.
    frame = in_spawned_process(
        volatility_walk_forward,
        target["value"].to_numpy(),
        plan,
        dict(HORIZONS),
        specs,
        env=gpu.environment(),
    )
    names = [s.name for s in specs]
    frame = frame.filter(pl.col("model").is_in(names))
    seconds = time.perf_counter() - started
    context.log.info(f"neural volatility: {names} in {seconds:.1f}s")
    both = pl.concat([volatility_forecasts, frame], how="diagonal_relaxed")
    metadata = {
        "dagster/row_count": frame.height,
        "seconds": seconds,
        "fits": frame["fit_origin"].n_unique() if "fit_origin" in frame.columns else None,
    }
    for role in ("development", "scored"):
        metadata[f"scores_{role}"] = dg.MetadataValue.md(
            markdown_table(score_volatility(both, role=role))
        )
    return dg.Output(frame, metadata=metadata)


GPU_POOL = "gpu"
# Groups whose models read features, so their step also writes SHAP tables.
EXPLAINED_GROUPS = ("trees", "specialists", "neural")


def _fit_metadata(report: pl.DataFrame) -> dict:
    """Per model: fits, seconds; for networks also device, precision, epochs, peak memory."""
    meta: dict = {"fit_seconds_total": float(report["seconds"].sum()) if report.height else 0.0}
    if report.height:
        meta["fits"] = dg.MetadataValue.md(markdown_table(report))
        networks = report.filter(pl.col("device").is_not_null())
        if networks.height:
            meta["device"] = str(networks["device"][0])
            meta["precision"] = str(networks["precision"][0])
            meta["peak_memory_mb"] = float(networks["peak_memory_mb"].max())
            meta["epochs_mean"] = float(networks["epochs_mean"].mean())
    return meta


def run_group(
    context: dg.AssetExecutionContext,
    group: str,
    features: pl.DataFrame,
    detected_regimes: pl.DataFrame,
    protocol: ProtocolResource,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(oof, shap, fit report) of one group's members at every horizon of the run."""
    cfg = protocol.config()
    kinds = GROUPS[group]
    oofs, shaps, reports = [], [], []
    horizons = list(context.partition_keys)
    specs_by_h = {h: protocol.specs(h, kinds) for h in horizons}
    if group == "statistical" and len([h for h in horizons if specs_by_h[h]]) > 1:
        return _shared_statistical(context, features, specs_by_h, cfg)
    for horizon in horizons:
        specs = specs_by_h[horizon]
        if not specs:
            context.log.info(f"{group} {horizon}: no members of kinds {kinds} in this run")
            continue
        frame = horizon_frame(features, horizon)
        context.log.info(
            f"{group} {horizon}: walk-forward of {len(specs)} models on {frame.height} rows"
        )
        run = horizon_run.member_walk_forward(
            frame,
            detected_regimes,
            horizon,
            cfg,
            specs=specs,
            progress=context.log.info,
            isolate=group in GPU_GROUPS,  # networks train in spawned processes, always
        )
        if run.plan.notice:
            context.log.warning(run.plan.notice)
        oofs.append(run.oof)
        shaps.append(run.shap)
        reports.append(run.fits)
    oof = pl.concat(oofs) if oofs else pl.DataFrame(schema=OOF_SCHEMA)
    shap = (
        pl.concat(shaps, how="vertical_relaxed")
        if shaps
        else pl.DataFrame(schema=SHAP_TABLE_SCHEMA)
    )
    report = pl.concat(reports) if reports else pl.DataFrame(schema=FIT_REPORT_SCHEMA)
    return oof, shap, report


def _shared_statistical(context, features: pl.DataFrame, specs_by_h: dict, cfg):
    """ARIMA, ETS and Theta do not depend on the horizon: with several horizons in one run
    they are fitted once per origin and forecast every horizon from that fit."""
    from cbi_platform.evaluation.shared_fits import empty_explanations, run_shared_walk_forward

    horizons = [h for h, specs in specs_by_h.items() if specs]
    frames = {h: horizon_frame(features, h).sort("date") for h in horizons}
    plans = {h: horizon_run.origin_plan(frames[h]["date"], h, cfg) for h in horizons}
    specs = list({s.name: s for h in horizons for s in specs_by_h[h]}.values())
    spec_horizons = {s.name: [h for h in horizons if s in specs_by_h[h]] for s in specs}
    context.log.info(
        f"statistical: {len(specs)} models fitted once per origin for {', '.join(horizons)}"
    )
    started = time.perf_counter()
    oof = run_shared_walk_forward(
        frames,
        specs,
        plans,
        spec_horizons=spec_horizons,
        n_workers=cfg.n_workers,
        progress=context.log.info,
        refit_phase=cfg.refit_phase,
    )
    report = pl.DataFrame(
        [
            {
                "horizon": ",".join(spec_horizons[s.name]),
                "model": s.name,
                "n_origins": oof.filter(pl.col("model") == s.name)["origin"].n_unique(),
                "n_fits": oof.filter(pl.col("model") == s.name)["fitted_at"].n_unique(),
                "seconds": None,
            }
            for s in specs
        ],
        schema={
            k: FIT_REPORT_SCHEMA[k] for k in ("horizon", "model", "n_origins", "n_fits", "seconds")
        },
    ).with_columns(seconds=pl.lit(time.perf_counter() - started) / len(specs))
    report = report.select(
        [
            pl.col(c) if c in report.columns else pl.lit(None, dtype=t).alias(c)
            for c, t in FIT_REPORT_SCHEMA.items()
        ]
    )
    return oof, empty_explanations(), report


def _group_outputs(group: str, oof: pl.DataFrame, shap: pl.DataFrame, report: pl.DataFrame):
    board = (
        leaderboard(oof).select("horizon", "model", "n", "mase", "rel_mae", "dm_pvalue")
        if oof.height
        else None
    )
    yield dg.Output(
        oof,
        output_name=f"oof_{group}",
        metadata={
            "dagster/row_count": oof.height,
            "models": oof["model"].n_unique() if oof.height else 0,
            **(
                {"vs_random_walk": dg.MetadataValue.md(markdown_table(board))}
                if board is not None
                else {}
            ),
            **_fit_metadata(report),
        },
    )
    if group in EXPLAINED_GROUPS:
        yield dg.Output(
            shap,
            output_name=f"shap_{group}",
            metadata={"dagster/row_count": shap.height},
        )


def _outs(group: str) -> dict[str, dg.AssetOut]:
    outs = {
        f"oof_{group}": dg.AssetOut(
            description=f"Walk-forward out-of-fold predictions of the {group} group "
            f"(kinds {', '.join(GROUPS[group])}; embargo >= h).",
            metadata=PARTITION_EXPR,
            kinds={"duckdb"},
        )
    }
    if group in EXPLAINED_GROUPS:
        outs[f"shap_{group}"] = dg.AssetOut(
            description=f"SHAP of each {group} member at each origin, from the model fitted "
            "at that origin (the model's contributions() hook).",
            metadata=PARTITION_EXPR,
            kinds={"shap", "duckdb"},
        )
    return outs


def member_group_asset(group: str) -> dg.AssetsDefinition:
    """One group's step: its members' walk-forward for every horizon partition of the run."""
    common = dict(
        name=f"members_{group}",
        group_name="models",
        partitions_def=horizon_partitions,
        backfill_policy=horizon_backfill,
        outs=_outs(group),
        can_subset=False,
    )
    if group in GPU_GROUPS:

        @dg.multi_asset(**common, pool=GPU_POOL)
        def _gpu_group(
            context: dg.AssetExecutionContext,
            features: pl.DataFrame,
            detected_regimes: pl.DataFrame,
            protocol: ProtocolResource,
            gpu: GpuResource,
        ):
            with environment(gpu.environment()):
                outputs = run_group(context, group, features, detected_regimes, protocol)
            yield from _group_outputs(group, *outputs)

        return _gpu_group

    @dg.multi_asset(**common)
    def _cpu_group(
        context: dg.AssetExecutionContext,
        features: pl.DataFrame,
        detected_regimes: pl.DataFrame,
        protocol: ProtocolResource,
    ):
        yield from _group_outputs(
            group, *run_group(context, group, features, detected_regimes, protocol)
        )

    return _cpu_group


MEMBER_GROUP_ASSETS = [member_group_asset(group) for group in GROUPS]
MEMBERS_STATISTICAL = next(a for a in MEMBER_GROUP_ASSETS if a.op.name == "members_statistical")


@dg.multi_asset(
    group_name="models",
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    ins={
        **{f"oof_{g}": dg.AssetIn() for g in GROUPS},
        **{f"shap_{g}": dg.AssetIn() for g in EXPLAINED_GROUPS},
    },
    outs={
        "oof_predictions": dg.AssetOut(
            description="Walk-forward out-of-fold predictions of every member, all groups "
            "(embargo >= h): what the ensemble, zones and leaderboard read.",
            kinds={"polars", "duckdb"},
            metadata=PARTITION_EXPR,
        ),
        "oof_shap": dg.AssetOut(
            description="SHAP contributions of each feature member at each origin, all groups.",
            kinds={"shap", "duckdb"},
            metadata=PARTITION_EXPR,
        ),
    },
)
def member_models(
    context: dg.AssetExecutionContext,
    protocol: ProtocolResource,
    mlflow: MlflowResource,
    **groups: pl.DataFrame,
):
    cfg = protocol.config()
    tracker = mlflow.tracker()
    horizons = list(context.partition_keys)
    oof_all = pl.concat(
        [groups[f"oof_{g}"].filter(pl.col("horizon").is_in(horizons)) for g in GROUPS],
        how="vertical_relaxed",
    ).sort("horizon", "model", "origin")
    duplicated = oof_all.select("horizon", "model", "origin").is_duplicated()
    if duplicated.any():
        names = sorted(set(oof_all.filter(duplicated)["model"].to_list()))
        raise ValueError(f"members {names} appear in more than one group's OOF table")
    shap_all = pl.concat(
        [groups[f"shap_{g}"].filter(pl.col("horizon").is_in(horizons)) for g in EXPLAINED_GROUPS],
        how="vertical_relaxed",
    )
    boards, links = [], {}
    for horizon in horizons:
        oof = oof_all.filter(pl.col("horizon") == horizon)
        if oof.filter(pl.col("model") == "random_walk").height == 0:
            raise ValueError(
                f"{horizon}: no random_walk rows; materialize oof_benchmarks[{horizon}] first "
                "(every consumer scales and falls back on the random walk)"
            )
        board = leaderboard(oof, spacing_days=float(cfg.protocol.step))
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.partition": horizon,
            "dagster.asset": "oof_predictions",
        }
        specs = protocol.specs(horizon)
        with tracker.run(f"oof_predictions[{horizon}]", tags) as run_id:
            tracker.log_params(
                run_id, {"protocol_hash": cfg.protocol.hash(), **cfg.protocol.as_dict()}
            )
            tracker.log_metrics(
                run_id,
                {
                    "n_models": oof["model"].n_unique(),
                    "n_origins": oof.filter(pl.col("model") == "random_walk").height,
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
        boards.append(board)
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
