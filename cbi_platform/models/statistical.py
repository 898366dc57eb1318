"""Statistical models on the log close: ARIMA, ETS (damped additive trend) and Theta.

Each fits on the trailing `window` log closes up to the origin and forecasts h steps ahead;
the output is the log return versus the last close. Between refits, `predict` runs the
fitted parameters over the newer closes it is given (no re-estimation), so a model refitted
every k-th origin still forecasts from the current origin. A failed fit or update falls back
to the random walk and says so in `fallback_reason`; statsmodels warnings are kept in
`fit_warnings` instead of being printed.

The estimate does not depend on the horizon, only the forecast does: every model computes a
path of cumulative log returns for steps 1..H (`_forecast_path`), and the h-step forecast is
its h-th value. `fit_horizons(prices, horizons_days)` estimates once and `forecast_horizons`
reads every horizon off one path per origin (the walk-forward of
`cbi_platform.evaluation.shared_fits`); horizon by horizon, the values and fallbacks are
exactly those of `fit` / `predict` with that horizon.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.signal import lfilter

from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.baselines import forecast_rows, log_closes

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 1500
DEFAULT_MIN_OBS = 60


class _StatisticalModel:
    """Shared fit/predict/fallback logic; subclasses estimate and forecast on a log window."""

    family = ""
    extra_params: dict[str, Any] = {}

    def __init__(self, spec: ModelSpec) -> None:
        allowed = {"window", "min_obs", *self.extra_params}
        unknown = set(spec.params) - allowed
        if unknown:
            raise ValueError(
                f"{spec.name}: unknown {self.family} params {sorted(unknown)}; "
                f"allowed {sorted(allowed)}"
            )
        self.spec = spec
        self.window = int(spec.params.get("window", DEFAULT_WINDOW))
        self.min_obs = int(spec.params.get("min_obs", DEFAULT_MIN_OBS))
        if self.window < self.min_obs:
            raise ValueError(f"{spec.name}: window {self.window} < min_obs {self.min_obs}")
        self.params = {k: spec.params.get(k, v) for k, v in self.extra_params.items()}
        self.horizon_days: int | None = None
        self.fallback_reason: str | None = None
        self.fit_warnings: list[str] = []
        self._fitted = False
        self._fit_window: np.ndarray | None = None
        self._fit_forecast = 0.0
        # Shared-fit mode (`fit_horizons`): per-horizon state of one estimate.
        self.horizons_days: tuple[int, ...] = ()
        self.fallback_reasons: dict[int, str | None] = {}
        self._horizons_ok: set[int] = set()  # horizons whose forecast at the fit was finite
        self._fit_path: np.ndarray | None = None

    # subclasses -------------------------------------------------------------------------
    def _estimate(self, log_window: np.ndarray) -> None:
        raise NotImplementedError

    def _forecast_path(self, log_window: np.ndarray, fitted_window: bool, steps: int) -> np.ndarray:
        """Log-return forecasts for 1..steps steps ahead from the end of `log_window` with the
        fitted parameters (`fitted_window`: `log_window` is the window they were fitted on)."""
        raise NotImplementedError

    def _forecast(self, log_window: np.ndarray, fitted_window: bool) -> float:
        """h-step log-return forecast from the end of `log_window` with the fitted parameters."""
        return float(self._forecast_path(log_window, fitted_window, self.horizon_days)[-1])

    # protocol ---------------------------------------------------------------------------
    def fit(self, data: FitData) -> _StatisticalModel:
        self.horizon_days = int(data.horizon_days)
        if self.horizon_days < 1:
            raise ValueError(f"{self.spec.name}: horizon_days must be >= 1")
        self.fallback_reason, self.fit_warnings, self._fitted = None, [], False
        log_window = log_closes(data.prices)[-self.window :]
        if log_window.shape[0] < self.min_obs:
            self._fall_back(f"fit skipped: {log_window.shape[0]} closes < min_obs {self.min_obs}")
            return self
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._estimate(log_window)
                forecast = self._forecast(log_window, fitted_window=True)
            self.fit_warnings = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
            if not np.isfinite(forecast):
                raise FloatingPointError(f"non-finite forecast {forecast}")
        except Exception as exc:  # any estimation failure must fall back, visibly
            self._fall_back(f"fit failed: {type(exc).__name__}: {exc}")
            return self
        self._fitted, self._fit_window, self._fit_forecast = True, log_window, float(forecast)
        return self

    def predict(self, X: np.ndarray | None, prices: np.ndarray) -> np.ndarray:
        """Every row gets the forecast from the end of `prices` (one origin per call)."""
        if self.horizon_days is None:
            raise RuntimeError(f"{self.spec.name}: predict before fit")
        n = forecast_rows(X)
        if not self._fitted:
            return np.zeros(n)
        log_window = log_closes(prices)[-self.window :]
        if self._fit_window is not None and np.array_equal(log_window, self._fit_window):
            return np.full(n, self._fit_forecast)
        if log_window.shape[0] < self.min_obs:
            self._fall_back(f"predict: {log_window.shape[0]} closes < min_obs {self.min_obs}")
            return np.zeros(n)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                forecast = self._forecast(log_window, fitted_window=False)
            if not np.isfinite(forecast):
                raise FloatingPointError(f"non-finite forecast {forecast}")
        except Exception as exc:
            self._fall_back(f"update failed: {type(exc).__name__}: {exc}")
            return np.zeros(n)
        return np.full(n, float(forecast))

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = f"{reason} -> random walk"
        logger.warning("%s: %s", self.spec.name, self.fallback_reason)

    # shared fit: one estimate, every horizon ----------------------------------------------
    def fit_horizons(self, prices: np.ndarray, horizons_days: Iterable[int]) -> _StatisticalModel:
        """Estimate once on the closes up to the origin and forecast every horizon from it.

        Horizon by horizon this is `fit(FitData(prices=prices, horizon_days=h, ...))`: the
        same estimate (it never reads the horizon), the same forecast at the fit window, the
        same fallbacks. A failed or skipped estimate falls back for every horizon; a
        non-finite forecast only for the horizons whose step is non-finite. Per-horizon
        reasons are in `fallback_reasons` (`fallback_reason` holds the latest one). After it,
        use `forecast_horizons`, not `predict`.
        """
        horizons = _horizon_tuple(self.spec.name, horizons_days)
        self.horizon_days = None  # single-horizon predict() is not for a shared fit
        self.fallback_reason, self.fit_warnings, self._fitted = None, [], False
        self._fit_window, self._fit_path = None, None
        self.horizons_days = horizons
        self.fallback_reasons = dict.fromkeys(horizons)
        self._horizons_ok = set()
        log_window = log_closes(prices)[-self.window :]
        if log_window.shape[0] < self.min_obs:
            reason = f"fit skipped: {log_window.shape[0]} closes < min_obs {self.min_obs}"
            self._fall_back_horizons(horizons, reason)
            return self
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._estimate(log_window)
                path = self._forecast_path(log_window, True, max(horizons))
            self.fit_warnings = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
        except Exception as exc:  # any estimation failure must fall back, visibly
            self._fall_back_horizons(horizons, f"fit failed: {type(exc).__name__}: {exc}")
            return self
        for h in horizons:
            forecast = float(path[h - 1])
            if np.isfinite(forecast):
                self._horizons_ok.add(h)
            else:
                self._fall_back_horizons(
                    (h,), f"fit failed: FloatingPointError: non-finite forecast {forecast}"
                )
        self._fitted = bool(self._horizons_ok)
        self._fit_window, self._fit_path = log_window, np.asarray(path, dtype=np.float64)
        return self

    def forecast_horizons(
        self, prices: np.ndarray, horizons_days: Iterable[int] | None = None
    ) -> dict[int, float]:
        """h-step log-return forecasts from the end of `prices` for the horizons of the fit
        (or the subset given), from one forecast path. Horizon by horizon this is `predict`:
        a horizon whose fit failed gives 0.0; a failed update gives 0.0 and sets that
        horizon's `fallback_reasons` entry, which stays set until the next fit."""
        if not self.horizons_days:
            raise RuntimeError(f"{self.spec.name}: forecast_horizons before fit_horizons")
        wanted = (
            self.horizons_days
            if horizons_days is None
            else _horizon_tuple(self.spec.name, horizons_days)
        )
        unknown = sorted(set(wanted) - set(self.horizons_days))
        if unknown:
            raise ValueError(
                f"{self.spec.name}: horizons {unknown} were not fitted ({self.horizons_days})"
            )
        out = dict.fromkeys(wanted, 0.0)
        live = [h for h in wanted if h in self._horizons_ok]
        if not live:
            return out
        log_window = log_closes(prices)[-self.window :]
        if self._fit_window is not None and np.array_equal(log_window, self._fit_window):
            assert self._fit_path is not None
            out.update({h: float(self._fit_path[h - 1]) for h in live})
            return out
        if log_window.shape[0] < self.min_obs:
            reason = f"predict: {log_window.shape[0]} closes < min_obs {self.min_obs}"
            self._fall_back_horizons(live, reason)
            return out
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = self._forecast_path(log_window, False, max(live))
        except Exception as exc:
            self._fall_back_horizons(live, f"update failed: {type(exc).__name__}: {exc}")
            return out
        for h in live:
            forecast = float(path[h - 1])
            if np.isfinite(forecast):
                out[h] = forecast
            else:
                self._fall_back_horizons(
                    (h,), f"update failed: FloatingPointError: non-finite forecast {forecast}"
                )
        return out

    def _fall_back_horizons(self, horizons: Iterable[int], reason: str) -> None:
        horizons = tuple(horizons)
        self.fallback_reason = f"{reason} -> random walk"
        for h in horizons:
            self.fallback_reasons[h] = self.fallback_reason
        logger.warning("%s (h=%s): %s", self.spec.name, list(horizons), self.fallback_reason)


