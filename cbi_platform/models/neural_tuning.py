"""Tuning without peeking: Keras Tuner RandomSearch per network family and horizon, on the
development window only, recorded as data (models/neural_tuned.yaml) and fixed from then on.

The data a search sees: the training rows known at the LAST development origin (target date <=
that origin), i.e. nothing from the scored window. Inside them the last `val_fraction` rows in
time order (after a purge gap of h rows, so no overlapping target straddles the split) are the
validation slice the search ranks trials by; the rest trains. The budget is small and fixed:
`max_trials` trials of at most `epochs` epochs with early stopping, one seed.

The search space stays inside the make-run budget: units, dropout and learning rate only (the
window, depth and batch size stay as specs.yaml fixes them).

`evaluation.tuning_data.development_data` cuts the rows; `models.neural_tuned.tuned_params`
reads the recorded choice, and `registry.load_specs(horizon=h)` applies it to every network
spec of that family at that horizon (params named in the record override the spec's; nothing
else changes).
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.device import configure_keras
from cbi_platform.models.neural import NeuralModel, _build_network, split_train_val
from cbi_platform.models.neural_tuned import TUNED_PATH, tuned_table

SEARCH_SPACE: dict[str, list[Any]] = {
    "units": [8, 16, 32],
    "dropout": [0.0, 0.1, 0.2],
    "learning_rate": [3e-4, 1e-3, 3e-3],
}
MAX_TRIALS = 3
EPOCHS = 6
SEED = 0


@dataclass(frozen=True)
class TuningResult:
    family: str
    horizon: str
    best: dict[str, Any]
    best_val_loss: float
    trials: list[dict[str, Any]]  # each: params, val_loss
    n_train: int
    n_val: int
    last_train_date: str  # the last development origin: no row after it is seen
    seconds: float


def _windows(spec: ModelSpec, data: FitData):
    """Standardised windows and targets of the training rows, as NeuralModel.fit builds them."""
    model = NeuralModel(spec)
    X = np.asarray(data.X, dtype=np.float64)
    with np.errstate(all="ignore"):
        mean, std = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    raw = model.training_windows(data)
    windows = np.nan_to_num((raw - mean) / std).astype(np.float32)
    y = np.asarray(data.y, dtype=np.float64)
    scale = float(y.std()) or 1.0
    target = ((y - y.mean()) / scale).astype(np.float32)
    train, val = split_train_val(len(y), model.val_fraction, gap=data.horizon_days)
    return model, windows, target, train, val


def tune(
    spec: ModelSpec,
    data: FitData,
    horizon: str,
    last_train_date: dt.date,
    max_trials: int = MAX_TRIALS,
    epochs: int = EPOCHS,
) -> TuningResult:
    """RandomSearch over SEARCH_SPACE for one network spec on one horizon's development data.

    `data` must hold only rows whose target is known by `last_train_date` (the caller cuts
    them; the result records the date). Returns the best params and every trial's loss."""
    import keras  # heavy: delayed
    import keras_tuner as kt  # heavy: delayed

    started = time.perf_counter()
    configure_keras()
    base, windows, target, train, val = _windows(spec, data)
    if val.size == 0 or train.size == 0:
        raise ValueError(f"{spec.name} {horizon}: too few development rows to tune")
    p = windows.shape[2]

    def build(hp) -> Any:
        params = {
            **spec.params,
            "units": hp.Choice("units", SEARCH_SPACE["units"]),
            "dropout": hp.Choice("dropout", SEARCH_SPACE["dropout"]),
            "learning_rate": hp.Choice("learning_rate", SEARCH_SPACE["learning_rate"]),
        }
        model = NeuralModel(ModelSpec(spec.name, spec.family, spec.kind, params))
        net = _build_network(model, p)
        net.compile(optimizer=keras.optimizers.Adam(model.learning_rate), loss="mse")
        return net

    with tempfile.TemporaryDirectory() as folder:
        keras.utils.set_random_seed(SEED)
        tuner = kt.RandomSearch(
            build,
            objective="val_loss",
            max_trials=max_trials,
            seed=SEED,
            directory=folder,
            project_name=f"{spec.family}_{horizon}",
            overwrite=True,
        )
        tuner.search(
            windows[train],
            target[train],
            validation_data=(windows[val], target[val]),
            epochs=epochs,
            batch_size=base.batch_size,
            callbacks=[keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)],
            verbose=0,
        )
        trials = []
        for trial in tuner.oracle.get_best_trials(num_trials=max_trials):
            trials.append({"params": dict(trial.hyperparameters.values), "val_loss": trial.score})
    keras.backend.clear_session()
    best = trials[0]
    return TuningResult(
        family=spec.family,
        horizon=horizon,
        best={k: _plain(v) for k, v in best["params"].items()},
        best_val_loss=float(best["val_loss"]),
        trials=[
            {"params": {k: _plain(v) for k, v in t["params"].items()}, "val_loss": _f(t)}
            for t in trials
        ],
        n_train=int(train.size),
        n_val=int(val.size),
        last_train_date=last_train_date.isoformat(),
        seconds=time.perf_counter() - started,
    )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _f(trial: dict) -> float | None:
    score = trial["val_loss"]
    return None if score is None or not math.isfinite(score) else float(score)


def write_tuned(
    results: list[TuningResult],
    meta: dict[str, Any],
    budget: dict[str, Any] | None = None,
    path: Path = TUNED_PATH,
):
    """Record the choices as data: {meta, tuned: {family: {horizon: params}}, trials}."""
    tuned: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        tuned.setdefault(r.family, {})[r.horizon] = dict(r.best)
    document = {
        "meta": meta,
        "search_space": SEARCH_SPACE,
        "budget": budget or {"max_trials": MAX_TRIALS, "epochs": EPOCHS, "seed": SEED},
        "tuned": tuned,
        "trials": [
            {
                "family": r.family,
                "horizon": r.horizon,
                "last_train_date": r.last_train_date,
                "n_train": r.n_train,
                "n_val": r.n_val,
                "seconds": round(r.seconds, 1),
                "trials": r.trials,
            }
            for r in results
        ],
    }
    header = (
        "# Keras Tuner RandomSearch on the development window (benchmarks/neural_tuning.py).\n"
        "# Written once, then fixed: registry.load_specs(horizon=h) applies `tuned` to the\n"
        "# network specs of that family and horizon. Do not edit by hand; re-run the benchmark.\n"
    )
    path.write_text(header + yaml.safe_dump(document, sort_keys=False))
    tuned_table.cache_clear()
