"""Walk-forward out-of-fold predictions: every model, every origin, no look-ahead.

At origin t (a trading date) a training row is used only if its target date is <= t, so the
last h rows before the origin never train (embargo >= h) and the window expands from the
frame's first row. Arrays and per-origin training masks are computed once per horizon; the
origins are looped inside one call per (spec, horizon), in-process or in `n_workers` spawned
processes. A training row whose target date exceeds the origin is a hard error
(`LookAheadError`), checked at every fit.

Refit schedule, on the origin grid (`origins.py`): the origin with grid index j refits the model
when (j + refit_phase) % spec.refit_every == 0, at the first origin with enough rows, and always
at the live origin; in between, the model fitted at the latest earlier refit predicts, fed the
current origin's features and the close history up to the current origin. Because the schedule
follows the grid, a new day never moves a refit, and a champion and its challenger refit on the
same dates. `refit_phase` shifts the schedule for the benchmark's noise spread.

Sample weights are point in time: `weights` is either one vector for the frame's rows or a
callable `weights(origin_day) -> vector` (e.g. `regimes.calendar.PointInTimeWeights`), asked
afresh at every refit, so a weighted model at origin t never sees what was known only later.

Fallbacks: a statistical model whose estimation failed falls back to the random walk and sets
`fallback_reason`; the OOF table carries it for every origin that model forecast.

The engine runs in three steps: `prepare` (arrays and embargo masks per horizon), `execute`
(the origin loop per spec, in-process or in workers) and `assemble` (the OOF frame).

Explanations (optional): given `explain`, at every origin with a forecast the engine also calls
`explain(model, spec, x_rows, feature_names)` with the model that made it (fitted at or last
before the origin) and the rows it forecast from (the origin's (1, p) row, or a sequence
model's `lookback` rows ending at the origin), and collects the vector it returns:
p contributions to the forecast log return, optionally followed by the base value (the layout
of LightGBM's pred_contrib); None for models without features. One row per origin, so the cost
is one explanation per forecast; a model with `explain_refits_only = True` (the networks, whose
kernel SHAP costs ~0.35 s a call) is explained only at its refit origins and the live origin.
The OOF frame is unchanged; the explanations come back beside it in long format
(`cbi_platform.explain.shap_tables.SHAP_TABLE_SCHEMA`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import numpy as np
import polars as pl

from cbi_platform.evaluation.origins import LIVE, OriginPlan
from cbi_platform.explain.shap_tables import SHAP_TABLE_SCHEMA, explain_row, shap_table
from cbi_platform.features.contract import (
    DATE,
    HORIZON,
    HORIZON_DAYS,
    HORIZONS,
    PRICE,
    TARGET_DATE,
    TARGET_LOGRET,
    TARGET_PRICE,
    feature_columns,
)
from cbi_platform.lifeline import die_with_parent
from cbi_platform.models.base import FitData, Model, ModelSpec, model_input
from cbi_platform.models.fit_cache import fit_member

# (spec, training mask aligned with the rows of the frame passed in) -> allowed rows (subset).
RowFilter = Callable[[ModelSpec, np.ndarray], np.ndarray]
# origin date (days since epoch) -> one weight per row of the frame passed in, as known then.
WeightSchedule = Callable[[int], np.ndarray]
# (model, spec, origin feature rows, feature names) -> p or p + 1 (base last) values | None. The
# rows are the origin's row, or for a sequence model the `lookback` rows ending at it.
RowExplainer = Callable[[Model, ModelSpec, np.ndarray, list[str]], np.ndarray | None]

T = TypeVar("T")

# Set in every worker before it imports numpy / model libraries: one thread per process.
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "POLARS_MAX_THREADS": "1",
}

OOF_SCHEMA: dict[str, pl.DataType] = {
    "horizon": pl.Utf8(),
    "horizon_days": pl.Int64(),
    "model": pl.Utf8(),
    "origin": pl.Date(),
    "origin_row": pl.Int64(),  # row of the origin within its horizon's (sorted) frame
    "role": pl.Utf8(),
    "target_date": pl.Date(),
    "price": pl.Float64(),
    "actual": pl.Float64(),
    "forecast": pl.Float64(),
    "forecast_logret": pl.Float64(),
    "fitted_at": pl.Date(),
    "n_train": pl.Int64(),
    "naive_scale": pl.Float64(),
    "fallback_reason": pl.Utf8(),  # set where the model in use fell back to the random walk
}


class LookAheadError(AssertionError):
    """A training row's target date is after the origin: the fold would see its future."""


