"""Baselines every other model must beat: the random walk and the random walk with drift.

Also home to the helpers every family shares (rows to forecast, training weights, one
thread), so this light module is the one in-zoo dependency of the heavier ones.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
from threadpoolctl import threadpool_limits

from cbi_platform.models.base import FitData, ModelSpec

DEFAULT_DRIFT_WINDOW = 252 * 5


def forecast_rows(X: np.ndarray | None) -> int:
    """Number of origins to forecast: the rows of X (one when a price-only caller passes None)."""
    if X is None:
        return 1
    X = np.asarray(X)
    return 1 if X.ndim == 0 else int(X.shape[0])


def single_thread() -> AbstractContextManager:
    """Limit BLAS/OpenMP pools to one thread inside a fit, whatever the environment says."""
    return threadpool_limits(limits=1)


def training_weights(spec: ModelSpec, data: FitData) -> np.ndarray | None:
    """Sample weights a model trains with, normalised to mean 1; None for an unweighted spec.

    Normalising keeps hyperparameters that sum hessians (min_child_weight, min_sum_hessian)
    meaning the same for the weighted and unweighted twin of a model, whatever the calendar's
    scale (x50 .. x5000). A weighted spec fitted without weights is an error, not a silent
    unweighted fit; an unweighted spec ignores weights it is given.
    """
    if not spec.weighted:
        return None
    if data.sample_weight is None:
        raise ValueError(f"{spec.name}: spec is weighted but FitData.sample_weight is None")
    w = np.asarray(data.sample_weight, dtype=np.float64).reshape(-1)
    if w.shape[0] != np.asarray(data.y).shape[0]:
        raise ValueError(f"{spec.name}: {w.shape[0]} sample weights for {len(data.y)} rows")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"{spec.name}: sample weights must be finite, >= 0, with a positive sum")
    return w / w.mean()


def log_closes(prices: np.ndarray) -> np.ndarray:
    """Log of the finite, positive closes, in order."""
    p = np.asarray(prices, dtype=np.float64).reshape(-1)
    p = p[np.isfinite(p) & (p > 0)]
    return np.log(p)


def trailing_mean_logret(prices: np.ndarray, horizon_days: int, window: int) -> float:
    """Mean of the overlapping h-day log returns inside the last `window` closes (nan if < h+1)."""
    lp = log_closes(prices)[-window:]
    if lp.shape[0] <= horizon_days:
        return float("nan")
    return float(np.mean(lp[horizon_days:] - lp[:-horizon_days]))


class RandomWalk:
    """Tomorrow's price is today's: a zero log return at every horizon."""

    def __init__(self, spec: ModelSpec) -> None:
        if spec.params:
            raise ValueError(f"{spec.name}: random_walk takes no params, got {sorted(spec.params)}")
        self.spec = spec
        self.fallback_reason: str | None = None

    def fit(self, data: FitData) -> RandomWalk:
        return self

    def predict(self, X: np.ndarray | None, prices: np.ndarray | None = None) -> np.ndarray:
        return np.zeros(forecast_rows(X))


class RandomWalkDrift:
    """The random walk plus the mean h-day log return over a trailing window of closes."""

    def __init__(self, spec: ModelSpec) -> None:
        unknown = set(spec.params) - {"window"}
        if unknown:
            raise ValueError(f"{spec.name}: unknown random_walk_drift params {sorted(unknown)}")
        self.spec = spec
        self.window = int(spec.params.get("window", DEFAULT_DRIFT_WINDOW))
        if self.window < 2:
            raise ValueError(f"{spec.name}: window must be >= 2, got {self.window}")
        self.horizon_days: int | None = None
        self.fallback_reason: str | None = None

    def fit(self, data: FitData) -> RandomWalkDrift:
        self.horizon_days = int(data.horizon_days)
        return self

    def predict(self, X: np.ndarray | None, prices: np.ndarray) -> np.ndarray:
        """The drift is read from `prices` (history up to the origin), so no refit is needed."""
        if self.horizon_days is None:
            raise RuntimeError(f"{self.spec.name}: predict before fit")
        drift = trailing_mean_logret(prices, self.horizon_days, self.window)
        self.fallback_reason = None
        if not np.isfinite(drift):
            self.fallback_reason = (
                f"fewer than {self.horizon_days + 1} closes: no drift, random walk used"
            )
            drift = 0.0
        return np.full(forecast_rows(X), drift)
