"""Walk-forward of the statistical models with one fit per origin, shared by every horizon.

ARIMA, ETS and Theta (`cbi_platform/models/statistical.py`) are estimated on the log close
alone: the estimate at an origin does not depend on the horizon, only the forecast does. The
per-horizon engine (`walk_forward.run_walk_forward`) still estimates them once per (horizon,
origin); here each spec is estimated once per fit date and every horizon reads its forecast
off one forecast path (`fit_horizons` / `forecast_horizons`), as statsforecast does.

The OOF rows are exactly the engine's. `walk_forward.prepare` builds the arrays, embargo
masks and per-origin extras of every horizon and `walk_forward.assemble` the OOF frame
(`OOF_SCHEMA`), so naive_scale, roles, fitted_at, n_train and fallback_reason are the
engine's own. Only the origin loop differs:

1. per (spec, horizon) the engine's schedule is replayed: `walk_forward.refit_due` with
   `spec.refit_every` and `refit_phase` on the horizon's plan (the live origin always
   refits), a refit only with >= `min_train_rows` embargoed training rows (the rows the
   engine records as n_train, though the model itself reads only the closes);
2. the fit dates are the union over horizons of those refits: one estimate per date, on the
   closes up to it (`prices[: row + 1]`, which must be identical in every horizon's frame:
   checked, a ValueError otherwise);
3. every origin of every horizon is forecast by the fit its schedule uses, with one forecast
   path per (fit, origin) for all horizons there. Fallbacks (failed or skipped fit, failed
   update, non-finite step) are tracked per horizon exactly as separate models would.

Specs run in-process (`n_workers=1`) or one task per spec in `n_workers` spawned processes
with one thread each (`walk_forward.SINGLE_THREAD_ENV`). Only statistical families are
accepted; any other spec is a ValueError naming it.

Explanations: statistical models have no features, so there are no SHAP rows;
`empty_explanations()` is the empty table (`SHAP_TABLE_SCHEMA`) a caller of
`run_walk_forward_with_explanations` expects in its place, and `shared_member_predictions`
returns it beside the OOF frame, like `horizon_run.member_predictions`.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from cbi_platform.evaluation.origins import OriginPlan
from cbi_platform.evaluation.walk_forward import (
    OOF_SCHEMA,
    SINGLE_THREAD_ENV,
    PreparedWalkForward,
    _days,
    _horizon_order,
    _init_worker,
    _SpecResult,
    _training_mask,
    assemble,
    may_start_processes,
    prepare,
    refit_due,
)
from cbi_platform.evaluation.walk_forward import (
    environment as _env,
)
from cbi_platform.features.contract import DATE, HORIZON
from cbi_platform.models.base import ModelSpec

if TYPE_CHECKING:
    from cbi_platform.evaluation.horizon_run import ProtocolConfig

STATISTICAL_FAMILIES = frozenset({"arima", "ets", "theta"})


@dataclass
class _HorizonSchedule:
    """One horizon's replay of the engine's schedule for one spec (picklable, small)."""

    horizon: str
    horizon_days: int
    origin_rows: np.ndarray  # row of each origin in the shared close history
    fitted_at: np.ndarray  # origin position of the fit in use at each origin; -1: none yet
    n_train: np.ndarray  # embargoed training rows of that fit; -1: none yet


@dataclass
class _SharedSpecResult:
    per_horizon: dict[str, _SpecResult]
    n_fits: int  # estimates made (one per fit date)
    n_fits_per_horizon_engine: int  # what the per-horizon engine would have made
    seconds: float


def empty_explanations() -> pl.DataFrame:
    """The (empty) explanation table of models without features (`SHAP_TABLE_SCHEMA`)."""
    from cbi_platform.explain.shap_tables import SHAP_TABLE_SCHEMA

    return pl.DataFrame(schema=SHAP_TABLE_SCHEMA)


def check_statistical(specs: Sequence[ModelSpec]) -> None:
    """ValueError unless every spec is a statistical family without a regime."""
    bad = [f"{s.name} ({s.family})" for s in specs if s.family not in STATISTICAL_FAMILIES]
    if bad:
        raise ValueError(
            f"shared fits are only for the statistical families {sorted(STATISTICAL_FAMILIES)}; "
            f"not for {', '.join(bad)}: run those with walk_forward.run_walk_forward"
        )
    specialists = [s.name for s in specs if s.regime is not None]
    if specialists:
        raise ValueError(f"shared fits take no regime specialists: {specialists}")


def _split_frames(
    frames: pl.DataFrame | Mapping[str, pl.DataFrame],
) -> dict[str, pl.DataFrame]:
    if isinstance(frames, pl.DataFrame):
        if HORIZON not in frames.columns:
            raise ValueError(f"frame lacks column {HORIZON!r}")
        return {
            h: frames.filter(pl.col(HORIZON) == h)
            for h in _horizon_order(frames[HORIZON].unique().to_list())
        }
    out = {}
    for h in _horizon_order(list(frames)):
        frame = frames[h]
        if HORIZON not in frame.columns:
            raise ValueError(f"frame for {h} lacks column {HORIZON!r}")
        found = frame[HORIZON].unique().to_list()
        if found != [h]:
            raise ValueError(f"the frame given for horizon {h} holds horizons {sorted(found)}")
        out[h] = frame
    return out


def _plan_for(plans: OriginPlan | Mapping[str, OriginPlan], horizon: str) -> OriginPlan:
    if isinstance(plans, OriginPlan):
        return plans
    if horizon not in plans:
        raise ValueError(f"no origin plan for horizon {horizon}")
    return plans[horizon]


def _schedule(
    spec: ModelSpec, prepared: PreparedWalkForward, horizon: str, min_train_rows: int, phase: int
) -> _HorizonSchedule:
    """The engine's `_walk_spec` control flow without the model: which fit serves each origin."""
    arr = prepared.arrays[horizon]
    n = len(arr.origin_rows)
    fitted_at = np.full(n, -1, dtype=np.int64)
    n_train = np.full(n, -1, dtype=np.int64)
    has_model, fit_k, fit_rows = False, -1, -1
    for k in range(n):
        if refit_due(spec, arr, k, has_model, phase):
            rows = int(_training_mask(spec, arr, k, None).sum())
            if rows >= min_train_rows:
                has_model, fit_k, fit_rows = True, k, rows
        if has_model:
            fitted_at[k], n_train[k] = fit_k, fit_rows
    return _HorizonSchedule(
        horizon, arr.horizon_days, arr.origin_rows.astype(np.int64), fitted_at, n_train
    )


