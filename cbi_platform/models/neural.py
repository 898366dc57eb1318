"""Keras sequence networks: one class, seven architectures chosen by `spec.family`.

Families: dense (feed-forward on the flattened window), lstm, gru (1 or 2 layers),
gru_attention (GRU sequence + additive attention pooling over time), tcn (dilated causal Conv1D
with residual connections, last time step), cnn_lstm (causal Conv1D then LSTM) and attention (a
small Transformer encoder block with learned positions and global average pooling). The model
code uses only `keras.layers` / `keras.ops`, so it runs on the TensorFlow, JAX or torch backend.
Keras is imported inside methods only: the registry builds every spec when Dagster loads.

Data. A forecast for row t reads the `lookback` feature rows ending at t (the start of the data
is padded by repeating the first row). Training windows come from `FitData.history` at
`FitData.train_rows` when given (non-contiguous rows, e.g. regime specialists, still see their
true preceding rows), else from `FitData.X` read as consecutive rows. Features are standardised
with the training rows' mean/std (std 0 -> 1; NaN -> 0 after standardising); the target is
centred and divided by its std, undone at predict.

Validation. The last `val_fraction` of the training rows in time order, after a purge gap of
`horizon_days` rows (a training target overlapping a validation target would leak into early
stopping), is the validation slice for EarlyStopping(patience, restore_best_weights=True); only
the training slice is shuffled. Fewer than MIN_VALIDATION_ROWS (30) training rows: no
validation and no early stopping, all `epochs` are run on what there is. No rows at all:
ValueError.

Measured on this machine (2 CPU cores shared with other jobs, TensorFlow 2.21 CPU backend, one
thread, float32), GRU(16), 2,500 rows x lookback 20 x 42 features, batch 32, 10 epochs, no
validation; per epoch = (10-epoch fit - 1-epoch fit) / 9, the rest is tracing:
  steps_per_execution=1,  jit_compile=False: ~1.45 s per epoch, ~3.7 s tracing
  steps_per_execution=16, jit_compile=False: ~1.05 s per epoch, ~2.9 s tracing
  steps_per_execution=16, jit_compile=True : ~0.77 s per epoch, ~7.6 s tracing + XLA compile
Decision: steps_per_execution=16, no jit_compile: XLA saves ~0.3 s an epoch but costs ~4.5 s more
per fit, so it pays only beyond ~15 epochs, and with EarlyStopping and epochs <= 50 (default 10)
most fits stop earlier.
Predict, one origin (20 rows -> one GRU window): `predict_on_batch` ~5-6.5 ms a call,
`model(x, training=False)` ~240 ms (an eager GRU runs its time loop op by op), `model.predict`
~230-320 ms; `predict_on_batch` it is. Tiny networks (tests): a fit is ~4-8 s of CPU, mostly
tracing (the validation step's trace is ~0.7-1 s of it).
Contributions (Kernel SHAP, SHAP_NSAMPLES=512 coalitions x SHAP_BACKGROUND=16 windows = 8,192
forward windows, p=42, same GRU): ~0.35 s a call, ~1.8 s for the first call on a fitted model
(it traces the large batch shape).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cbi_platform.models.attribution import ADDITIVITY_RTOL
from cbi_platform.models.base import MAX_LOOKBACK, FitData, ModelSpec
from cbi_platform.models.baselines import training_weights
from cbi_platform.models.device import configure_keras, peak_memory_bytes

RECURRENT_BATCH_CAP = 32
BATCH_CAPS = {
    "dense": 256,
    "lstm": RECURRENT_BATCH_CAP,
    "gru": RECURRENT_BATCH_CAP,
    "gru_attention": RECURRENT_BATCH_CAP,
    "tcn": RECURRENT_BATCH_CAP,
    "cnn_lstm": RECURRENT_BATCH_CAP,
    "attention": 16,
}
FAMILIES = tuple(BATCH_CAPS)
MAX_EPOCHS = 50
MAX_HEADS = 4
MIN_VALIDATION_ROWS = 30  # below this many training rows: no validation, no early stopping
STEPS_PER_EXECUTION = 16
JIT_COMPILE = False
PREDICT_CHUNK = 1024  # windows per forward call (bounds the activations held at once)
# Kernel SHAP: background windows sampled once at fit time, and coalitions per explanation.
SHAP_BACKGROUND = 16
SHAP_NSAMPLES = 512

_COMMON = {
    "lookback",
    "units",
    "dropout",
    "epochs",
    "batch_size",
    "patience",
    "val_fraction",
    "learning_rate",
    "seed",
    "max_train_rows",
}
_FAMILY_PARAMS = {
    "dense": {"layers"},
    "lstm": {"layers"},
    "gru": {"layers"},
    "gru_attention": {"layers"},
    "tcn": {"filters", "kernel_size", "dilations"},
    "cnn_lstm": {"filters", "kernel_size"},
    "attention": {"heads"},
}
_DEFAULT_BATCH = {family: min(cap, 64) for family, cap in BATCH_CAPS.items()}


# ---- pure helpers -------------------------------------------------------------------------


def window_index(rows: np.ndarray, lookback: int) -> np.ndarray:
    """(n, lookback) positions of the rows each window reads: the `lookback` rows ending at each
    row, oldest first; positions before 0 repeat row 0 (padding at the start of the data)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    offsets = np.arange(-lookback + 1, 1, dtype=np.int64)
    return np.clip(rows[:, None] + offsets[None, :], 0, None)


