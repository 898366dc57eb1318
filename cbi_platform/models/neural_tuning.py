"""Tuning without peeking: Keras Tuner RandomSearch per network family and horizon, on the
development window only, recorded as data (models/neural_tuned.yaml) and fixed from then on.

The data a search sees: the training rows known at the LAST development origin (target date <=
that origin), i.e. nothing from the scored window. Inside them the last `val_fraction` rows in
time order (after a purge gap of h rows, so no overlapping target straddles the split) are the
validation slice the search ranks trials by; the rest trains. The budget is small and fixed:
`max_trials` trials of at most `epochs` epochs with early stopping, one seed.

The search space stays inside the make-run budget: units, dropout and learning rate only (the
window, depth and batch size stay as specs.yaml fixes them).

`tuned_params(family, horizon)` reads the recorded choice; `registry.load_specs(horizon=h)`
applies it to every network spec of that family at that horizon (params named in the record
override the spec's; nothing else changes).
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cbi_platform.models.base import FitData, ModelSpec

TUNED_PATH = Path(__file__).with_name("neural_tuned.yaml")
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


def development_data(frame, horizon: str, cfg) -> tuple[FitData, dt.date]:
    """The rows a search may see: those whose target is known by the LAST development origin of
    the protocol at this horizon (and the feature history up to that origin), and its date."""
    import polars as pl

    from cbi_platform.evaluation.horizon_run import origin_plan
    from cbi_platform.evaluation.origins import DEVELOPMENT
    from cbi_platform.features.contract import (
        DATE,
        HORIZONS,
        PRICE,
        TARGET_DATE,
        TARGET_LOGRET,
        feature_columns,
    )

    frame = frame.sort(DATE)
    plan = origin_plan(frame[DATE], horizon, cfg)
    development = [d for d, r in zip(plan.dates, plan.role, strict=True) if r == DEVELOPMENT]
    if not development:
        raise ValueError(f"{horizon}: the protocol has no development origins on this frame")
    last = max(development)
    upto = frame.filter(pl.col(DATE) <= last)
    names = feature_columns(upto)
    known = upto.select(
        ((pl.col(TARGET_DATE) <= last) & pl.col(TARGET_LOGRET).is_not_null()).fill_null(False)
    ).to_series()
    mask = known.to_numpy()
    X = upto.select(names).cast(pl.Float64).to_numpy()
    y = upto[TARGET_LOGRET].cast(pl.Float64).to_numpy()
    data = FitData(
        X=X[mask],
        y=y[mask],
        prices=upto[PRICE].to_numpy(),
        horizon_days=HORIZONS[horizon],
        feature_names=names,
        history=X,
        train_rows=np.flatnonzero(mask),
    )
    return data, last


def _windows(spec: ModelSpec, data: FitData):
    """Standardised windows and targets of the training rows, as NeuralModel.fit builds them."""
    from cbi_platform.models.neural import NeuralModel, split_train_val

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
    import time

    import keras
    import keras_tuner as kt

    from cbi_platform.models.device import configure_keras
    from cbi_platform.models.neural import _build_network

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
        from cbi_platform.models.neural import NeuralModel

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


@cache
def tuned_table(path: str = str(TUNED_PATH)) -> dict[str, dict[str, dict[str, Any]]]:
    file = Path(path)
    if not file.is_file():
        return {}
    document = yaml.safe_load(file.read_text()) or {}
    return document.get("tuned") or {}


def tuned_params(family: str, horizon: str, path: str | None = None) -> dict[str, Any]:
    """The recorded hyperparameters of a network family at a horizon ({} when none)."""
    table = tuned_table(path or str(TUNED_PATH))
    return dict(table.get(family, {}).get(horizon, {}))