def _shared_closes(
    prepared: dict[str, PreparedWalkForward], dates: dict[str, np.ndarray]
) -> np.ndarray:
    """The one close history every horizon's origins read (ValueError where they differ)."""
    last_row = {h: int(p.arrays[h].origin_rows.max(initial=-1)) for h, p in prepared.items()}
    ref = max(last_row, key=lambda h: last_row[h])
    ref_prices, ref_dates = prepared[ref].arrays[ref].prices, dates[ref]
    for h, p in prepared.items():
        r = last_row[h] + 1
        prices = p.arrays[h].prices
        if not np.array_equal(dates[h][:r], ref_dates[:r]):
            raise ValueError(
                f"horizons {h} and {ref}: the dates up to {h}'s last origin differ; "
                "a shared fit needs one date index"
            )
        if not np.array_equal(prices[:r], ref_prices[:r], equal_nan=True):
            same = (prices[:r] == ref_prices[:r]) | (
                np.isnan(prices[:r]) & np.isnan(ref_prices[:r])
            )
            first = int(np.flatnonzero(~same)[0])
            raise ValueError(
                f"horizons {h} and {ref}: the closes differ at row {first}; a shared fit needs "
                "the same target closes up to every origin"
            )
    return np.array(ref_prices[: last_row[ref] + 1], dtype=np.float64)