class RegimeRowFilter:
    """Row filter for specialists: keep training rows whose detected regime is `spec.regime`.

    `labels` is aligned with the rows of the frame given to `run_walk_forward` and must be
    point-in-time (the regime detected with data available at each row's date). Picklable,
    so it travels to worker processes.
    """

    def __init__(self, labels: np.ndarray | pl.Series | Sequence[str | None]):
        self.labels = np.asarray(
            labels.to_list() if isinstance(labels, pl.Series) else labels, dtype=object
        )

    @classmethod
    def from_frame(
        cls, frame: pl.DataFrame, labels: pl.DataFrame, column: str = "regime"
    ) -> RegimeRowFilter:
        """Align a (date, regime) table with the frame's rows (frame order kept; no label: null)."""
        aligned = frame.select(DATE).join(
            labels.select(DATE, column), on=DATE, how="left", maintain_order="left"
        )
        return cls(aligned[column])

    def __call__(self, spec: ModelSpec, train_mask: np.ndarray) -> np.ndarray:
        return train_mask & (self.labels == spec.regime)


@dataclass
class _HorizonArrays:
    """One horizon's frame as numpy arrays, plus per-origin training masks (computed once)."""

    horizon: str
    horizon_days: int
    frame_rows: np.ndarray  # position of each row in the frame passed in
    n_frame_rows: int
    X: np.ndarray
    y: np.ndarray
    prices: np.ndarray
    target_days: np.ndarray  # target date as days since epoch; max int where unknown
    feature_names: list[str]
    origin_rows: np.ndarray  # row of each origin in these arrays
    origin_days: np.ndarray  # origin date as days since epoch
    train_masks: np.ndarray  # (n_origins, n_rows) bool: target known and target_date <= origin
    live: np.ndarray  # (n_origins,) bool: the live origin is always refitted (freshest model)
    grid_index: np.ndarray  # (n_origins,) grid index j of each origin; -1 for the live origin


@dataclass
class _SpecResult:
    forecast_logret: np.ndarray
    fitted_at: np.ndarray  # origin position k of the fit used; -1 when no model yet
    n_train: np.ndarray  # rows of that fit; -1 when no model yet
    fallback: list  # fallback_reason of the model in use at each origin (None: none)
    n_fits: int
    seconds: float
    contributions: np.ndarray | None = None  # (n_origins, p + 1), base last; nan: none
    explain_seconds: float = 0.0
    fit_infos: list = field(default_factory=list)  # model.fit_info() after each fit, if any


def _days(series: pl.Series) -> np.ndarray:
    return series.cast(pl.Date).cast(pl.Int64).to_numpy()


