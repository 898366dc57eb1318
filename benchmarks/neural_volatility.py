"""The LSTM on realised volatility beside GARCH and GJR-GARCH, scored against realised volatility
on the development and scored windows of the frozen protocol.

Usage: .venv/bin/python benchmarks/neural_volatility.py [--manifest manifests/shared_data.yaml]
Results: benchmarks/results/neural_volatility_<source>.{md,json} with machine and date.
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

from _machine import machine_stamp, record_run  # noqa: E402

from cbi_platform.evaluation import horizon_run  # noqa: E402
from cbi_platform.evaluation.volatility_eval import (  # noqa: E402
    score_volatility,
    volatility_walk_forward,
)
from cbi_platform.features.contract import HORIZONS  # noqa: E402
from cbi_platform.market.files import load_files_source  # noqa: E402
from cbi_platform.market.manifest import load_manifest  # noqa: E402
from cbi_platform.models.registry import load_specs  # noqa: E402
from cbi_platform.reporting import markdown_table  # noqa: E402
from cbi_platform.settings import load_protocol  # noqa: E402


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "manifests" / "shared_data.yaml"))
    args = parser.parse_args()
    manifest = load_manifest(args.manifest)
    prices = load_files_source(args.manifest).prices
    target = prices.filter(pl.col("symbol") == manifest.target).sort("date")
    protocol = load_protocol()
    cfg = horizon_run.ProtocolConfig(protocol, n_workers=1)
    plan = horizon_run.origin_plan(target["date"], "1w", cfg)
    closes = target["value"].to_numpy()
    specs = load_specs(kinds=["volatility"])
    seconds = {}
    frames = []
    for family_set, label in ((("garch", "gjr_garch"), "garch family"), (("lstm_vol",), "lstm")):
        chosen = [s for s in specs if s.family in family_set]
        t0 = time.perf_counter()
        frames.append(volatility_walk_forward(closes, plan, dict(HORIZONS), chosen))
        seconds[label] = round(time.perf_counter() - t0, 1)
        print(f"{label}: {seconds[label]} s", flush=True)
    both = pl.concat(frames, how="diagonal_relaxed").unique(
        subset=["origin", "horizon", "model"], keep="first", maintain_order=True
    )
    tables = {role: score_volatility(both, role=role) for role in ("development", "scored")}
    stamp = machine_stamp()
    source = "shared_data" if "shared" in Path(args.manifest).name else Path(args.manifest).stem
    out = ROOT / "benchmarks" / "results"
    lines = [
        f"# Neural volatility vs GARCH, {source}",
        "",
        f"Written by `benchmarks/neural_volatility.py` on {stamp['date']} ({stamp['machine']}, "
        f"{stamp['cpus']} CPUs); protocol {protocol.hash()}; {plan.n_origins} origins. "
        f"Walk-forward seconds: {seconds}. MAE and QLIKE of the h-day volatility of the log "
        "return against realised volatility; rel_mae_vs_trailing divides by the trailing "
        "63-day volatility's MAE (below 1 beats it).",
        "",
    ]
    for role, table in tables.items():
        lines += [f"## {role}", "", markdown_table(table), ""]
    (out / f"neural_volatility_{source}.md").write_text("\n".join(lines))
    (out / f"neural_volatility_{source}.json").write_text(
        json.dumps(
            {**stamp, "seconds": seconds, **{r: t.to_dicts() for r, t in tables.items()}},
            indent=1,
            default=str,
        )
    )
    record_run(out / f"neural_volatility_{source}.md", protocol.hash())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
