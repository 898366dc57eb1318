"""A small LSTM on realised volatility, scored beside GARCH and GJR-GARCH.

Like the GARCH models it sees only the closes up to the origin and forecasts the h-day
volatility of the log return (sqrt of the sum of the h squared daily log returns after the
origin, `realized_vol`), for every horizon from one fit: one output unit per horizon.

Inputs, per day and known at that day's close: log |return| and the log of the trailing 5-,
21- and 63-day realised volatility (root mean square daily return); the network reads the
`lookback` days ending at the sample day. Targets: log realised h-day volatility after the
sample day. A sample trains horizon h only when its target is complete by the origin
(sample day + h <= origin, asserted: the embargo); a horizon whose target is not yet known is
masked out of the loss, so the short horizons still learn from the most recent days.
Standardisation (inputs and each target) uses the training samples only; early stopping
watches the time-ordered last 15% of samples. The forecast is exp(predicted log vol), i.e.
the conditional median, not the mean.

Keras is imported inside the methods, never at module import (load_specs builds every spec).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.baselines import forecast_rows, log_closes
from cbi_platform.models.volatility import VolatilityModel

logger = logging.getLogger(__name__)

TRAILING = (5, 21, 63)  # trailing realised-vol windows behind the features (days)
N_FEATURES = 1 + len(TRAILING)
WARMUP = max(TRAILING)  # returns needed before the first complete feature row
ABS_EPS = 1e-4  # floor inside log |return| (unchanged closes happen)
VOL_EPS = 1e-6  # floor inside log vol
VALIDATION_FRACTION = 0.15  # time-ordered tail of the samples for early stopping
MIN_TARGETS = 50  # known training targets each horizon needs
MAX_BATCH = 32

DEFAULTS: dict[str, Any] = {
    "lookback": 20,  # days of features per sample
    "units": 16,  # LSTM units
    "epochs": 10,  # upper bound; early stopping usually ends sooner
    "batch_size": 32,  # <= 32
    "patience": 2,  # early-stopping patience (epochs)
    "learning_rate": 1e-3,  # Adam
    "window": 2500,  # most recent training samples (days) per fit
    "max_fits": 4,  # walk-forward refits at most this often (evaluation/volatility_eval.py)
    "seed": 0,
}
_INT_PARAMS = ("lookback", "units", "epochs", "batch_size", "patience", "window", "max_fits")


def _check_params(spec: ModelSpec) -> dict[str, Any]:
    unknown = set(spec.params) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"{spec.name}: unknown lstm_vol params {sorted(unknown)}; known {sorted(DEFAULTS)}"
        )
    params = {**DEFAULTS, **spec.params}
    for key in _INT_PARAMS:
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{spec.name}: {key} must be an integer >= 1, got {value!r}")
    if params["batch_size"] > MAX_BATCH:
        raise ValueError(
            f"{spec.name}: batch_size must be <= {MAX_BATCH}, got {params['batch_size']}"
        )
    seed = params["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{spec.name}: seed must be an integer >= 0, got {seed!r}")
    rate = params["learning_rate"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < 1:
        raise ValueError(f"{spec.name}: learning_rate must be in (0, 1), got {rate!r}")
    params["learning_rate"] = float(rate)
    return params


def daily_returns(prices: np.ndarray) -> np.ndarray:
    """Daily log returns of the finite, positive closes; returns[j] is the return into close j+1."""
    return np.diff(log_closes(prices))


def vol_features(returns: np.ndarray) -> np.ndarray:
    """(len(returns), 4) features per return day, NaN before day WARMUP-1: log |r| and the log
    trailing 5/21/63-day RMS return, each from returns up to and including that day."""
    r = np.asarray(returns, dtype=np.float64)
    m = r.shape[0]
    out = np.full((m, N_FEATURES), np.nan)
    out[:, 0] = np.log(np.abs(r) + ABS_EPS)
    cum = np.concatenate([[0.0], np.cumsum(r**2)])
    for col, k in enumerate(TRAILING, start=1):
        if m >= k:
            mean_sq = (cum[k:] - cum[:-k]) / k  # day j = k-1 .. m-1
            out[k - 1 :, col] = np.log(np.sqrt(mean_sq) + VOL_EPS)
    out[: WARMUP - 1] = np.nan
    return out


def vol_targets(returns: np.ndarray, horizon_days: Sequence[int]) -> np.ndarray:
    """(len(returns), H): log realised h-day vol of the returns after each day; NaN where the
    h returns after the day are not all in `returns` (not yet known)."""
    r = np.asarray(returns, dtype=np.float64)
    m = r.shape[0]
    cum = np.concatenate([[0.0], np.cumsum(r**2)])
    out = np.full((m, len(horizon_days)), np.nan)
    for col, h in enumerate(horizon_days):
        last = m - 1 - h  # last day whose h following returns are all known
        if last >= 0:
            days = np.arange(last + 1)
            out[days, col] = np.log(np.sqrt(cum[days + 1 + h] - cum[days + 1]) + VOL_EPS)
    return out


def _masked_mse(y_true: Any, y_pred: Any) -> Any:
    from keras import ops  # heavy: delayed

    known = ops.logical_not(ops.isnan(y_true))
    weight = ops.cast(known, y_pred.dtype)
    target = ops.where(known, y_true, ops.zeros_like(y_true))
    squared = weight * ops.square(target - y_pred)
    return ops.sum(squared, axis=-1) / ops.maximum(ops.sum(weight, axis=-1), 1.0)


def _masked_mse_np(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    known = np.isfinite(y_true)
    squared = np.where(known, (np.nan_to_num(y_true) - y_pred) ** 2, 0.0)
    per_sample = squared.sum(axis=1) / np.maximum(known.sum(axis=1), 1)
    return float(per_sample.mean()) if per_sample.size else float("nan")


def _early_stopping(keras: Any, X_val: np.ndarray, Y_val: np.ndarray, patience: int) -> Any:
    """Early stopping on the masked MSE of the validation samples, computed eagerly at each
    epoch end (Keras' own validation would trace a second graph: ~3 s a fit on CPU); the best
    epoch's weights are restored at the end."""

    class EarlyStopping(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.val_losses: list[float] = []
            self.best, self.best_weights, self.wait = np.inf, None, 0

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if not len(X_val):
                self.val_losses.append(float("nan"))
                return
            loss = _masked_mse_np(Y_val, np.asarray(self.model(X_val, training=False)))
            self.val_losses.append(loss)
            if loss < self.best:
                self.best, self.best_weights, self.wait = loss, self.model.get_weights(), 0
            else:
                self.wait += 1
                if self.wait >= patience:
                    self.model.stop_training = True

        def on_train_end(self, logs: dict | None = None) -> None:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return EarlyStopping()


def _keras() -> Any:
    """Keras with TensorFlow held to one thread (as the other models use one BLAS thread)."""
    try:
        import tensorflow as tf  # heavy: delayed

        if tf.config.threading.get_intra_op_parallelism_threads() != 1:
            tf.config.threading.set_intra_op_parallelism_threads(1)
        if tf.config.threading.get_inter_op_parallelism_threads() != 1:
            tf.config.threading.set_inter_op_parallelism_threads(1)
    except (ImportError, RuntimeError):  # another backend, or TF already initialised
        pass
    import keras  # heavy: delayed

    return keras


class LstmVolatilityModel(VolatilityModel):
    """LSTM(units) -> Dense(one per horizon) on `lookback` days of vol features.

    `fit_horizons(prices, horizon_days)` trains one network for all horizons from the closes
    up to the origin (the last close); `forecast_horizons(prices)` forecasts the h-day vol of
    every fitted horizon from the end of `prices`, which may run past the fit origin (the
    walk-forward predicts with the last fit between refits). `fit`/`predict` follow the zoo
    protocol for a single horizon. After a fit: fit_seconds, epochs_run, n_train, n_val,
    fit_origin_row (row of the origin in the closes) and max_target_end_row (the last close
    any training target used; <= fit_origin_row by construction and by assertion).
    """

    vol_kind = "lstm"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.params = _check_params(spec)
        self.lookback = int(self.params["lookback"])
        self.window = int(self.params["window"])
        self.max_fits = int(self.params["max_fits"])
        self.seed = int(self.params["seed"])
        self.dist = "none"
        self.horizon_days: int | None = None
        self.horizons: tuple[int, ...] = ()
        self.fallback_reason: str | None = None
        self.fit_warnings: list[str] = []
        self.results: Any = None
        self.net: Any = None
        self.fit_seconds = 0.0
        self.epochs_run = 0
        self.val_losses: list[float] = []
        self.n_train = 0
        self.n_val = 0
        self.fit_origin_row: int | None = None
        self.max_target_end_row: int | None = None
        self._x_mean = self._x_std = self._y_mean = self._y_std = None

    # --- how much history a fit needs ------------------------------------------------------
    def _first_sample(self) -> int:
        return WARMUP - 1 + self.lookback - 1  # first return day with a complete window

    def _split(self, n_returns: int, horizons: Sequence[int]) -> tuple[np.ndarray, int]:
        """Sample days (oldest first) and the number of them that train (the rest validate)."""
        last = n_returns - 1 - min(horizons)  # newest day with at least one known target
        first = max(self._first_sample(), last - self.window + 1)
        days = np.arange(first, last + 1)
        n_val = int(math.ceil(VALIDATION_FRACTION * days.size)) if days.size else 0
        return days, days.size - n_val

    def _known_in_train(self, n_returns: int, horizons: Sequence[int]) -> int:
        days, n_train = self._split(n_returns, horizons)
        if n_train <= 0:
            return 0
        train = days[:n_train]
        return min(int(np.sum(train + max(h, 0) <= n_returns - 1)) for h in horizons)

    def min_closes(self, horizon_days: Sequence[int]) -> int:
        """The fewest closes with which every horizon has MIN_TARGETS known training targets."""
        horizons = [int(h) for h in horizon_days]
        n = self._first_sample() + max(horizons) + MIN_TARGETS + 1
        while self._known_in_train(n - 1, horizons) < MIN_TARGETS:
            n += 1
        return n

    # --- fit / forecast ----------------------------------------------------------------------
    def fit_horizons(self, prices: np.ndarray, horizon_days: Sequence[int]) -> LstmVolatilityModel:
        horizons = tuple(int(h) for h in horizon_days)
        if not horizons or min(horizons) < 1:
            raise ValueError(f"{self.spec.name}: horizon_days must be >= 1, got {horizons}")
        started = time.perf_counter()
        returns = daily_returns(prices)
        m = returns.shape[0]
        origin_row = m  # the last close's row; return day j ends at close j + 1
        if self._known_in_train(m, horizons) < MIN_TARGETS:
            raise ValueError(
                f"{self.spec.name}: {m + 1} closes are too few for horizons {horizons} "
                f"(need {self.min_closes(horizons)})"
            )
        features = vol_features(returns)
        targets = vol_targets(returns, horizons)
        days, n_train = self._split(m, horizons)
        # The embargo: a target used in training ends at close day + 1 + h <= the origin.
        for col, h in enumerate(horizons):
            used = days[np.isfinite(targets[days, col])]
            assert used.size == 0 or used.max() + 1 + h <= origin_row, (self.spec.name, h)
        known_ends = [
            int(days[np.isfinite(targets[days, col])].max()) + 1 + h
            for col, h in enumerate(horizons)
            if np.isfinite(targets[days, col]).any()
        ]
        train_days = days[:n_train]
        rows = np.unique((train_days[:, None] - np.arange(self.lookback)[None, :]).reshape(-1))
        x_mean = features[rows].mean(axis=0)
        x_std = features[rows].std(axis=0) + 1e-8
        y_train = targets[train_days]
        y_mean = np.nanmean(y_train, axis=0)
        y_std = np.nanstd(y_train, axis=0) + 1e-8
        scaled = (features - x_mean) / x_std
        X = self._windows(scaled, days)
        Y = ((targets[days] - y_mean) / y_std).astype(np.float32)

        keras = _keras()
        keras.backend.clear_session()
        keras.utils.set_random_seed(self.seed)
        net = keras.Sequential(
            [
                keras.Input(shape=(self.lookback, N_FEATURES)),
                # float32 whatever global dtype policy another model set (mixed on CUDA)
                keras.layers.LSTM(int(self.params["units"]), dtype="float32"),
                keras.layers.Dense(len(horizons), dtype="float32"),
            ]
        )
        net.compile(
            optimizer=keras.optimizers.Adam(learning_rate=self.params["learning_rate"]),
            loss=_masked_mse,
        )
        stop = _early_stopping(keras, X[n_train:], Y[n_train:], int(self.params["patience"]))
        net.fit(
            X[:n_train],
            Y[:n_train],
            epochs=int(self.params["epochs"]),
            batch_size=int(self.params["batch_size"]),
            shuffle=True,
            callbacks=[stop],
            verbose=0,
        )
        self.net = net
        self.horizons = horizons
        self._x_mean, self._x_std, self._y_mean, self._y_std = x_mean, x_std, y_mean, y_std
        self.epochs_run = len(stop.val_losses)
        self.val_losses = list(stop.val_losses)
        self.n_train, self.n_val = int(n_train), int(days.size - n_train)
        self.fit_origin_row = origin_row
        self.max_target_end_row = max(known_ends)
        self.fit_seconds = time.perf_counter() - started
        return self

    def _windows(self, scaled: np.ndarray, days: np.ndarray) -> np.ndarray:
        offsets = np.arange(-self.lookback + 1, 1)
        return scaled[days[:, None] + offsets[None, :]].astype(np.float32)

    def forecast_horizons(
        self, prices: np.ndarray, rows: Sequence[int] | None = None
    ) -> np.ndarray:
        """h-day vol forecasts (one per fitted horizon) from the last close of `prices`; with
        `rows` (close rows in `prices`), an array (len(rows), H) of forecasts from each of those
        closes, in one pass: a row's features use only the closes up to it. NaN where a row has
        too little history."""
        if self.net is None:
            raise RuntimeError(f"{self.spec.name}: forecast before fit")
        p = np.asarray(prices, dtype=np.float64).reshape(-1)
        single = rows is None
        at = np.array([p.size - 1] if single else list(rows), dtype=np.int64)
        if at.size == 0:
            return np.empty((0, len(self.horizons)))
        if at.min() < 0 or at.max() >= p.size:
            raise IndexError(f"{self.spec.name}: rows outside the {p.size} closes")
        if not np.all(np.isfinite(p[: at.max() + 1]) & (p[: at.max() + 1] > 0)):
            raise ValueError(f"{self.spec.name}: closes must be finite and positive")
        start = max(0, int(at.min()) - (WARMUP + self.lookback + 1))
        returns = np.diff(np.log(p[start : at.max() + 1]))  # return day j ends at close start+j+1
        days = at - start - 1
        ok = days >= self._first_sample()
        out = np.full((at.size, len(self.horizons)), np.nan)
        if ok.any():
            scaled = (vol_features(returns) - self._x_mean) / self._x_std
            x = self._windows(scaled, days[ok])
            # an eager call: one pass per fit segment, no tf.function to trace
            pred = np.asarray(self.net(x, training=False)).reshape(-1, len(self.horizons))
            out[ok] = np.exp(pred * self._y_std + self._y_mean)
        return out[0] if single else out

    # --- the zoo protocol (one horizon) --------------------------------------------------------
    def fit(self, data: FitData) -> LstmVolatilityModel:
        self.horizon_days = int(data.horizon_days)
        self.fallback_reason, self.net = None, None
        try:
            self.fit_horizons(data.prices, [self.horizon_days])
        except Exception as exc:
            self.fallback_reason = f"fit failed: {type(exc).__name__}: {exc} -> sample vol"
            logger.warning("%s: %s", self.spec.name, self.fallback_reason)
        return self

    def predict(self, X: np.ndarray | None, prices: np.ndarray) -> np.ndarray:
        """Every row gets the h-day volatility forecast from the end of `prices`."""
        if self.horizon_days is None:
            raise RuntimeError(f"{self.spec.name}: predict before fit")
        if self.net is not None and self.horizon_days in self.horizons:
            value = float(self.forecast_horizons(prices)[self.horizons.index(self.horizon_days)])
            return np.full(forecast_rows(X), value)
        returns = daily_returns(prices)[-self.window :]
        sample = float(np.std(returns)) if returns.size > 1 else float("nan")
        return np.full(forecast_rows(X), sample * np.sqrt(self.horizon_days))