def _horizon_arrays(
    sub: pl.DataFrame, horizon: str, plan: OriginPlan, n_frame_rows: int
) -> _HorizonArrays:
    horizon_days = int(sub[HORIZON_DAYS][0])
    if sub[HORIZON_DAYS].n_unique() != 1:
        raise ValueError(f"horizon {horizon}: more than one horizon_days value")
    if sub[DATE].is_duplicated().any():
        raise ValueError(f"horizon {horizon}: duplicate dates")
    features = feature_columns(sub)
    dates = _days(sub[DATE])
    target_days_raw = sub[TARGET_DATE].cast(pl.Date).cast(pl.Int64)
    known = (
        target_days_raw.is_not_null()
        & sub[TARGET_LOGRET].is_not_null()
        & sub[TARGET_LOGRET].is_finite()
        & sub[TARGET_PRICE].is_not_null()
    ).to_numpy()
    target_days = target_days_raw.fill_null(np.iinfo(np.int64).max).to_numpy()
    if np.any(known & (target_days <= dates)):
        raise ValueError(f"horizon {horizon}: a target_date is not after its date")
    origin_days = _days(pl.Series(list(plan.dates), dtype=pl.Date))
    origin_rows = np.searchsorted(dates, origin_days)
    missing = (origin_rows >= len(dates)) | (
        dates[np.minimum(origin_rows, len(dates) - 1)] != origin_days
    )
    if missing.any():
        first = plan.dates[int(np.flatnonzero(missing)[0])]
        raise ValueError(f"horizon {horizon}: origin {first} is not a date of the frame")
    prices = sub[PRICE].cast(pl.Float64).to_numpy()
    if not np.all(np.isfinite(prices[origin_rows])):
        raise ValueError(f"horizon {horizon}: price missing at an origin")
    train_masks = known[None, :] & (target_days[None, :] <= origin_days[:, None])
    return _HorizonArrays(
        horizon=horizon,
        horizon_days=horizon_days,
        frame_rows=sub["__frame_row"].to_numpy(),
        n_frame_rows=n_frame_rows,
        X=sub.select(features).cast(pl.Float64).to_numpy().astype(np.float64, copy=False)
        if features
        else np.empty((sub.height, 0), dtype=np.float64),
        y=sub[TARGET_LOGRET].cast(pl.Float64).fill_null(np.nan).to_numpy(),
        prices=prices,
        target_days=target_days,
        feature_names=features,
        origin_rows=origin_rows,
        origin_days=origin_days,
        train_masks=train_masks,
        live=np.asarray([r == LIVE for r in plan.role], dtype=bool),
        grid_index=_grid_index(plan),
    )


def _grid_index(plan: OriginPlan) -> np.ndarray:
    """Grid index per origin (-1: live or unknown); plans without a grid count 0, 1, 2, ..."""
    if not plan.grid_index:
        return np.arange(plan.n_origins, dtype=np.int64)
    return np.asarray([-1 if j is None else j for j in plan.grid_index], dtype=np.int64)


def refit_due(spec: ModelSpec, arr: _HorizonArrays, k: int, has_model: bool, phase: int) -> bool:
    """The recorded schedule: grid index j refits when (j + phase) % refit_every == 0; the first
    fit happens as soon as possible, and the live origin always refits."""
    if arr.live[k] or not has_model:
        return True
    return (int(arr.grid_index[k]) + phase) % spec.refit_every == 0


def _training_mask(
    spec: ModelSpec, arr: _HorizonArrays, k: int, row_filter: RowFilter | None
) -> np.ndarray:
    mask = arr.train_masks[k]
    if spec.regime is not None:
        full = np.zeros(arr.n_frame_rows, dtype=bool)
        full[arr.frame_rows] = mask
        allowed = np.asarray(row_filter(spec, full.copy()), dtype=bool)  # type: ignore[misc]
        if allowed.shape != full.shape:
            raise ValueError(f"row_filter returned shape {allowed.shape}, expected {full.shape}")
        filtered = allowed[arr.frame_rows]
        if np.any(filtered & ~mask):
            raise LookAheadError(
                f"{spec.name} {arr.horizon}: row_filter added rows outside the embargoed "
                f"training window at origin position {k}"
            )
        mask = filtered
    rows = np.flatnonzero(mask)
    if rows.size and arr.target_days[rows].max() > arr.origin_days[k]:
        raise LookAheadError(
            f"{spec.name} {arr.horizon}: a training row's target date is after origin position {k}"
        )
    return mask