def _run_spec(
    spec: ModelSpec,
    build_model: Callable[[ModelSpec], object],
    prices: np.ndarray,
    schedules: list[_HorizonSchedule],
) -> _SharedSpecResult:
    """One spec on every horizon: one estimate per fit date, one forecast path per origin."""
    start = time.perf_counter()
    days = [s.horizon_days for s in schedules]
    # fit row -> the horizons refitting there; fit row -> origin row -> [(horizon, k)]
    fit_horizons: dict[int, list[int]] = {}
    users: dict[int, dict[int, list[tuple[int, int]]]] = {}
    for si, s in enumerate(schedules):
        for k in np.flatnonzero(s.fitted_at >= 0).tolist():
            fit_row, row = int(s.origin_rows[s.fitted_at[k]]), int(s.origin_rows[k])
            if s.fitted_at[k] == k:
                fit_horizons.setdefault(fit_row, []).append(si)
            users.setdefault(fit_row, {}).setdefault(row, []).append((si, k))
    forecasts = [np.full(len(s.origin_rows), np.nan) for s in schedules]
    fallbacks: list[list[str | None]] = [[None] * len(s.origin_rows) for s in schedules]
    for fit_row in sorted(fit_horizons):
        served = fit_horizons[fit_row]
        try:
            model: Any = build_model(spec)
            model.fit_horizons(prices[: fit_row + 1].copy(), [days[si] for si in served])
        except Exception as exc:
            raise RuntimeError(f"{spec.name}: shared fit failed at row {fit_row}") from exc
        for row in sorted(users[fit_row]):
            entries = users[fit_row][row]
            try:
                values = model.forecast_horizons(
                    prices[: row + 1].copy(), [days[si] for si, _ in entries]
                )
            except Exception as exc:
                raise RuntimeError(f"{spec.name}: forecast failed at row {row}") from exc
            for si, k in entries:
                forecasts[si][k] = values[days[si]]
                fallbacks[si][k] = model.fallback_reasons[days[si]]
    seconds = time.perf_counter() - start
    per_horizon = {}
    for si, s in enumerate(schedules):
        # n_fits: refits of this horizon's schedule (served by the shared estimates); the
        # spec's time is split evenly over its horizons.
        n_fits = int(np.sum(s.fitted_at == np.arange(len(s.fitted_at))))
        per_horizon[s.horizon] = _SpecResult(
            forecasts[si], s.fitted_at, s.n_train, fallbacks[si], n_fits, seconds / len(schedules)
        )
    engine_fits = sum(r.n_fits for r in per_horizon.values())
    return _SharedSpecResult(per_horizon, len(fit_horizons), engine_fits, seconds)


def _spec_task(
    index: int,
    spec: ModelSpec,
    build_model: Callable[[ModelSpec], object],
    prices: np.ndarray,
    schedules: list[_HorizonSchedule],
) -> tuple[int, _SharedSpecResult]:
    return index, _run_spec(spec, build_model, prices, schedules)


