"""Keras Tuner RandomSearch per network family and horizon on the development window, once.

Usage:
  .venv/bin/python benchmarks/neural_tuning.py [--manifest manifests/shared_data.yaml]
      [--horizons 1w 1m 3m 6m 12m] [--workers 2] [--max-trials 3] [--epochs 6]

For each horizon, every network family listed at that horizon in models/specs.yaml is tuned
once (on its first spec there: e.g. nn_lstm, not nn_lstm2), on the training rows known at the
last development origin of the frozen protocol: no scored origin, no row after it. The choice
is written to cbi_platform/models/neural_tuned.yaml (data, fixed from then on: the registry
applies it) and a report to benchmarks/results/neural_tuning_<source>.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import time
import warnings
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

from cbi_platform.evaluation import horizon_run  # noqa: E402
from cbi_platform.evaluation.tuning_data import development_data  # noqa: E402
from cbi_platform.evaluation.walk_forward import SINGLE_THREAD_ENV  # noqa: E402
from cbi_platform.features.build import build_features  # noqa: E402
from cbi_platform.features.contract import HORIZONS  # noqa: E402
from cbi_platform.market.files import load_files_source  # noqa: E402
from cbi_platform.market.manifest import load_manifest  # noqa: E402
from cbi_platform.models import neural_tuning  # noqa: E402
from cbi_platform.models.registry import NEURAL_FAMILIES, load_specs  # noqa: E402
from cbi_platform.reporting import markdown_table  # noqa: E402
from cbi_platform.settings import load_protocol  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "manifests" / "shared_data.yaml"))
    parser.add_argument("--horizons", nargs="+", default=list(HORIZONS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-trials", type=int, default=neural_tuning.MAX_TRIALS)
    parser.add_argument("--epochs", type=int, default=neural_tuning.EPOCHS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return parser.parse_args()


def _task(spec, data, horizon, last, max_trials, epochs):
    os.environ.update(SINGLE_THREAD_ENV)
    warnings.filterwarnings("ignore")
    return neural_tuning.tune(spec, data, horizon, last, max_trials=max_trials, epochs=epochs)


def main() -> int:
    warnings.filterwarnings("ignore")
    args = parse_args()
    manifest = load_manifest(args.manifest)
    prices = load_files_source(args.manifest).prices
    protocol = load_protocol()
    cfg = horizon_run.ProtocolConfig(protocol)
    tasks = []
    for h in args.horizons:
        frame = build_features(prices, h, target=manifest.target).frame
        data, last = development_data(frame, h, cfg)
        seen = set()
        for spec in load_specs(horizon=h, zoo="extended"):
            if spec.family in NEURAL_FAMILIES and spec.family not in seen:
                seen.add(spec.family)
                tasks.append((spec, data, h, last))
        print(f"{h}: {len(seen)} families, {data.X.shape[0]} rows up to {last}", flush=True)
    started = time.perf_counter()
    results = []
    with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {
            pool.submit(_task, spec, data, h, last, args.max_trials, args.epochs): (spec, h)
            for spec, data, h, last in tasks
        }
        for future in cf.as_completed(futures):
            r = future.result()
            results.append(r)
            print(
                f"{r.family} {r.horizon}: {r.best} val {r.best_val_loss:.4f} ({r.seconds:.0f}s)",
                flush=True,
            )
    stamp = machine_stamp()
    meta = {
        "written_by": "benchmarks/neural_tuning.py",
        "date": stamp["date"],
        "machine": stamp["machine"],
        "data": Path(args.manifest).name,
        "protocol": protocol.hash(),
        "window": "training rows known at the last development origin of each horizon",
    }
    results.sort(key=lambda r: (list(HORIZONS).index(r.horizon), r.family))
    budget = {"max_trials": args.max_trials, "epochs": args.epochs, "seed": neural_tuning.SEED}
    neural_tuning.write_tuned(results, meta, budget)
    table = pl.DataFrame(
        [
            {
                "horizon": r.horizon,
                "family": r.family,
                "units": r.best.get("units"),
                "dropout": r.best.get("dropout"),
                "learning_rate": r.best.get("learning_rate"),
                "best_val_mse": r.best_val_loss,
                "worst_val_mse": max(t["val_loss"] for t in r.trials if t["val_loss"] is not None),
                "n_train": r.n_train,
                "n_val": r.n_val,
                "last_train_date": r.last_train_date,
                "seconds": round(r.seconds, 1),
            }
            for r in results
        ]
    )
    out = Path(args.out)
    source = "shared_data" if "shared" in Path(args.manifest).name else Path(args.manifest).stem
    (out / f"neural_tuning_{source}.md").write_text(
        "\n".join(
            [
                f"# Keras Tuner on the development window, {source}",
                "",
                f"Written by `benchmarks/neural_tuning.py` on {stamp['date']} "
                f"({stamp['machine']}, {stamp['cpus']} CPUs); protocol {protocol.hash()}; "
                f"RandomSearch, {args.max_trials} trials x <= {args.epochs} epochs per family "
                f"and horizon, seed {neural_tuning.SEED}; wall {time.perf_counter() - started:.0f}"
                f" s on {args.workers} processes.",
                "",
                "Validation MSE is on the standardised target (1.0 = predicting the training "
                "mean), on the time-ordered last 15% of the rows known at the last development "
                "origin, after a purge gap of h rows. The choice is recorded in "
                "`cbi_platform/models/neural_tuned.yaml` and fixed from then on.",
                "",
                markdown_table(table),
                "",
            ]
        )
    )
    record_run(out / f"neural_tuning_{source}.md", protocol.hash())
    print(f"wrote {neural_tuning.TUNED_PATH} and {out}/neural_tuning_{source}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