def _walk_spec(
    spec: ModelSpec,
    build_model: Callable[[ModelSpec], Model],
    arr: _HorizonArrays,
    weights: np.ndarray | WeightSchedule | None,
    row_filter: RowFilter | None,
    min_train_rows: int,
    explain: RowExplainer | None = None,
    refit_phase: int = 0,
    fit_cache: str | None = None,
) -> _SpecResult:
    """Loop the origins for one spec on one horizon, refitting on its recorded schedule."""
    start = time.perf_counter()
    n = len(arr.origin_rows)
    forecast_logret = np.full(n, np.nan)
    fitted_at = np.full(n, -1, dtype=np.int64)
    n_train = np.full(n, -1, dtype=np.int64)
    fallback: list[str | None] = [None] * n
    p = len(arr.feature_names)
    contributions = None if explain is None else np.full((n, p + 1), np.nan)
    explain_seconds = 0.0
    model: Model | None = None
    fit_k, fit_rows, n_fits = -1, -1, 0
    fit_infos: list[dict] = []
    for k in range(n):
        row = int(arr.origin_rows[k])
        if refit_due(spec, arr, k, model is not None, refit_phase):
            mask = _training_mask(spec, arr, k, row_filter)
            rows = int(mask.sum())
            if rows >= min_train_rows:
                data = FitData(
                    X=arr.X[mask],
                    y=arr.y[mask],
                    prices=arr.prices[: row + 1].copy(),
                    horizon_days=arr.horizon_days,
                    feature_names=list(arr.feature_names),
                    sample_weight=_weights_at(weights, arr, k)[mask] if spec.weighted else None,
                    history=arr.X[: row + 1],
                    train_rows=np.flatnonzero(mask),
                )
                try:
                    model = fit_member(spec, data, build_model, fit_cache)
                except Exception as exc:
                    raise RuntimeError(
                        f"{spec.name} {arr.horizon}: fit failed at origin position {k}"
                    ) from exc
                fit_k, fit_rows, n_fits = k, rows, n_fits + 1
                info = getattr(model, "fit_info", None)
                if callable(info):
                    fit_infos.append({"origin_position": k, **info()})
        if model is None:
            continue
        if fit_k > k:  # unreachable by construction; a model is never used before its fit
            raise LookAheadError(f"{spec.name}: model fitted at {fit_k} used at {k}")
        # The origin's row, or for a sequence model the `lookback` rows ending at it.
        x_in = model_input(model, arr.X, row).copy()
        try:
            pred = np.asarray(
                model.predict(x_in, arr.prices[: row + 1].copy()), dtype=np.float64
            ).reshape(-1)
        except Exception as exc:
            raise RuntimeError(
                f"{spec.name} {arr.horizon}: predict failed at origin position {k}"
            ) from exc
        if pred.size != x_in.shape[0]:
            raise ValueError(
                f"{spec.name}: predict returned {pred.size} values for {x_in.shape[0]} rows"
            )
        forecast_logret[k] = pred[-1]
        fitted_at[k], n_train[k] = fit_k, fit_rows
        fallback[k] = getattr(model, "fallback_reason", None)
        # Models that are dear to explain (networks: kernel SHAP) say so with
        # `explain_refits_only`: explained at their refit origins and the live origin only.
        subset = bool(getattr(model, "explain_refits_only", False))
        if (
            explain is not None
            and contributions is not None
            and (not subset or k == fit_k or arr.live[k])
        ):
            explain_start = time.perf_counter()
            try:
                vector = explain(model, spec, x_in, list(arr.feature_names))
            except Exception as exc:
                raise RuntimeError(
                    f"{spec.name} {arr.horizon}: explain failed at origin position {k}"
                ) from exc
            explain_seconds += time.perf_counter() - explain_start
            if vector is not None:
                vector = np.asarray(vector, dtype=np.float64).reshape(-1)
                if vector.size not in (p, p + 1):
                    raise ValueError(
                        f"{spec.name}: explain returned {vector.size} values for {p} features"
                    )
                contributions[k, : vector.size] = vector
    return _SpecResult(
        forecast_logret,
        fitted_at,
        n_train,
        fallback,
        n_fits,
        time.perf_counter() - start,
        contributions,
        explain_seconds,
        fit_infos,
    )


def _weights_at(
    weights: np.ndarray | WeightSchedule | None, arr: _HorizonArrays, k: int
) -> np.ndarray:
    """The horizon's row weights as known at origin k (a schedule is asked for that origin)."""
    if weights is None:
        raise ValueError("a weighted spec needs weights")
    if callable(weights):
        vector = np.asarray(weights(int(arr.origin_days[k])), dtype=np.float64)
        if vector.shape != (arr.n_frame_rows,):
            raise ValueError(f"weights({k}) has shape {vector.shape}, expected one per frame row")
        if not np.all(np.isfinite(vector)) or np.any(vector < 0):
            raise ValueError(f"weights at origin position {k} must be finite and >= 0")
        return vector[arr.frame_rows]
    return weights


def _naive_scale(arr: _HorizonArrays, target_price: np.ndarray) -> np.ndarray:
    """Per origin: mean |p_{i+h} - p_i| (price units) over pairs with target date <= origin."""
    absdiff = np.abs(target_price - arr.prices)
    out = np.full(len(arr.origin_rows), np.nan)
    for k, mask in enumerate(arr.train_masks):
        usable = mask & np.isfinite(absdiff)
        if usable.any():
            out[k] = absdiff[usable].mean()
    return out


