"""One horizon's evaluation, step by step: members, ensemble, zones, tables.

The Dagster assets call these steps one per asset; the accuracy benchmark calls them in a row.
Every step sees only what the walk-forward embargo allows; the last origin is `live` (the
forecast users see), produced by the same code as every scored origin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from cbi_platform.ensemble.combiners import EnsembleConfig, EnsembleResult, build_ensemble
from cbi_platform.ensemble.conformal import coverage_report
from cbi_platform.ensemble.zone_methods import target_zones, zone_scores
from cbi_platform.evaluation import metrics, walk_forward
from cbi_platform.evaluation.origins import OriginPlan, protocol_origins, with_live_origin
from cbi_platform.evaluation.walk_forward import RegimeRowFilter
from cbi_platform.explain.shap_tables import explain_row
from cbi_platform.features.contract import DATE, HORIZONS, PRICE, TARGET_LOGRET, feature_columns
from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.fit_cache import fit_member
from cbi_platform.models.registry import RETURN_KINDS, build_model, load_specs
from cbi_platform.regimes.calendar import (
    PointInTimeWeights,
    RegimeCalendar,
    load_regime_calendar,
)
from cbi_platform.settings import Protocol, load_protocol


@dataclass(frozen=True)
class ProtocolConfig:
    """The frozen protocol (cbi_platform/protocol.yaml) plus how this run executes it."""

    protocol: Protocol = field(default_factory=load_protocol)
    n_workers: int = 2
    refit_phase: int = 0  # shifts every refit schedule; the benchmark's noise spread only
    fit_cache: str | None = None  # folder of fitted networks shared by steps (models/fit_cache)

    @property
    def min_history(self) -> int:
        return self.protocol.min_history


def origin_plan(dates: pl.Series, horizon: str, cfg: ProtocolConfig) -> OriginPlan:
    """The protocol's grid origins on this date index, plus the live origin (the last date)."""
    plan = protocol_origins(dates, HORIZONS[horizon], cfg.protocol)
    return with_live_origin(plan, dates[-1])


def zoo_specs(
    horizon: str,
    kinds: tuple[str, ...] = tuple(RETURN_KINDS),
    path: str | None = None,
    zoo: str = "core",
) -> list[ModelSpec]:
    return load_specs(path, horizon=horizon, kinds=list(kinds), zoo=zoo)


@dataclass(frozen=True)
class MemberRun:
    """One walk-forward of some members on one horizon: OOF rows, their SHAP, the plan, and a
    per-model report of fits and time (`walk_forward.FIT_REPORT_SCHEMA`)."""

    oof: pl.DataFrame
    shap: pl.DataFrame
    plan: OriginPlan
    fits: pl.DataFrame


def member_walk_forward(
    frame: pl.DataFrame,
    regimes: pl.DataFrame,
    horizon: str,
    cfg: ProtocolConfig,
    specs: list[ModelSpec] | None = None,
    calendar: RegimeCalendar | None = None,
    progress: Callable[[str], None] | None = None,
    isolate: bool = False,
) -> MemberRun:
    """Walk-forward OOF predictions of the members for one horizon, the SHAP of each feature
    model at each origin from the model fitted at (or last before) that origin (its
    `contributions()` hook), and the fit report."""
    frame = frame.sort(DATE)
    plan = origin_plan(frame[DATE], horizon, cfg)
    if plan.notice and progress is not None:
        progress(f"notice: {plan.notice}")
    specs = specs if specs is not None else zoo_specs(horizon)
    # Point in time: at each refit the calendar is read as it was known at that origin.
    weights = PointInTimeWeights(calendar or load_regime_calendar(), frame[DATE])
    row_filter = RegimeRowFilter.from_frame(frame, regimes)
    prepared = walk_forward.prepare(frame, specs, plan, weights, row_filter)
    results = walk_forward.execute(
        prepared,
        specs,
        build_model,
        cfg.n_workers,
        progress,
        row_filter,
        explain=explain_row,
        refit_phase=cfg.refit_phase,
        fit_cache=cfg.fit_cache,
        isolate=isolate,
    )
    oof = walk_forward.assemble(prepared, specs, results)
    shap = walk_forward.explanation_frame(specs, prepared.arrays, prepared.extras, results)
    return MemberRun(oof, shap, plan, walk_forward.fit_report(specs, results))