def make_windows(history: np.ndarray, rows: np.ndarray, lookback: int) -> np.ndarray:
    """(n, lookback, p) windows of `history` ending at `rows` (padded at the start)."""
    history = np.asarray(history)
    if history.ndim != 2:
        raise ValueError(f"history must be 2-D (rows, features), got {history.shape}")
    idx = window_index(rows, lookback)
    if idx.size and idx.max() >= history.shape[0]:
        raise ValueError(f"row {int(idx.max())} is beyond history of {history.shape[0]} rows")
    return history[idx]


def split_train_val(n: int, val_fraction: float, gap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in time order) of the training and validation rows among n training rows.

    Validation is the last ceil(n * val_fraction) rows; `gap` rows before it are dropped from
    training (purge of overlapping targets). n < MIN_VALIDATION_ROWS or val_fraction == 0: all
    rows train, no validation. The gap shrinks if it would leave fewer training than
    validation rows.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    everything = np.arange(n, dtype=np.int64)
    if n < MIN_VALIDATION_ROWS or val_fraction == 0.0:
        return everything, np.empty(0, dtype=np.int64)
    n_val = max(1, int(math.ceil(n * val_fraction)))
    start_val = n - n_val
    gap = int(max(0, min(gap, start_val - n_val)))
    return everything[: start_val - gap], everything[start_val:]


# ---- parameters ---------------------------------------------------------------------------


def _int_param(spec: ModelSpec, key: str, default: int, low: int, high: int | None) -> int:
    value = spec.params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{spec.name}: {key} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{spec.name}: {key}={value} out of range {bound}")
    return int(value)


def _float_param(spec: ModelSpec, key: str, default: float, low: float, high: float) -> float:
    value = spec.params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{spec.name}: {key} must be a number, got {value!r}")
    if not low <= float(value) < high:
        raise ValueError(f"{spec.name}: {key}={value} out of range [{low}, {high})")
    return float(value)


# ---- architectures ------------------------------------------------------------------------

_custom_layers: dict[str, Any] = {}


def _custom_objects() -> dict[str, Any]:
    """The one custom layer (learned positions), defined and registered on first use."""
    if _custom_layers:
        return _custom_layers
    import keras  # heavy: delayed

    @keras.saving.register_keras_serializable(package="cbi_platform")
    class PositionEmbedding(keras.layers.Layer):
        """Adds a learned (sequence_length, width) position embedding to its input."""

        def build(self, input_shape):
            self.embedding = self.add_weight(
                shape=(int(input_shape[-2]), int(input_shape[-1])),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="embedding",
            )

        def call(self, inputs):
            return inputs + keras.ops.cast(self.embedding, inputs.dtype)

    _custom_layers["PositionEmbedding"] = PositionEmbedding
    _custom_layers["cbi_platform>PositionEmbedding"] = PositionEmbedding
    return _custom_layers


