"""The zoo's two volatility models: GARCH(1,1) and GJR-GARCH(1,1,1) on daily log returns.

They forecast the h-day volatility of the log return (sqrt of the sum of the h daily variance
forecasts), not a return; intervals and zones use it, the return ensemble must not. Returns
are scaled x100 for the optimiser (arch's advice) and scaled back.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.baselines import forecast_rows, log_closes, single_thread

logger = logging.getLogger(__name__)

SCALE = 100.0
VOL_KINDS = {"garch": 0, "gjr": 1}  # kind -> asymmetry order o
DISTRIBUTIONS = ("normal", "t")
DEFAULT_WINDOW = 2500
MIN_RETURNS = 100


def _arch(returns: np.ndarray, kind: str, dist: str) -> Any:
    if kind not in VOL_KINDS:
        raise ValueError(f"unknown volatility kind {kind!r}; known {sorted(VOL_KINDS)}")
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"unknown error distribution {dist!r}; known {DISTRIBUTIONS}")
    from arch import arch_model  # ~0.6 s to import: only in processes that fit GARCH

    scaled = SCALE * np.asarray(returns, dtype=np.float64)
    return arch_model(
        scaled, mean="Constant", vol="GARCH", p=1, o=VOL_KINDS[kind], q=1, dist=dist, rescale=False
    )


def _horizon_vol(results: Any, horizon_days: int) -> float:
    variance = np.asarray(results.forecast(horizon=horizon_days, reindex=False).variance)[-1]
    return float(np.sqrt(np.sum(variance)) / SCALE)


def fit_volatility(returns: np.ndarray, kind: str = "garch", dist: str = "t") -> Any:
    """Fit GARCH(1,1) (kind 'garch') or GJR-GARCH(1,1,1) (kind 'gjr'); arch's result object."""
    returns = np.asarray(returns, dtype=np.float64).reshape(-1)
    returns = returns[np.isfinite(returns)]
    if returns.shape[0] < MIN_RETURNS:
        raise ValueError(f"{returns.shape[0]} returns < {MIN_RETURNS} needed for a GARCH fit")
    with single_thread():
        return _arch(returns, kind, dist).fit(disp="off", show_warning=False)


def forecast_horizon_vol(
    returns: np.ndarray, horizon_days: int, kind: str = "garch", dist: str = "t"
) -> float:
    """h-day volatility of the log return from daily log `returns` ending at the origin."""
    if horizon_days < 1:
        raise ValueError("horizon_days must be >= 1")
    return _horizon_vol(fit_volatility(returns, kind, dist), horizon_days)


def realized_vol(returns_after_origin: np.ndarray) -> float:
    """Realised h-day volatility: sqrt of the sum of squared daily log returns after the origin.

    Not demeaned, the same quantity the forecast targets (daily means are ~0).
    """
    r = np.asarray(returns_after_origin, dtype=np.float64).reshape(-1)
    if r.size == 0 or not np.all(np.isfinite(r)):
        return float("nan")
    return float(np.sqrt(np.sum(r**2)))


class VolatilityModel:
    """Protocol wrapper: fit on the closes up to the origin, predict the h-day volatility.

    params: `dist` ('t' default | 'normal'), `window` (trailing daily returns, 2500). A failed
    fit falls back to the trailing sample volatility x sqrt(h) and says so in
    `fallback_reason`. Between refits the fitted parameters are run over the newer returns.
    """

    vol_kind = "garch"

    def __init__(self, spec: ModelSpec) -> None:
        unknown = set(spec.params) - {"dist", "window"}
        if unknown:
            raise ValueError(f"{spec.name}: unknown volatility params {sorted(unknown)}")
        self.spec = spec
        self.dist = str(spec.params.get("dist", "t"))
        if self.dist not in DISTRIBUTIONS:
            raise ValueError(f"{spec.name}: dist must be one of {DISTRIBUTIONS}, got {self.dist}")
        self.window = int(spec.params.get("window", DEFAULT_WINDOW))
        self.horizon_days: int | None = None
        self.fallback_reason: str | None = None
        self.fit_warnings: list[str] = []
        self.results: Any = None

    def _returns(self, prices: np.ndarray) -> np.ndarray:
        return np.diff(log_closes(prices))[-self.window :]

    def fit(self, data: FitData) -> VolatilityModel:
        self.horizon_days = int(data.horizon_days)
        self.fallback_reason, self.results = None, None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.results = fit_volatility(self._returns(data.prices), self.vol_kind, self.dist)
            self.fit_warnings = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
        except Exception as exc:
            self.fallback_reason = f"fit failed: {type(exc).__name__}: {exc} -> sample vol"
            logger.warning("%s: %s", self.spec.name, self.fallback_reason)
        return self

    def predict(self, X: np.ndarray | None, prices: np.ndarray) -> np.ndarray:
        """Every row gets the h-day volatility forecast from the end of `prices`."""
        if self.horizon_days is None:
            raise RuntimeError(f"{self.spec.name}: predict before fit")
        returns = self._returns(prices)
        if self.results is not None:
            try:
                with warnings.catch_warnings(), single_thread():
                    warnings.simplefilter("ignore")
                    fixed = _arch(returns, self.vol_kind, self.dist).fix(self.results.params)
                    return np.full(forecast_rows(X), _horizon_vol(fixed, self.horizon_days))
            except Exception as exc:
                self.fallback_reason = f"update failed: {type(exc).__name__}: {exc} -> sample vol"
                logger.warning("%s: %s", self.spec.name, self.fallback_reason)
        sample = float(np.std(returns)) if returns.size > 1 else float("nan")
        return np.full(forecast_rows(X), sample * np.sqrt(self.horizon_days))


class GarchModel(VolatilityModel):
    vol_kind = "garch"


class GjrGarchModel(VolatilityModel):
    vol_kind = "gjr"