def run_shared_walk_forward(
    frames: pl.DataFrame | Mapping[str, pl.DataFrame],
    specs: list[ModelSpec],
    plans: OriginPlan | Mapping[str, OriginPlan],
    *,
    spec_horizons: Mapping[str, Sequence[str]] | None = None,
    build_model: Callable[[ModelSpec], object] | None = None,
    n_workers: int = 1,
    progress: Callable[[str], None] | None = None,
    min_train_rows: int = 20,
    refit_phase: int = 0,
) -> pl.DataFrame:
    """OOF predictions (`OOF_SCHEMA`) of statistical specs on several horizons, one fit per
    fit date shared by every horizon; row for row what `run_walk_forward` gives per horizon.

    `frames`: one feature-contract frame holding several horizons, or {horizon: that
    horizon's frame} (e.g. the Dagster partitions). `plans`: one `OriginPlan` for every
    horizon (as `run_walk_forward`) or {horizon: plan} (e.g. `horizon_run.origin_plan` per
    horizon). `spec_horizons`: {spec name: horizons it runs at} (`registry.spec_horizons()`);
    a spec absent from it, or all specs without it, run at every horizon given. No weights or
    row filter: statistical models read neither (a `weighted` flag changes nothing; regime
    specialists are refused). `build_model` (default: `registry.build_model`) must be
    picklable when `n_workers > 1`, and its models must offer `fit_horizons` /
    `forecast_horizons`. `progress(line)` is called once per spec.

    Rows: per horizon (in horizon order), per spec in `specs` order, per origin; horizons a
    spec does not run at have no rows for it. No explanations: see `empty_explanations`.
    """
    check_statistical(specs)
    if build_model is None:
        from cbi_platform.models.registry import build_model
    by_horizon = _split_frames(frames)
    if not by_horizon:
        return pl.DataFrame(schema=OOF_SCHEMA)
    runs_at = {
        s.name: list(by_horizon)
        if spec_horizons is None or s.name not in spec_horizons
        else [h for h in by_horizon if h in spec_horizons[s.name]]
        for s in specs
    }
    prepared: dict[str, PreparedWalkForward] = {}
    dates: dict[str, np.ndarray] = {}
    specs_at: dict[str, list[int]] = {}
    for h, frame in by_horizon.items():
        specs_at[h] = [i for i, s in enumerate(specs) if h in runs_at[s.name]]
        here = [specs[i] for i in specs_at[h]]
        # prepare() reads specs only to validate them; weights are never read here.
        unweighted = [replace(s, weighted=False) for s in here]
        prepared[h] = prepare(frame, unweighted, _plan_for(plans, h))
        dates[h] = _days(frame.sort(DATE)[DATE])
    days = {h: p.arrays[h].horizon_days for h, p in prepared.items()}
    if len(set(days.values())) != len(days):
        raise ValueError(f"two horizons share a horizon_days value: {days}")
    prices = _shared_closes(prepared, dates)
    tasks = [
        (
            i,
            [
                _schedule(spec, prepared[h], h, min_train_rows, refit_phase)
                for h in by_horizon
                if i in specs_at[h]
            ],
        )
        for i, spec in enumerate(specs)
    ]
    tasks = [(i, schedules) for i, schedules in tasks if schedules]
    results: dict[int, _SharedSpecResult] = {}

    def report(i: int, r: _SharedSpecResult) -> None:
        if progress is not None:
            n_origins = sum(len(x.fitted_at) for x in r.per_horizon.values())
            progress(
                f"{specs[i].name} {','.join(r.per_horizon)}: {n_origins} origins, "
                f"{r.n_fits} shared fits (per-horizon engine: {r.n_fits_per_horizon_engine}), "
                f"{r.seconds:.2f}s"
            )

    if n_workers <= 1 or len(tasks) <= 1 or not may_start_processes():
        for i, schedules in tasks:
            results[i] = _run_spec(specs[i], build_model, prices, schedules)
            report(i, results[i])
    else:
        with _env(SINGLE_THREAD_ENV):
            pool = cf.ProcessPoolExecutor(
                max_workers=min(n_workers, len(tasks)),
                mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
                initargs=(SINGLE_THREAD_ENV, {}),
            )
            try:
                futures = [
                    pool.submit(_spec_task, i, specs[i], build_model, prices, schedules)
                    for i, schedules in tasks
                ]
                for future in cf.as_completed(futures):
                    i, r = future.result()
                    results[i] = r
                    report(i, r)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    parts = []
    for h in by_horizon:
        here = [specs[i] for i in specs_at[h]]
        spec_results = {(j, h): results[i].per_horizon[h] for j, i in enumerate(specs_at[h])}
        parts.append(assemble(prepared[h], here, spec_results))
    return pl.concat(parts, how="vertical")


def shared_member_predictions(
    frames: Mapping[str, pl.DataFrame],
    cfg: ProtocolConfig,
    specs: list[ModelSpec] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, OriginPlan]]:
    """`horizon_run.member_predictions` for the statistical specs of several horizons at once.

    `frames`: {horizon: that horizon's feature frame}. Each horizon's plan is
    `horizon_run.origin_plan(frame[DATE], horizon, cfg)`; `specs` default to the registry's
    statistical specs, each at the horizons `registry.spec_horizons()` gives it. Returns
    (oof, explanations, plans): the OOF rows of every horizon, the empty explanation table
    (no features, no SHAP) and the plans by horizon.
    """
    from cbi_platform.evaluation.horizon_run import origin_plan
    from cbi_platform.models.registry import load_specs
    from cbi_platform.models.registry import spec_horizons as registry_spec_horizons

    frames = {h: frame.sort(DATE) for h, frame in frames.items()}
    plans = {h: origin_plan(frame[DATE], h, cfg) for h, frame in frames.items()}
    for h, plan in plans.items():
        if plan.notice and progress is not None:
            progress(f"notice {h}: {plan.notice}")
    oof = run_shared_walk_forward(
        frames,
        specs if specs is not None else load_specs(kinds=["statistical"]),
        plans,
        spec_horizons=registry_spec_horizons(),
        n_workers=cfg.n_workers,
        progress=progress,
        refit_phase=cfg.refit_phase,
    )
    return oof, empty_explanations(), plans
