"""Accuracy benchmark: the walk-forward protocol on any manifest, every model and the ensemble.

Usage: .venv/bin/python benchmarks/accuracy.py [--manifest manifests/shared_data.yaml]
                                               [--horizons 1w 1m 3m 6m 12m] [--workers 2]

Protocol (the same origins as the peer methods): 60 origins evenly spaced over the last 1,512
trading days ending 5 before the last date, expanding window, embargo >= h, 100 earlier burn-in
origins for calibration and combiner choice only. It runs the platform's own steps (the ones
the Dagster assets call), so the numbers are the pipeline's numbers. Results go to
benchmarks/results/accuracy_<source>.{md,json} with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp  # noqa: E402

from cbi_platform.evaluation import horizon_run  # noqa: E402
from cbi_platform.evaluation.metrics import REPORTED_METRICS  # noqa: E402
from cbi_platform.evaluation.volatility_eval import (  # noqa: E402
    best_volatility_model,
    score_volatility,
    volatility_walk_forward,
)
from cbi_platform.features.build import build_features  # noqa: E402
from cbi_platform.features.contract import HORIZONS  # noqa: E402
from cbi_platform.market.files import load_files_source  # noqa: E402
from cbi_platform.market.manifest import load_manifest  # noqa: E402
from cbi_platform.regimes.detected import label_regimes  # noqa: E402
from cbi_platform.reporting import markdown_table  # noqa: E402

# Peer methods on the real ZL series (issue 3): random-walk MAPE per horizon.
PEER_RW_MAPE = {"1w": 2.63, "1m": 5.81, "3m": 11.43, "6m": 14.69, "12m": 21.40}
TARGET_REL_MAE = {"1w": 0.97, "1m": 0.99, "3m": 1.00, "6m": 1.00, "12m": 1.00}
COLUMNS = ["horizon", "model", *REPORTED_METRICS]


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", default=str(ROOT / "manifests" / "shared_data.yaml"))
    parser.add_argument("--horizons", nargs="+", default=list(HORIZONS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    manifest = load_manifest(args.manifest)
    bundle = load_files_source(args.manifest)
    target = bundle.prices.filter(pl.col("symbol") == manifest.target).sort("date")
    regimes = label_regimes(target["date"], target["value"].to_numpy())
    cfg = horizon_run.ProtocolConfig(n_workers=args.workers)
    started = time.perf_counter()
    plan = horizon_run.origin_plan(target["date"], "1w", cfg)
    vol = volatility_walk_forward(target["value"].to_numpy(), plan, dict(HORIZONS))
    vol_scores = score_volatility(vol)
    print(f"volatility: {time.perf_counter() - started:.0f}s", flush=True)
    boards, coverages, rw_mape, timings = [], [], {}, {}
    for h in args.horizons:
        t0 = time.perf_counter()
        frame = build_features(bundle.prices, h, target=manifest.target).frame
        oof, _, plan_h = horizon_run.member_predictions(frame, regimes, h, cfg, progress=None)
        vol_model = best_volatility_model(score_volatility(vol, role="burn_in"), h)
        ctx = horizon_run.context_frame(regimes, vol, h, vol_model)
        ens = horizon_run.ensemble_step(oof, ctx, cfg)
        zones = horizon_run.zones_step(oof, ens.forecasts, ctx)
        tables = horizon_run.evaluation_tables(
            oof, ens.forecasts, zones, regimes, plan_h.spacing_days
        )
        boards.append(tables.leaderboard)
        coverages.append(tables.coverage.filter(pl.col("regime") == "all"))
        timings[h] = round(time.perf_counter() - t0, 1)
        board = tables.leaderboard
        e = board.filter(pl.col("model") == "ensemble").to_dicts()[0]
        r = board.filter(pl.col("model") == "random_walk").to_dicts()[0]
        rw_mape[h] = r["mape"]
        cov = tables.coverage.filter((pl.col("regime") == "all") & (pl.col("model") == "ensemble"))
        print(
            f"{h}: {timings[h]}s  RW MAPE {r['mape']:.2f}% (peer {PEER_RW_MAPE[h]}%)  "
            f"ensemble rel MAE {e['rel_mae']:.3f} (target <= {TARGET_REL_MAE[h]})  "
            f"MASE {e['mase']:.3f}  90% coverage {cov['coverage90'][0]:.2f} "
            f"(n_eff {cov['n_effective'][0]})",
            flush=True,
        )
    board = pl.concat(boards, how="vertical_relaxed").select(COLUMNS)
    coverage = pl.concat(coverages, how="vertical_relaxed")
    stamp = machine_stamp()
    source = Path(args.manifest).stem
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ensemble = (
        board.filter(pl.col("model") == "ensemble")
        .with_columns(
            target=pl.col("horizon").replace_strict(TARGET_REL_MAE, default=None),
            peer_rw_mape=pl.col("horizon").replace_strict(PEER_RW_MAPE, default=None),
        )
        .join(
            board.filter(pl.col("model") == "random_walk").select("horizon", rw_mape="mape"),
            on="horizon",
        )
        .join(
            coverage.filter(pl.col("model") == "ensemble").select(
                "horizon", "coverage80", "coverage90", "width90_pct", "n_effective"
            ),
            on="horizon",
            how="left",
        )
        .select(
            "horizon",
            "n",
            "rw_mape",
            "peer_rw_mape",
            "mape",
            "mase",
            "rel_mae",
            "target",
            "dm_pvalue",
            "directional_accuracy",
            "coverage80",
            "coverage90",
            "width90_pct",
            "n_effective",
        )
    )
    md = [
        f"# Accuracy benchmark: {source}",
        "",
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['platform']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB); python {stamp['python']}",
        f"- manifest: {args.manifest}; target {manifest.target}; "
        f"command: `.venv/bin/python benchmarks/accuracy.py --manifest {args.manifest}`",
        "- protocol: 60 scored origins over the last 1,512 trading days (ending 5 before the last "
        "date), 100 burn-in origins before them, expanding window, embargo >= h; "
        "scored origins only.",
        f"- seconds per horizon: {timings}; volatility walk-forward included once",
        "",
        "## Ensemble vs random walk (the headline)",
        "",
        markdown_table(ensemble),
        "",
        "## Every model (relative MAE < 1 beats the random walk)",
        "",
        markdown_table(board),
        "",
        "## Target-zone coverage (ensemble and random-walk bands)",
        "",
        markdown_table(coverage),
        "",
        "## Volatility forecasts vs realised (scored origins)",
        "",
        markdown_table(vol_scores),
    ]
    (out / f"accuracy_{source}.md").write_text("\n".join(md) + "\n")
    (out / f"accuracy_{source}.json").write_text(
        json.dumps(
            {
                "machine": stamp,
                "manifest": args.manifest,
                "seconds": timings,
                "ensemble": ensemble.to_dicts(),
                "models": board.to_dicts(),
                "coverage": coverage.to_dicts(),
                "volatility": vol_scores.to_dicts(),
            },
            default=str,
            indent=1,
        )
    )
    print(f"wrote {out / f'accuracy_{source}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
