"""One horizon's evaluation, step by step: members, ensemble, zones, tables.

The Dagster assets call these steps one per asset; the accuracy benchmark calls them in a row.
Every step sees only what the walk-forward embargo allows; the last origin is `live` (the
forecast users see), produced by the same code as every scored origin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from cbi_platform.ensemble.combiners import EnsembleConfig, EnsembleResult, build_ensemble
from cbi_platform.ensemble.conformal import conformal_zones, coverage_report
from cbi_platform.evaluation import metrics
from cbi_platform.evaluation.origins import OriginPlan, walk_forward_origins, with_live_origin
from cbi_platform.evaluation.walk_forward import (
    RegimeRowFilter,
    run_walk_forward_with_explanations,
)
from cbi_platform.features.contract import DATE, HORIZONS, PRICE, TARGET_LOGRET, feature_columns
from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.registry import RETURN_KINDS, build_model, load_specs
from cbi_platform.regimes.calendar import RegimeCalendar, load_regime_calendar


@dataclass(frozen=True)
class ProtocolConfig:
    """The evaluation protocol shared with the peer benchmark (see the README)."""

    n_origins: int = 60
    span: int = 1512
    end_offset: int = 5
    n_burn_in: int = 100
    n_workers: int = 2
    min_history: int = 30  # resolved rows before the ensemble may leave the random walk


def origin_plan(dates: pl.Series, horizon: str, cfg: ProtocolConfig) -> OriginPlan:
    plan = walk_forward_origins(
        dates, HORIZONS[horizon], cfg.n_origins, cfg.span, cfg.end_offset, cfg.n_burn_in
    )
    return with_live_origin(plan, dates[-1])


def zoo_specs(horizon: str, kinds: tuple[str, ...] = tuple(RETURN_KINDS)) -> list[ModelSpec]:
    return load_specs(horizon=horizon, kinds=list(kinds))


def member_predictions(
    frame: pl.DataFrame,
    regimes: pl.DataFrame,
    horizon: str,
    cfg: ProtocolConfig,
    specs: list[ModelSpec] | None = None,
    calendar: RegimeCalendar | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, OriginPlan]:
    """Walk-forward OOF predictions of every member for one horizon, and the SHAP of each
    feature model at each origin from the model fitted at (or last before) that origin."""
    frame = frame.sort(DATE)
    plan = origin_plan(frame[DATE], horizon, cfg)
    calendar = calendar or load_regime_calendar()
    weights = calendar.label(frame[DATE])["regime_weight"].to_numpy()
    oof, shap = run_walk_forward_with_explanations(
        frame,
        specs if specs is not None else zoo_specs(horizon),
        build_model,
        plan,
        weights=weights,
        n_workers=cfg.n_workers,
        progress=progress,
        row_filter=RegimeRowFilter.from_frame(frame, regimes),
    )
    return oof, shap, plan


def context_frame(
    regimes: pl.DataFrame, vol: pl.DataFrame | None, horizon: str, vol_model: str | None
) -> pl.DataFrame:
    """Per origin: the detected regime and the chosen model's h-day volatility forecast."""
    ctx = regimes.select(pl.col("date").alias("origin"), "regime")
    if vol is not None and vol_model is not None:
        v = vol.filter((pl.col("horizon") == horizon) & (pl.col("model") == vol_model))
        ctx = ctx.join(v.select("origin", vol_forecast="forecast_vol"), on="origin", how="left")
    return ctx


def ensemble_step(oof: pl.DataFrame, context: pl.DataFrame, cfg: ProtocolConfig) -> EnsembleResult:
    return build_ensemble(oof, context, EnsembleConfig(min_history=cfg.min_history))


def ensemble_as_oof(ensemble: pl.DataFrame, oof: pl.DataFrame) -> pl.DataFrame:
    """The ensemble's rows in the members' OOF schema (origin bookkeeping from the random walk)."""
    per_origin = oof.filter(pl.col("model") == "random_walk").select(
        "horizon", "origin", "horizon_days", "origin_row", "naive_scale"
    )
    joined = ensemble.join(per_origin, on=["horizon", "origin"], how="left")
    return joined.with_columns(
        fitted_at=pl.col("origin"), n_train=pl.lit(None, dtype=oof.schema["n_train"])
    ).select(oof.columns)


def zones_step(oof: pl.DataFrame, ensemble: pl.DataFrame, context: pl.DataFrame) -> pl.DataFrame:
    """Conformal zones for the ensemble and, as the benchmark, for the random walk."""
    rw = oof.filter(pl.col("model") == "random_walk")
    extra = [c for c in ("combiner", "shrink_weight", "fallback") if c in ensemble.columns]
    ens = ensemble_as_oof(ensemble, oof).join(
        ensemble.select("horizon", "origin", *extra), on=["horizon", "origin"], how="left"
    )
    both = pl.concat([ens, rw], how="diagonal_relaxed")
    return conformal_zones(both, context)


@dataclass(frozen=True)
class EvaluationTables:
    leaderboard: pl.DataFrame
    by_regime: pl.DataFrame
    by_move_size: pl.DataFrame
    coverage: pl.DataFrame


def evaluation_tables(
    oof: pl.DataFrame,
    ensemble: pl.DataFrame,
    zones: pl.DataFrame,
    regimes: pl.DataFrame,
    spacing_days: float | None,
) -> EvaluationTables:
    """Metrics on scored origins only, every model next to the random walk."""
    everything = pl.concat([oof, ensemble_as_oof(ensemble, oof)], how="vertical_relaxed")
    board = metrics.leaderboard(everything, spacing_days=spacing_days)
    coverage = coverage_report(zones)
    with_regime = everything.join(
        regimes.select(pl.col("date").alias("origin"), "regime"),
        on="origin",
        how="left",
        maintain_order="left",
    ).with_columns(pl.col("regime").fill_null("unlabelled"))
    return EvaluationTables(
        leaderboard=board,
        by_regime=metrics.by_group(with_regime, "regime", spacing_days=spacing_days),
        by_move_size=metrics.by_move_size(everything, spacing_days=spacing_days),
        coverage=coverage,
    )


def fit_final_models(
    frame: pl.DataFrame,
    regimes: pl.DataFrame,
    horizon: str,
    specs: list[ModelSpec] | None = None,
    calendar: RegimeCalendar | None = None,
) -> dict[str, object]:
    """Every member fitted on all rows whose target is known by the last date: the same
    training set the walk-forward used at the live origin. These are the models registered."""
    frame = frame.sort(DATE)
    known = frame[TARGET_LOGRET].is_not_null().to_numpy()
    names = feature_columns(frame)
    X = frame.select(names).cast(pl.Float64).to_numpy()
    y = frame[TARGET_LOGRET].cast(pl.Float64).to_numpy()
    weights = (calendar or load_regime_calendar()).label(frame[DATE])["regime_weight"].to_numpy()
    labels = RegimeRowFilter.from_frame(frame, regimes).labels
    fitted = {}
    for spec in specs if specs is not None else zoo_specs(horizon):
        mask = known & (labels == spec.regime) if spec.regime else known
        data = FitData(
            X=X[mask],
            y=y[mask],
            prices=frame[PRICE].to_numpy(),
            horizon_days=HORIZONS[horizon],
            feature_names=names,
            sample_weight=weights[mask] if spec.weighted else None,
        )
        fitted[spec.name] = build_model(spec).fit(data)
    return fitted