# ---- worker processes -------------------------------------------------------------------

_WORKER_STATE: dict = {}


def _init_worker(env: dict[str, str], state: dict) -> None:
    die_with_parent()  # a worker never outlives its step process (issue 21)
    os.environ.update(env)
    _WORKER_STATE.update(state)


def _worker_task(spec_idx: int, horizon: str) -> tuple[int, str, _SpecResult]:
    s = _WORKER_STATE
    result = _walk_spec(
        s["specs"][spec_idx],
        s["build_model"],
        s["arrays"][horizon],
        s["weights"][horizon],
        s["row_filter"],
        s["min_train_rows"],
        s.get("explain"),
        s.get("refit_phase", 0),
        s.get("fit_cache"),
    )
    return spec_idx, horizon, result


@contextlib.contextmanager
def environment(overrides: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the processes spawned inside the block (they inherit
    os.environ at start), restoring the previous values afterwards."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def may_start_processes() -> bool:
    """False in a daemonic process, which multiprocessing forbids to start children: a Celery
    prefork pool child, where a step on a celery worker runs. Work meant for spawned processes
    then runs in the calling process (the pool child is itself a process of its own)."""
    return not mp.current_process().daemon


def in_spawned_process(fn: Callable[..., T], *args: Any, env: dict[str, str] | None = None) -> T:
    """fn(*args) in one fresh spawned process (its environment: os.environ plus `env` and one
    thread per library): what it imports (TensorFlow for a network) and allocates is gone
    with the process instead of staying resident in this one. Exceptions are re-raised here.
    In a daemonic process (`may_start_processes`) fn runs here, in the same environment."""
    with environment({**SINGLE_THREAD_ENV, **(env or {})}):
        if not may_start_processes():
            return fn(*args)
        with cf.ProcessPoolExecutor(
            max_workers=1, mp_context=mp.get_context("spawn"), initializer=die_with_parent
        ) as pool:
            return pool.submit(fn, *args).result()


def _horizon_order(horizons: list[str]) -> list[str]:
    return sorted(horizons, key=lambda h: (HORIZONS.get(h, 10**9), h))


# ---- the three steps ---------------------------------------------------------------------


@dataclass
class PreparedWalkForward:
    """What `prepare` computes once per horizon: arrays, embargo masks, per-origin extras."""

    plan: OriginPlan
    arrays: dict[str, _HorizonArrays]
    extras: dict[str, pl.DataFrame]  # per origin: date, row, role, target, price, actual, scale
    weights: dict[str, np.ndarray | WeightSchedule | None]


def _validate_inputs(
    frame: pl.DataFrame,
    specs: list[ModelSpec],
    weights: np.ndarray | WeightSchedule | None,
    row_filter: RowFilter | None,
) -> np.ndarray | WeightSchedule | None:
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("spec names must be unique")
    for spec in specs:
        if spec.refit_every < 1:
            raise ValueError(f"{spec.name}: refit_every must be >= 1")
        if spec.regime is not None and row_filter is None:
            raise ValueError(f"{spec.name} is a specialist (regime={spec.regime}): pass row_filter")
        if spec.weighted and weights is None:
            raise ValueError(f"{spec.name} is weighted: pass weights")
    missing = {DATE, HORIZON, HORIZON_DAYS, PRICE, TARGET_DATE, TARGET_PRICE, TARGET_LOGRET} - set(
        frame.columns
    )
    if missing:
        raise ValueError(f"frame lacks columns {sorted(missing)}")
    if weights is None or callable(weights):
        return weights
    vector = np.asarray(weights, dtype=np.float64)
    if vector.shape != (frame.height,):
        raise ValueError(f"weights shape {vector.shape}, expected ({frame.height},)")
    if not np.all(np.isfinite(vector)) or np.any(vector < 0):
        raise ValueError("weights must be finite and >= 0")
    return vector


def prepare(
    frame: pl.DataFrame,
    specs: list[ModelSpec],
    plan: OriginPlan,
    weights: np.ndarray | WeightSchedule | None = None,
    row_filter: RowFilter | None = None,
) -> PreparedWalkForward:
    """Validate the inputs and compute, per horizon, the arrays and embargoed training masks."""
    weights = _validate_inputs(frame, specs, weights, row_filter)
    indexed = frame.with_row_index("__frame_row")
    arrays: dict[str, _HorizonArrays] = {}
    extras: dict[str, pl.DataFrame] = {}
    per_horizon: dict[str, np.ndarray | WeightSchedule | None] = {}
    for horizon in _horizon_order(frame[HORIZON].unique().to_list()):
        sub = indexed.filter(pl.col(HORIZON) == horizon).sort(DATE)
        arr = _horizon_arrays(sub, horizon, plan, frame.height)
        arrays[horizon] = arr
        if weights is None or callable(weights):
            per_horizon[horizon] = weights
        else:
            per_horizon[horizon] = weights[arr.frame_rows]
        at_origin = sub[arr.origin_rows]
        target_price = sub[TARGET_PRICE].cast(pl.Float64).fill_null(np.nan).to_numpy()
        extras[horizon] = pl.DataFrame(
            {
                "origin": at_origin[DATE].cast(pl.Date),
                "origin_row": pl.Series(arr.origin_rows, dtype=pl.Int64),
                "role": list(plan.role),
                "target_date": at_origin[TARGET_DATE].cast(pl.Date),
                "price": at_origin[PRICE].cast(pl.Float64),
                "actual": at_origin[TARGET_PRICE].cast(pl.Float64),
                "naive_scale": _naive_scale(arr, target_price),
            }
        )
    return PreparedWalkForward(plan, arrays, extras, per_horizon)


def execute(
    prepared: PreparedWalkForward,
    specs: list[ModelSpec],
    build_model: Callable[[ModelSpec], Model],
    n_workers: int = 1,
    progress: Callable[[str], None] | None = None,
    row_filter: RowFilter | None = None,
    min_train_rows: int = 20,
    explain: RowExplainer | None = None,
    refit_phase: int = 0,
    fit_cache: str | None = None,
    isolate: bool = False,
) -> dict[tuple[int, str], _SpecResult]:
    """The origin loop of every (spec, horizon), in-process or in `n_workers` spawned workers
    (`isolate`: in spawned workers even for one task or one worker, so that what the fits load,
    such as TensorFlow, never stays resident in this process). In a daemonic process (a Celery
    pool child: `may_start_processes`) every task runs here, one after the other."""
    tasks = [(i, h) for h in prepared.arrays for i in range(len(specs))]
    results: dict[tuple[int, str], _SpecResult] = {}
    in_process = ((n_workers <= 1 or len(tasks) <= 1) and not isolate) or not may_start_processes()

    def report(i: int, h: str, r: _SpecResult) -> None:
        if progress is not None:
            progress(
                f"{specs[i].name} {h}: {len(r.fitted_at)} origins, {r.n_fits} fits, "
                f"{r.seconds:.2f}s"
                + ("" if explain is None else f", explain {r.explain_seconds:.2f}s")
            )

    if in_process:
        for i, h in tasks:
            results[(i, h)] = _walk_spec(
                specs[i],
                build_model,
                prepared.arrays[h],
                prepared.weights[h],
                row_filter,
                min_train_rows,
                explain,
                refit_phase,
                fit_cache,
            )
            report(i, h, results[(i, h)])
        return results
    state = {
        "arrays": prepared.arrays,
        "specs": specs,
        "build_model": build_model,
        "weights": prepared.weights,
        "row_filter": row_filter,
        "min_train_rows": min_train_rows,
        "explain": explain,
        "refit_phase": refit_phase,
        "fit_cache": fit_cache,
    }
    with environment(SINGLE_THREAD_ENV):
        pool = cf.ProcessPoolExecutor(
            max_workers=max(1, min(n_workers, len(tasks))),
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(SINGLE_THREAD_ENV, state),
        )
        try:
            futures = [pool.submit(_worker_task, i, h) for i, h in tasks]
            for future in cf.as_completed(futures):
                i, h, r = future.result()
                results[(i, h)] = r
                report(i, h, r)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def assemble(
    prepared: PreparedWalkForward,
    specs: list[ModelSpec],
    results: dict[tuple[int, str], _SpecResult],
) -> pl.DataFrame:
    """The OOF frame (schema `OOF_SCHEMA`): one row per (horizon, spec, origin)."""
    parts = []
    for h, arr in prepared.arrays.items():
        extra = prepared.extras[h]
        origin_dates = extra["origin"].to_list()
        for i, spec in enumerate(specs):
            r = results[(i, h)]
            used = r.fitted_at >= 0
            ok = used & np.isfinite(r.forecast_logret)  # non-finite predictions become null
            parts.append(
                extra.with_columns(
                    horizon=pl.lit(h),
                    horizon_days=pl.lit(arr.horizon_days, dtype=pl.Int64),
                    model=pl.lit(spec.name),
                    forecast_logret=pl.Series(
                        np.where(ok, r.forecast_logret, np.nan), dtype=pl.Float64
                    ).fill_nan(None),
                    fitted_at=pl.Series(
                        [origin_dates[j] if j >= 0 else None for j in r.fitted_at.tolist()],
                        dtype=pl.Date,
                    ),
                    n_train=pl.Series(
                        [n if n >= 0 else None for n in r.n_train.tolist()], dtype=pl.Int64
                    ),
                    fallback_reason=pl.Series(r.fallback, dtype=pl.Utf8),
                )
            )
    if not parts:
        return pl.DataFrame(schema=OOF_SCHEMA)
    oof = pl.concat(parts, how="diagonal_relaxed").with_columns(
        forecast=pl.col("price") * pl.col("forecast_logret").exp()
    )
    return oof.select([pl.col(c).cast(t) for c, t in OOF_SCHEMA.items()])


FIT_REPORT_SCHEMA: dict[str, pl.DataType] = {
    "horizon": pl.Utf8(),
    "model": pl.Utf8(),
    "n_origins": pl.Int64(),
    "n_fits": pl.Int64(),
    "seconds": pl.Float64(),  # the whole origin loop: fits, predictions, explanations
    "explain_seconds": pl.Float64(),
    "fit_seconds_mean": pl.Float64(),  # per fit, as the model recorded it (networks)
    "epochs_mean": pl.Float64(),
    "device": pl.Utf8(),
    "precision": pl.Utf8(),
    "peak_memory_mb": pl.Float64(),
}


def fit_report(specs: list[ModelSpec], results: dict[tuple[int, str], _SpecResult]) -> pl.DataFrame:
    """One row per (horizon, model): origins, fits, time, and what the model recorded about
    its fits (device, precision, epochs, peak memory: networks record these)."""
    rows = []
    for (i, h), r in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        infos = r.fit_infos

        def mean(key: str, infos: list = infos) -> float | None:
            values = [float(x[key]) for x in infos if x.get(key) is not None]
            return float(np.mean(values)) if values else None

        peaks = [float(x["peak_memory_mb"]) for x in infos if x.get("peak_memory_mb") is not None]
        rows.append(
            {
                "horizon": h,
                "model": specs[i].name,
                "n_origins": len(r.fitted_at),
                "n_fits": r.n_fits,
                "seconds": r.seconds,
                "explain_seconds": r.explain_seconds,
                "fit_seconds_mean": mean("fit_seconds"),
                "epochs_mean": mean("epochs_run"),
                "device": next((str(x["device"]) for x in infos if x.get("device")), None),
                "precision": next((str(x["precision"]) for x in infos if x.get("precision")), None),
                "peak_memory_mb": max(peaks) if peaks else None,
            }
        )
    return pl.DataFrame(rows, schema=FIT_REPORT_SCHEMA)


@overload
def run_walk_forward(
    frame: pl.DataFrame,
    specs: list[ModelSpec],
    build_model: Callable[[ModelSpec], Model],
    plan: OriginPlan,
    weights: np.ndarray | WeightSchedule | None = ...,
    n_workers: int = ...,
    progress: Callable[[str], None] | None = ...,
    row_filter: RowFilter | None = ...,
    min_train_rows: int = ...,
    explain: None = ...,
    refit_phase: int = ...,
) -> pl.DataFrame: ...


@overload
def run_walk_forward(
    frame: pl.DataFrame,
    specs: list[ModelSpec],
    build_model: Callable[[ModelSpec], Model],
    plan: OriginPlan,
    weights: np.ndarray | WeightSchedule | None = ...,
    n_workers: int = ...,
    progress: Callable[[str], None] | None = ...,
    row_filter: RowFilter | None = ...,
    min_train_rows: int = ...,
    *,
    explain: RowExplainer,
    refit_phase: int = ...,
) -> tuple[pl.DataFrame, pl.DataFrame]: ...


def run_walk_forward(
    frame: pl.DataFrame,
    specs: list[ModelSpec],
    build_model: Callable[[ModelSpec], Model],
    plan: OriginPlan,
    weights: np.ndarray | WeightSchedule | None = None,
    n_workers: int = 1,
    progress: Callable[[str], None] | None = None,
    row_filter: RowFilter | None = None,
    min_train_rows: int = 20,
    explain: RowExplainer | None = None,
    refit_phase: int = 0,
) -> pl.DataFrame | tuple[pl.DataFrame, pl.DataFrame]:
    """Out-of-fold predictions (schema `OOF_SCHEMA`) of every spec at every origin of `plan`.

    `frame` follows the feature contract (one or several horizons). `weights` (one per frame
    row, or a point-in-time schedule: see the module docstring) is used only by specs with
    `weighted=True`. `row_filter(spec, mask)` restricts the training rows of specs with `regime`
    set (mask aligned with the frame's rows; it may only remove rows). A refit with fewer than
    `min_train_rows` rows keeps the previous model; before any fit the forecast is null.
    `build_model`, `weights`, `row_filter` and `explain` must be picklable (module-level) when
    `n_workers > 1`.

    With `explain` (see the module docstring) the result is `(oof, explanations)` instead:
    the same OOF frame plus the long explanation table; without it, the OOF frame alone.
    """
    prepared = prepare(frame, specs, plan, weights, row_filter)
    results = execute(
        prepared,
        specs,
        build_model,
        n_workers,
        progress,
        row_filter,
        min_train_rows,
        explain,
        refit_phase,
    )
    oof = assemble(prepared, specs, results)
    if explain is None:
        return oof
    return oof, explanation_frame(specs, prepared.arrays, prepared.extras, results)


def explanation_frame(
    specs: list[ModelSpec],
    arrays: dict[str, _HorizonArrays],
    extras: dict[str, pl.DataFrame],
    results: dict[tuple[int, str], _SpecResult],
) -> pl.DataFrame:
    """The collected contributions in long format, one row set per (horizon, model, origin)."""
    parts = []
    for h, arr in arrays.items():
        p = len(arr.feature_names)
        for i, spec in enumerate(specs):
            r = results[(i, h)]
            if r.contributions is None or p == 0:
                continue
            keep = (
                (r.fitted_at >= 0)
                & np.isfinite(r.forecast_logret)
                & np.isfinite(r.contributions[:, :p]).all(axis=1)
            )
            if not keep.any():
                continue
            ks = np.flatnonzero(keep)
            parts.append(
                shap_table(
                    r.contributions[ks, :p],
                    arr.X[arr.origin_rows[ks]],
                    arr.feature_names,
                    extras[h]["origin"].gather(ks),
                    h,
                    spec.name,
                    base=r.contributions[ks, p],
                )
            )
    if not parts:
        return pl.DataFrame(schema=SHAP_TABLE_SCHEMA)
    return pl.concat(parts)


def run_walk_forward_with_explanations(
    frame: pl.DataFrame,
    specs: list[ModelSpec],
    build_model: Callable[[ModelSpec], Model],
    plan: OriginPlan,
    explain: RowExplainer | None = None,
    **kwargs: Any,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(oof, explanations): `run_walk_forward` with out-of-fold SHAP at every origin.

    `explain` defaults to `cbi_platform.explain.shap_tables.explain_row` (TreeSHAP for trees,
    linear SHAP for ridge, nothing for models without features); `kwargs` go to
    `run_walk_forward`. Explanations: horizon, model, origin, feature, value, shap, base, rank;
    for every row set, base + sum(shap) is the OOF forecast_logret at that origin.
    """
    if explain is None:
        explain = explain_row
    return run_walk_forward(frame, specs, build_model, plan, explain=explain, **kwargs)