def _build_network(model: NeuralModel, p: int) -> Any:
    import keras  # heavy: delayed
    from keras import layers  # heavy: delayed

    L, units, dropout = model.lookback, model.units, model.dropout
    inputs = keras.Input(shape=(L, p), name="window")
    x = inputs
    family = model.spec.family
    if family == "dense":
        x = layers.Flatten()(x)
        for _ in range(model.layers):
            x = layers.Dense(units, activation="relu")(x)
            if dropout:
                x = layers.Dropout(dropout)(x)
    elif family in ("lstm", "gru"):
        cell = layers.LSTM if family == "lstm" else layers.GRU
        for i in range(model.layers):
            x = cell(units, return_sequences=i < model.layers - 1, dropout=dropout)(x)
    elif family == "gru_attention":
        for _ in range(model.layers):
            x = layers.GRU(units, return_sequences=True, dropout=dropout)(x)
        score = layers.Dense(units, activation="tanh")(x)  # additive (Bahdanau) scoring
        score = layers.Dense(1, use_bias=False)(score)
        weights = layers.Softmax(axis=1)(layers.Reshape((L,))(score))
        x = layers.Dot(axes=1)([weights, x])  # (batch, L) . (batch, L, units) -> (batch, units)
    elif family == "tcn":
        x = layers.Conv1D(model.filters, 1)(x)
        for rate in model.dilations:
            y = layers.Conv1D(
                model.filters,
                model.kernel_size,
                padding="causal",
                dilation_rate=rate,
                activation="relu",
            )(x)
            if dropout:
                y = layers.Dropout(dropout)(y)
            x = layers.Add()([x, y])
        x = layers.Flatten()(layers.Cropping1D((L - 1, 0))(x))  # the last time step
    elif family == "cnn_lstm":
        x = layers.Conv1D(model.filters, model.kernel_size, padding="causal", activation="relu")(x)
        x = layers.LSTM(units, dropout=dropout)(x)
    elif family == "attention":
        position = _custom_objects()["PositionEmbedding"]
        x = position()(layers.Dense(units)(x))
        attended = layers.MultiHeadAttention(
            num_heads=model.heads, key_dim=max(1, units // model.heads), dropout=dropout
        )(x, x)
        x = layers.LayerNormalization()(layers.Add()([x, attended]))
        ff = layers.Dense(2 * units, activation="relu")(x)
        ff = layers.Dense(units)(ff)
        if dropout:
            ff = layers.Dropout(dropout)(ff)
        x = layers.LayerNormalization()(layers.Add()([x, ff]))
        x = layers.GlobalAveragePooling1D()(x)
    else:  # pragma: no cover - rejected in __init__
        raise ValueError(f"{model.spec.name}: unknown family {family!r}")
    outputs = layers.Dense(1, dtype="float32", name="forecast")(x)
    return keras.Model(inputs, outputs, name=f"{family}_net")


# ---- the model ----------------------------------------------------------------------------


class NeuralModel:
    """A Keras network forecasting the h-day log return from the last `lookback` feature rows.

    Params: lookback (20, <= 256), units (16), layers (1|2; dense/lstm/gru/gru_attention),
    heads (attention, 2, <= 4), filters (16), kernel_size (3), dilations ([1,2,4,8]; tcn),
    dropout (0.0), epochs (10, <= 50), batch_size (capped: 32 recurrent/conv, 16 attention,
    256 dense), patience (3), val_fraction (0.15), learning_rate (1e-3), seed (0).
    """

    # Kernel SHAP costs ~0.35 s a call: the walk-forward explains a network at its refit
    # origins and the live origin only (a stated subset), not at every origin.
    explain_refits_only = True

    def __init__(self, spec: ModelSpec) -> None:
        if spec.family not in FAMILIES:
            raise ValueError(f"{spec.name}: unknown neural family {spec.family!r}; {FAMILIES}")
        allowed = _COMMON | _FAMILY_PARAMS[spec.family]
        unknown = sorted(set(spec.params) - allowed)
        if unknown:
            raise ValueError(
                f"{spec.name}: unknown {spec.family} params {unknown}; allowed {sorted(allowed)}"
            )
        self.spec = spec
        family = spec.family
        self.lookback = _int_param(spec, "lookback", 20, 1, MAX_LOOKBACK)
        self.units = _int_param(spec, "units", 16, 1, 1024)
        self.layers = _int_param(spec, "layers", 1, 1, 2)
        self.heads = _int_param(spec, "heads", 2, 1, MAX_HEADS)
        self.filters = _int_param(spec, "filters", 16, 1, 1024)
        self.kernel_size = _int_param(spec, "kernel_size", 3, 1, 64)
        dilations = spec.params.get("dilations", [1, 2, 4, 8])
        if (
            not isinstance(dilations, list | tuple)
            or not dilations
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dilations)
        ):
            raise ValueError(f"{spec.name}: dilations must be a list of integers >= 1")
        self.dilations = [int(d) for d in dilations]
        self.dropout = _float_param(spec, "dropout", 0.0, 0.0, 1.0)
        self.epochs = _int_param(spec, "epochs", 10, 1, MAX_EPOCHS)
        cap = BATCH_CAPS[family]
        batch = spec.params.get("batch_size", _DEFAULT_BATCH[family])
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"{spec.name}: batch_size must be an integer >= 1, got {batch!r}")
        if batch > cap:
            raise ValueError(f"{spec.name}: batch_size {batch} exceeds the {family} cap of {cap}")
        self.batch_size = int(batch)
        self.patience = _int_param(spec, "patience", 3, 0, None)
        self.val_fraction = _float_param(spec, "val_fraction", 0.15, 0.0, 0.9)
        self.learning_rate = _float_param(spec, "learning_rate", 1e-3, 1e-8, 1.0)
        self.seed = _int_param(spec, "seed", 0, 0, None)
        # Train on the most recent rows only (None: all): the make-run budget's lever.
        self.max_train_rows = (
            None
            if spec.params.get("max_train_rows") is None
            else _int_param(spec, "max_train_rows", 0, 50, None)
        )

        self.feature_names: list[str] = []
        self.fallback_reason: str | None = None
        self.feature_mean: np.ndarray | None = None
        self.feature_std: np.ndarray | None = None
        self.target_mean = 0.0
        self.target_scale = 1.0
        self.background: np.ndarray | None = None  # standardised training windows for SHAP
        self.train_index: np.ndarray | None = None  # positions among the training rows
        self.val_index: np.ndarray | None = None
        self.fit_seconds = 0.0
        self.epochs_run = 0
        self.n_params = 0
        self.device: str | None = None
        self.precision: str | None = None
        self.peak_memory: dict[str, int | None] | None = None
        self.history: list[float] = []  # validation loss per epoch (training loss without one)
        self._net: Any = None

    # -- data -------------------------------------------------------------------------------

    def _standardise(self, rows: np.ndarray) -> np.ndarray:
        assert self.feature_mean is not None and self.feature_std is not None
        z = (np.asarray(rows, dtype=np.float64) - self.feature_mean) / self.feature_std
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)

    def _recent(self, data: FitData) -> FitData:
        """The last `max_train_rows` training rows (in time order), or all of them."""
        n = np.asarray(data.X).shape[0]
        if self.max_train_rows is None or n <= self.max_train_rows:
            return data
        keep = slice(n - self.max_train_rows, n)
        return dataclasses.replace(
            data,
            X=np.asarray(data.X)[keep],
            y=np.asarray(data.y)[keep],
            sample_weight=None if data.sample_weight is None else data.sample_weight[keep],
            train_rows=None if data.train_rows is None else np.asarray(data.train_rows)[keep],
        )

    def training_windows(self, data: FitData) -> np.ndarray:
        """The raw (unstandardised) (n, lookback, p) windows of the training rows."""
        X = np.asarray(data.X, dtype=np.float64)
        if data.history is not None and data.train_rows is not None:
            history = np.asarray(data.history, dtype=np.float64)
            rows = np.asarray(data.train_rows, dtype=np.int64).reshape(-1)
            if rows.shape[0] != X.shape[0]:
                raise ValueError(f"{self.spec.name}: {rows.shape[0]} train_rows for {len(X)} rows")
            if history.ndim != 2 or history.shape[1] != X.shape[1]:
                raise ValueError(f"{self.spec.name}: history {history.shape} vs X {X.shape}")
            if rows.size and (rows.min() < 0 or np.any(np.diff(rows) <= 0)):
                raise ValueError(f"{self.spec.name}: train_rows must be increasing positions")
            return make_windows(history, rows, self.lookback)
        return make_windows(X, np.arange(X.shape[0]), self.lookback)

    # -- fit --------------------------------------------------------------------------------

    def fit(self, data: FitData) -> NeuralModel:
        import keras  # heavy: delayed

        start = time.perf_counter()
        data = self._recent(data)
        X = np.asarray(data.X, dtype=np.float64)
        y = np.asarray(data.y, dtype=np.float64).reshape(-1)
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise ValueError(f"{self.spec.name}: X {X.shape} does not match y {y.shape}")
        if X.shape[1] != len(data.feature_names):
            raise ValueError(
                f"{self.spec.name}: {X.shape[1]} columns, {len(data.feature_names)} names"
            )
        if X.shape[0] == 0:
            raise ValueError(f"{self.spec.name}: no training rows")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{self.spec.name}: training targets must be finite")
        weights = training_weights(self.spec, data)
        self.feature_names = list(data.feature_names)

        info = configure_keras()
        self.device, self.precision = info.kind, info.precision

        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: mean 0
            mean = np.nanmean(X, axis=0) if X.size else np.zeros(X.shape[1])
            std = np.nanstd(X, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        self.feature_mean, self.feature_std = mean, std
        self.target_mean = float(y.mean())
        scale = float(y.std())
        self.target_scale = scale if np.isfinite(scale) and scale > 0 else 1.0

        raw = self.training_windows(data)
        windows = self._standardise(raw.reshape(-1, X.shape[1])).reshape(raw.shape)
        windows = windows.astype(np.float32)
        target = ((y - self.target_mean) / self.target_scale).astype(np.float32)

        train_idx, val_idx = split_train_val(len(y), self.val_fraction, gap=data.horizon_days)
        self.train_index, self.val_index = train_idx, val_idx

        keras.backend.clear_session()
        keras.utils.set_random_seed(self.seed)
        net = _build_network(self, X.shape[1])
        net.compile(
            optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
            loss="mse",
            steps_per_execution=STEPS_PER_EXECUTION,
            jit_compile=JIT_COMPILE,
        )
        callbacks = []
        validation = None
        if val_idx.size:
            validation = (windows[val_idx], target[val_idx])
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=self.patience, restore_best_weights=True
                )
            )
        fitted = net.fit(
            windows[train_idx],
            target[train_idx],
            sample_weight=None if weights is None else weights[train_idx].astype(np.float32),
            validation_data=validation,
            batch_size=self.batch_size,
            epochs=self.epochs,
            shuffle=True,
            callbacks=callbacks,
            verbose=0,
        )
        key = "val_loss" if val_idx.size else "loss"
        self.history = [float(v) for v in fitted.history.get(key, [])]
        self.epochs_run = len(fitted.history.get("loss", []))
        self.n_params = int(net.count_params())
        self._net = net

        rng = np.random.default_rng(self.seed)
        pool = train_idx if train_idx.size else np.arange(len(y))
        pick = np.sort(rng.choice(pool, size=min(SHAP_BACKGROUND, pool.size), replace=False))
        self.background = windows[pick].astype(np.float64)
        gc.collect()
        self.fit_seconds = time.perf_counter() - start
        self.peak_memory = peak_memory_bytes().as_dict()
        return self

    def fit_info(self) -> dict[str, Any]:
        """What the walk-forward's fit report and the asset metadata record about the last fit."""
        rss = (self.peak_memory or {}).get("rss_bytes")
        return {
            "device": self.device,
            "precision": self.precision,
            "fit_seconds": self.fit_seconds,
            "epochs_run": self.epochs_run,
            "n_params": self.n_params,
            "peak_memory_mb": None if rss is None else rss / 2**20,
        }

    # -- predict ----------------------------------------------------------------------------

    @property
    def network(self) -> Any:
        if self._net is None:
            raise RuntimeError(f"{self.spec.name}: not fitted")
        return self._net

    def _graph(self) -> Any:
        """The network's inference graph, traced once per network and process for any batch
        size (input signature (None, lookback, features)). `predict_on_batch` traced a new
        graph for each new batch shape (~0.1-0.4 s each: a cold daily refresh traced 50 over 25
        networks); the same ops on the same inputs give the same numbers (checked in tests)."""
        net = self.network
        cached = self.__dict__.get("_graph_fn")
        if cached is not None and cached[0] is net:
            return cached[1]
        import keras  # heavy: delayed

        if keras.backend.backend() != "tensorflow":
            return net.predict_on_batch
        import tensorflow as tf  # heavy: delayed

        spec = tf.TensorSpec([None, self.lookback, len(self.feature_names)], tf.float32)
        fn = tf.function(lambda x: net(x, training=False), input_signature=[spec])
        self.__dict__["_graph_fn"] = (net, fn)
        return fn

    def _forward(self, windows: np.ndarray) -> np.ndarray:
        """Standardised windows -> forecasts in target units (float64)."""
        import keras  # heavy: delayed

        forward = self._graph()
        windows = np.asarray(windows, dtype=np.float32)
        out = []
        for lo in range(0, windows.shape[0], PREDICT_CHUNK):
            chunk = forward(windows[lo : lo + PREDICT_CHUNK])
            out.append(np.asarray(keras.ops.convert_to_numpy(chunk), dtype=np.float64).reshape(-1))
        z = np.concatenate(out) if out else np.empty(0)
        return self.target_mean + self.target_scale * z

    def _windows_for(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.shape[1] != len(self.feature_names):
            raise ValueError(
                f"{self.spec.name}: predict got {X.shape[1]} columns, "
                f"fitted on {len(self.feature_names)}"
            )
        z = self._standardise(X)
        return make_windows(z, np.arange(z.shape[0]), self.lookback)

    def predict(self, X: np.ndarray, prices: np.ndarray | None = None) -> np.ndarray:
        """One forecast per row of X (consecutive rows, oldest first), each from the window
        ending at that row; windows reaching before X's first row repeat it."""
        self.network  # noqa: B018 - raises when unfitted
        return self._forward(self._windows_for(X))

    # -- explanations -----------------------------------------------------------------------

    def contributions(self, X: np.ndarray, feature_names: list[str]) -> np.ndarray:
        """[phi_1 .. phi_p, base] explaining the forecast of the last row of X.

        Kernel SHAP over p feature groups, group j = feature j's whole window (all lookback
        steps), so a feature's attribution is summed over time by construction. Background:
        the SHAP_BACKGROUND training windows sampled at fit; a masked group takes a background
        window's values (averaged over the background, the usual interventional Kernel SHAP).
        SHAP_NSAMPLES coalitions (all 2^p - 2 when fewer). base + sum == predict(X)[-1] is
        checked (rtol ADDITIVITY_RTOL of |base| + sum|phi|).
        """
        import shap  # heavy: delayed

        if list(feature_names) != self.feature_names:
            raise ValueError(f"{self.spec.name}: feature names differ from the fit's")
        if self.background is None:
            raise RuntimeError(f"{self.spec.name}: not fitted")
        window = self._windows_for(X)[-1]  # (lookback, p), standardised
        background = self.background
        p = window.shape[1]
        n_bg = background.shape[0]
        # Coalitions are coded per group: 0 = the explained window's values, b + 1 = those of
        # background window b. The explained point is all zeros; background row b is all b+1.
        codes = np.repeat(np.arange(1, n_bg + 1, dtype=np.float64)[:, None], p, axis=1)
        columns = np.arange(p)

        def f(coded: np.ndarray) -> np.ndarray:
            # Built and run PREDICT_CHUNK coalitions at a time: all of them at once (8,192
            # windows) held ~0.5 GB more per process at the peak.
            out = []
            for lo in range(0, coded.shape[0], PREDICT_CHUNK):
                source = np.asarray(np.rint(coded[lo : lo + PREDICT_CHUNK]), dtype=np.int64) - 1
                from_background = background[np.maximum(source, 0), :, columns]  # (m, p, L)
                built = np.where(
                    (source < 0)[:, None, :],
                    window[None, :, :],
                    from_background.transpose(0, 2, 1),
                )
                out.append(self._forward(built))
            return np.concatenate(out) if out else np.empty(0)

        explainer = shap.KernelExplainer(f, codes, link="identity", silent=True)
        phi = explainer.shap_values(
            np.zeros((1, p)), nsamples=SHAP_NSAMPLES, l1_reg=False, silent=True
        )
        phi = np.asarray(phi, dtype=np.float64).reshape(-1)
        base = float(np.ravel(explainer.expected_value)[0])
        prediction = float(self.predict(X)[-1])
        gap = abs(base + phi.sum() - prediction)
        scale = abs(base) + np.abs(phi).sum()
        if not gap <= ADDITIVITY_RTOL * scale + 1e-12:
            raise AssertionError(
                f"{self.spec.name}: Kernel SHAP misses the forecast by {gap:.3g} "
                f"(base {base:.6g} + sum {phi.sum():.6g} vs {prediction:.6g})"
            )
        return np.append(phi, base)

    # -- persistence ------------------------------------------------------------------------

    def signature(self) -> dict[str, Any]:
        """Input/output description for MLflow logging."""
        return {
            "inputs": {
                "name": "window",
                "shape": [None, self.lookback, len(self.feature_names)],
                "dtype": "float32",
                "features": list(self.feature_names),
                "standardised": True,
            },
            "outputs": {
                "name": "forecast",
                "shape": [None],
                "dtype": "float64",
                "meaning": "h-day log return (target mean/scale undone)",
            },
            "family": self.spec.family,
            "lookback": self.lookback,
        }

    def _scaler_state(self) -> dict[str, Any]:
        assert self.feature_mean is not None and self.feature_std is not None
        return {
            "feature_names": self.feature_names,
            "feature_mean": self.feature_mean.tolist(),
            "feature_std": self.feature_std.tolist(),
            "target_mean": self.target_mean,
            "target_scale": self.target_scale,
            "lookback": self.lookback,
            "background": None if self.background is None else self.background.tolist(),
        }

    def _apply_scaler_state(self, state: dict[str, Any]) -> None:
        self.feature_names = list(state["feature_names"])
        self.feature_mean = np.asarray(state["feature_mean"], dtype=np.float64)
        self.feature_std = np.asarray(state["feature_std"], dtype=np.float64)
        self.target_mean = float(state["target_mean"])
        self.target_scale = float(state["target_scale"])
        if int(state["lookback"]) != self.lookback:
            raise ValueError(
                f"{self.spec.name}: saved lookback {state['lookback']} != spec's {self.lookback}"
            )
        background = state.get("background")
        self.background = None if background is None else np.asarray(background, dtype=np.float64)

    def save(self, folder: Path) -> list[Path]:
        """model.keras, a TensorFlow SavedModel (TensorFlow backend only; skipped otherwise)
        and scaler.json (means, stds, target mean/scale, lookback, feature names)."""
        import keras  # heavy: delayed

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "model.keras"]
        self.network.save(written[0])
        if keras.backend.backend() == "tensorflow":
            self.network.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
            written.append(folder / "saved_model")
        scaler = folder / "scaler.json"
        scaler.write_text(json.dumps(self._scaler_state(), indent=1))
        written.append(scaler)
        return written

    @classmethod
    def load(cls, folder: Path, spec: ModelSpec) -> NeuralModel:
        import keras  # heavy: delayed

        folder = Path(folder)
        model = cls(spec)
        model._apply_scaler_state(json.loads((folder / "scaler.json").read_text()))
        model._net = keras.saving.load_model(
            folder / "model.keras", custom_objects=_custom_objects()
        )
        model.n_params = int(model._net.count_params())
        return model

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_graph_fn", None)  # rebuilt on first use
        net = state.pop("_net", None)
        state["_net_bytes"] = None
        if net is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.keras")
                net.save(path)
                with open(path, "rb") as handle:
                    state["_net_bytes"] = handle.read()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        blob = state.pop("_net_bytes", None)
        self.__dict__.update(state)
        self._net = None
        if blob is not None:
            import keras  # heavy: delayed

            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.keras")
                with open(path, "wb") as handle:
                    handle.write(blob)
                self._net = keras.saving.load_model(path, custom_objects=_custom_objects())