def member_predictions(
    frame: pl.DataFrame,
    regimes: pl.DataFrame,
    horizon: str,
    cfg: ProtocolConfig,
    specs: list[ModelSpec] | None = None,
    calendar: RegimeCalendar | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, OriginPlan]:
    """(oof, shap, plan) of `member_walk_forward`."""
    run = member_walk_forward(frame, regimes, horizon, cfg, specs, calendar, progress)
    return run.oof, run.shap, run.plan


def context_frame(
    regimes: pl.DataFrame, vol: pl.DataFrame | None, horizon: str, vol_model: str | None
) -> pl.DataFrame:
    """Per origin: the detected regime and the chosen model's h-day volatility forecast."""
    ctx = regimes.select(pl.col("date").alias("origin"), "regime")
    if vol is not None and vol_model is not None:
        v = vol.filter((pl.col("horizon") == horizon) & (pl.col("model") == vol_model))
        ctx = ctx.join(v.select("origin", vol_forecast="forecast_vol"), on="origin", how="left")
    return ctx


def ensemble_config(cfg: ProtocolConfig) -> EnsembleConfig:
    """The combiner settings the protocol fixes: one place for the ensemble step and for the
    state a registered version exports, so the two can never disagree."""
    return EnsembleConfig(min_history=cfg.min_history)


def ensemble_step(oof: pl.DataFrame, context: pl.DataFrame, cfg: ProtocolConfig) -> EnsembleResult:
    return build_ensemble(oof, context, ensemble_config(cfg))


def ensemble_as_oof(ensemble: pl.DataFrame, oof: pl.DataFrame) -> pl.DataFrame:
    """The ensemble's rows in the members' OOF schema (origin bookkeeping from the random walk)."""
    per_origin = oof.filter(pl.col("model") == "random_walk").select(
        "horizon", "origin", "horizon_days", "origin_row", "naive_scale"
    )
    joined = ensemble.join(per_origin, on=["horizon", "origin"], how="left")
    filled = joined.with_columns(
        fitted_at=pl.col("origin"), n_train=pl.lit(None, dtype=oof.schema["n_train"])
    )
    missing = [c for c in oof.columns if c not in filled.columns]  # e.g. fallback_reason
    filled = filled.with_columns(pl.lit(None, dtype=oof.schema[c]).alias(c) for c in missing)
    return filled.select(oof.columns)


def zones_step(
    oof: pl.DataFrame,
    ensemble: pl.DataFrame,
    context: pl.DataFrame,
    method: str = "split",
    history: pl.DataFrame | None = None,
    features: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Target zones by the protocol's method for the ensemble and, as the benchmark, for the
    random walk. `history` (date, price of the target) and `features` feed the methods that
    calibrate on the whole price history or on quantile models."""
    rw = oof.filter(pl.col("model") == "random_walk")
    extra = [c for c in ("combiner", "shrink_weight", "fallback") if c in ensemble.columns]
    ens = ensemble_as_oof(ensemble, oof).join(
        ensemble.select("horizon", "origin", *extra), on=["horizon", "origin"], how="left"
    )
    both = pl.concat([ens, rw], how="diagonal_relaxed")
    return target_zones(both, context, method, history=history, features=features)


def window_coverage(zones: pl.DataFrame, windows: dict[str, tuple[str, ...]]) -> pl.DataFrame:
    """Coverage, widths, interval score and pinball loss per model, horizon and window."""
    parts = []
    for name, roles in windows.items():
        table = zone_scores(zones, roles=roles)
        if table.height:
            parts.append(table.with_columns(window=pl.lit(name)))
    if not parts:
        return pl.DataFrame()
    out = pl.concat(parts, how="diagonal_relaxed")
    return out.select("window", *[c for c in out.columns if c != "window"])


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
    fit_cache: str | None = None,
) -> dict[str, object]:
    """Every member fitted on all rows whose target is known by the last date: the same
    training set the walk-forward used at the live origin. These are the models registered."""
    frame = frame.sort(DATE)
    known = frame[TARGET_LOGRET].is_not_null().to_numpy()
    names = feature_columns(frame)
    X = frame.select(names).cast(pl.Float64).to_numpy()
    y = frame[TARGET_LOGRET].cast(pl.Float64).to_numpy()
    # The calendar as known at the last date (the live origin), as in the walk-forward.
    weights = (calendar or load_regime_calendar()).weights_at(frame[DATE], frame[DATE][-1])
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
            history=X,
            train_rows=np.flatnonzero(mask),
        )
        fitted[spec.name] = fit_member(spec, data, build_model, fit_cache)
    return fitted