def _horizon_tuple(name: str, horizons_days: Iterable[int]) -> tuple[int, ...]:
    horizons = tuple(sorted({int(h) for h in horizons_days}))
    if not horizons:
        raise ValueError(f"{name}: no horizons given")
    if horizons[0] < 1:
        raise ValueError(f"{name}: horizon_days must be >= 1")
    return horizons


class ArimaModel(_StatisticalModel):
    """ARIMA of a fixed small order on the log close; trend 't' with d=1 is a drift."""

    family = "arima"
    extra_params = {"order": (1, 1, 0), "trend": "t"}

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        order = tuple(int(v) for v in self.params["order"])
        if len(order) != 3 or min(order) < 0 or max(order) > 3:
            raise ValueError(f"{spec.name}: order must be 3 small ints, got {order}")
        self.params["order"] = order
        self._results: Any = None

    def _estimate(self, log_window: np.ndarray) -> None:
        from statsmodels.tsa.arima.model import ARIMA  # heavy: delayed

        model = ARIMA(log_window, order=self.params["order"], trend=self.params["trend"])
        self._results = model.fit()

    def _forecast_path(self, log_window: np.ndarray, fitted_window: bool, steps: int) -> np.ndarray:
        results = self._results if fitted_window else self._results.apply(log_window)
        return np.asarray(results.forecast(steps)) - log_window[-1]


