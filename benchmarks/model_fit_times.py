"""Fit time of every model family on one thread, and the walk-forward cost of the zoo.

Usage: .venv/bin/python benchmarks/model_fit_times.py [--repeats 3] [--out PATH]

Data: 5,000 rows x 42 random features (5% NaN) with a weak nonlinear signal, weights from
1 to 100, and a 5,000-close random-walk price path. Two tables: each family at reference
(near library default) parameters, then each spec of specs.yaml at its own parameters (the
regime specialists on a third of the rows). The budget multiplies each spec's fit time by its
number of refits over the walk-forward origins, plus one predict per origin.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import importlib  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _machine import record_run  # noqa: E402

from cbi_platform.features.contract import HORIZONS  # noqa: E402
from cbi_platform.models.base import FitData, ModelSpec  # noqa: E402
from cbi_platform.models.registry import build_model, load_specs, spec_horizons  # noqa: E402

ROWS, FEATURES, CLOSES = 5000, 42, 5000
SPECIALIST_ROW_SHARE = 1 / 3  # a detected regime holds roughly a third of the rows
ORIGINS = 100  # walk-forward origins per horizon
TARGET_SECONDS_PER_HORIZON = 90.0
DEFAULT_OUT = Path(__file__).parent / "results" / "model_fit_times.md"

REFERENCE_SPECS = [
    ModelSpec("lightgbm gbdt, 100 trees, defaults", "lightgbm", "tree", {"n_estimators": 100}),
    ModelSpec(
        "lightgbm dart, 100 trees, defaults",
        "lightgbm",
        "tree",
        {"boosting": "dart", "n_estimators": 100},
    ),
    ModelSpec(
        "xgboost dart, 100 rounds, defaults (eta .3, depth 6)",
        "xgboost",
        "tree",
        {"booster": "dart", "n_estimators": 100},
    ),
    ModelSpec("ridge, alpha 1", "ridge", "sanity", {"alpha": 1.0}),
    ModelSpec("arima (1,1,0)+drift, 1500 closes", "arima", "statistical", {}),
    ModelSpec("ets A,Ad,N, 1500 closes", "ets", "statistical", {}),
    ModelSpec("theta, 1500 closes", "theta", "statistical", {}),
    ModelSpec("garch(1,1) t, 2500 returns", "garch", "volatility", {}),
    ModelSpec("gjr-garch(1,1,1) t, 2500 returns", "gjr_garch", "volatility", {}),
]


def synthetic_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(ROWS, FEATURES))
    X[rng.random(X.shape) < 0.05] = np.nan
    signal = 0.02 * np.sign(np.nan_to_num(X[:, 0])) + 0.01 * np.tanh(np.nan_to_num(X[:, 1]))
    y = signal + rng.normal(0.0, 0.05, ROWS)
    weights = rng.uniform(1.0, 100.0, ROWS)
    prices = 40.0 * np.exp(np.cumsum(0.0002 + 0.015 * rng.standard_normal(CLOSES)))
    return X, y, weights, prices


def time_spec(spec: ModelSpec, data: FitData, repeats: int) -> tuple[float, float]:
    """Median fit seconds and median one-row predict seconds (fresh model per repeat)."""
    fits, predicts = [], []
    for _ in range(repeats):
        model = build_model(spec)
        start = time.perf_counter()
        model.fit(data)
        fits.append(time.perf_counter() - start)
        start = time.perf_counter()
        forecast = model.predict(data.X[-1:], data.prices)
        predicts.append(time.perf_counter() - start)
        if not np.all(np.isfinite(forecast)):
            raise RuntimeError(f"{spec.name}: non-finite forecast")
        if getattr(model, "fallback_reason", None):
            raise RuntimeError(f"{spec.name}: fell back: {model.fallback_reason}")
    return statistics.median(fits), statistics.median(predicts)


def fit_data(spec: ModelSpec, arrays: tuple, horizon_days: int) -> FitData:
    X, y, weights, prices = arrays
    rows = int(ROWS * SPECIALIST_ROW_SHARE) if spec.kind == "specialist" else ROWS
    return FitData(
        X=X[-rows:],
        y=y[-rows:],
        prices=prices,
        horizon_days=horizon_days,
        feature_names=feature_names(spec),
        sample_weight=weights[-rows:] if spec.weighted else None,
    )


def feature_names(spec: ModelSpec) -> list[str]:
    """Synthetic names, except that features a spec constrains (monotone) keep their real names,
    so the constrained fit is timed as it runs in the pipeline."""
    named = list(spec.params.get("monotone", {}))
    return named + [f"f_{i:02d}" for i in range(FEATURES - len(named))]


def machine() -> list[str]:
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    # nproc honours OMP_NUM_THREADS, which this script sets to 1: ask without it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, env=env).stdout.strip()
    libs = ", ".join(
        f"{name} {importlib.import_module(name).__version__}"
        for name in ("numpy", "lightgbm", "xgboost", "sklearn", "statsmodels", "arch")
    )
    return [
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- `uname -a`: `{uname}`",
        f"- `nproc`: {nproc} (shared with other jobs while measuring; load average "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())})",
        f"- python {platform.python_version()}; {libs}",
        "- every fit on one thread (num_threads / nthread = 1, BLAS pools limited to 1)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    arrays = synthetic_data()
    lines = ["# Model fit times (one thread)", "", *machine(), ""]
    lines += [
        f"Data: {ROWS:,} rows x {FEATURES} random features (5% NaN), {CLOSES:,} closes; "
        f"median of {args.repeats} fits. Produced by `benchmarks/model_fit_times.py`.",
        "",
        "## Families at reference parameters",
        "",
        "| family | fit s | predict 1 row s |",
        "|---|---:|---:|",
    ]
    for spec in REFERENCE_SPECS:
        fit_s, predict_s = time_spec(spec, fit_data(spec, arrays, 21), args.repeats)
        lines.append(f"| {spec.name} | {fit_s:.3f} | {predict_s:.4f} |")
        print(spec.name, round(fit_s, 3), flush=True)

    horizons = spec_horizons()
    spec_rows, per_horizon = [], dict.fromkeys(HORIZONS, 0.0)
    for spec in load_specs():
        fit_s, predict_s = time_spec(spec, fit_data(spec, arrays, 21), args.repeats)
        n_fits = math.ceil(ORIGINS / spec.refit_every)
        walk_s = n_fits * fit_s + ORIGINS * predict_s
        for horizon in horizons[spec.name]:
            per_horizon[horizon] += walk_s
        rows = int(ROWS * SPECIALIST_ROW_SHARE) if spec.kind == "specialist" else ROWS
        rows_note = f"{rows:,} rows" if spec.family in ("lightgbm", "xgboost", "ridge") else "-"
        spec_rows.append(
            f"| {spec.name} | {spec.kind} | {rows_note} | {fit_s:.3f} | {spec.refit_every} "
            f"| {n_fits} | {walk_s:.1f} | {len(horizons[spec.name])} |"
        )
        print(spec.name, round(fit_s, 3), round(walk_s, 1), flush=True)
    lines += [
        "",
        "## Specs at their specs.yaml parameters",
        "",
        f"Walk-forward seconds = refits x fit + {ORIGINS} one-row predicts, for one horizon "
        f"over {ORIGINS} origins, at {ROWS:,} training rows (an upper bound: the expanding "
        "window is smaller at early origins).",
        "",
        "| spec | kind | train rows | fit s | refit_every | refits | walk-forward s | horizons |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *spec_rows,
        "",
        "## Walk-forward budget",
        "",
        f"Target: about {TARGET_SECONDS_PER_HORIZON:.0f} s of single-core time per horizon "
        "(all five horizons on 2 worker processes inside 15 minutes).",
        "",
        "| horizon | single-core s |",
        "|---|---:|",
        *[f"| {h} | {s:.1f} |" for h, s in per_horizon.items()],
        f"| all five | {sum(per_horizon.values()):.1f} |",
        f"| all five on 2 workers (wall, ideal) | {sum(per_horizon.values()) / 2:.1f} |",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    record_run(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