class EtsModel(_StatisticalModel):
    """ETS(A,Ad,N): additive errors, damped additive trend, no season, on the log close."""

    family = "ets"
    extra_params = {"damped_trend": True}

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self._results: Any = None

    def _model(self, log_window: np.ndarray) -> Any:
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel  # heavy: delayed

        return ETSModel(
            log_window, error="add", trend="add", damped_trend=bool(self.params["damped_trend"])
        )

    def _estimate(self, log_window: np.ndarray) -> None:
        self._results = self._model(log_window).fit(disp=False)

    def _forecast_path(self, log_window: np.ndarray, fitted_window: bool, steps: int) -> np.ndarray:
        # On a newer window the fitted initial states are reused; with 1,500 closes their
        # effect has decayed (alpha near 1, damping < 1).
        results = (
            self._results
            if fitted_window
            else self._model(log_window).smooth(np.asarray(self._results.params))
        )
        return np.asarray(results.forecast(steps)) - log_window[-1]


class ThetaForecaster(_StatisticalModel):
    """The Theta method (statsmodels ThetaModel: OLS slope b0 + SES alpha), no season.

    With theta=2 it extrapolates half the fitted slope, by design. The forecast is computed
    from (b0, alpha) with statsmodels' formula, so newer closes only update the SES level.
    """

    family = "theta"
    extra_params = {"theta": 2.0}

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        if float(self.params["theta"]) < 1:
            raise ValueError(f"{spec.name}: theta must be >= 1")
        self.b0 = float("nan")
        self.alpha = float("nan")

    def _estimate(self, log_window: np.ndarray) -> None:
        from statsmodels.tsa.forecasting.theta import ThetaModel  # heavy: delayed

        results = ThetaModel(log_window, period=1, deseasonalize=False).fit()
        self.b0, self.alpha = (float(v) for v in np.asarray(results.params))

    def _forecast_path(self, log_window: np.ndarray, fitted_window: bool, steps: int) -> np.ndarray:
        alpha, b0, n = self.alpha, self.b0, log_window.shape[0]
        h = np.arange(1, steps + 1, dtype=np.int64)
        # SES level after the last close, initial level = first close ("known" init).
        smoothed, _ = lfilter(
            [alpha], [1.0, alpha - 1.0], log_window, zi=[(1 - alpha) * log_window[0]]
        )
        level = float(smoothed[-1])
        ahead = h - 1 + (1 / alpha - (1 - alpha) ** n / alpha if alpha > 0 else 0.0)
        theta = float(self.params["theta"])
        forecast = level + (theta - 1) / theta * b0 * ahead
        return forecast - log_window[-1]
