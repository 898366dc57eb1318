"""Refactor equivalence: the same small pipeline on two commits, table by table.

Usage: .venv/bin/python benchmarks/refactor_equivalence.py [--before 7fbe24a] [--after HEAD]
       [--horizons 1w,1m] [--repeat 3]

A structural change (issue 17: the release room, selections, one record, the layers) must not
move a number. Each commit is checked out into its own git worktree and runs `run_pipeline`
(what `cbi run` runs: market data, features, members, ensemble, zones, registration, serving,
decision forecasts, backtest, daily refresh) on the same small files source and the same small
protocol, in its own process with its own home, every member family but the networks (their
float32 fits are measured over seeds by neural.py, not here). Then every warehouse table both
wrote, and the forecast history, are compared row by row: exact equality, or the largest
absolute difference of each numeric column. Wall times are measured side by side too.

Results: benchmarks/results/refactor_equivalence.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

RUN = r"""
import sys, json, time
from pathlib import Path
home, data, horizons = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
from cbi_platform_tests.conftest import file_resources, write_small_manifest
from cbi_platform.defs.resources import ProtocolResource
from cbi_platform.runner import run_pipeline
data.mkdir(parents=True, exist_ok=True)
manifest = write_small_manifest(data, n_days=1400)
protocol = ProtocolResource(
    n_scored=12, span=240, end_offset=5, n_development=20, n_calibration=20,
    min_first_origin_row=100, n_workers=1, min_history=5, regime_folds=2,
    model_kinds=["benchmark", "statistical", "tree", "sanity", "specialist"],
)
resources = {**file_resources(manifest, home), "protocol": protocol}
started = time.perf_counter()
code = run_pipeline(horizons, sys.stdout, resources)
print(json.dumps({"exit": code, "seconds": time.perf_counter() - started}))
sys.exit(code)
"""

# Columns that record when or by which run something was written, not what it computed.
VOLATILE = {
    "created_at",
    "fitted_seconds",
    "seconds",
    "run_id",
    "mlflow_run_id",
    "written_at",
    "path",  # files under each run's own home
}


def _worktree(commit: str, where: Path) -> str:
    sha = subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", commit], text=True).strip()
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), sha],
        check=True,
        capture_output=True,
    )
    return sha


def _run(tree: Path, home: Path, horizons: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "OMP_NUM_THREADS": "1",
        "CBI_HOME": str(home),
        "MLFLOW_TRACKING_URI": "",
    }
    env.pop("DAGSTER_HOME", None)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(home), str(home / "data"), horizons],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    log = home / "run.log"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: run_pipeline exited {proc.returncode}; see {log}")
    return {"wall_s": wall, "log": str(log)}


def _tables(home: Path) -> dict[str, pl.DataFrame]:
    out = {}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        names = [
            r[0]
            for r in con.sql(
                "select table_name from information_schema.tables where table_schema = 'cbi'"
            ).fetchall()
        ]
        for name in names:
            out[name] = con.sql(f"select * from cbi.{name}").pl()
    with duckdb.connect(str(home / "forecasts.duckdb"), read_only=True) as con:
        out["forecast_history"] = con.sql("select * from cbi.forecast_history").pl()
    return out


def _compare(before: pl.DataFrame, after: pl.DataFrame) -> dict:
    common = [c for c in before.columns if c in after.columns and c not in VOLATILE]
    only = sorted(set(before.columns) ^ set(after.columns))
    if before.height != after.height:
        return {"rows": [before.height, after.height], "equal": False, "columns_differ": only}
    keys = [c for c in common if before.schema[c] in (pl.Utf8, pl.Date, pl.Boolean, pl.Int64)]
    a = before.select(common).sort(keys or common, nulls_last=True)
    b = after.select(common).sort(keys or common, nulls_last=True)
    worst, unequal = 0.0, []
    for column in common:
        x, y = a[column], b[column]
        if x.dtype.is_float() and y.dtype.is_float():
            diff = (x - y).abs().max()
            same_nulls = (x.is_null() == y.is_null()).all()
            worst = max(worst, float(diff or 0.0))
            if diff or not same_nulls:
                unequal.append(column)
        elif x.to_list() != y.to_list():
            unequal.append(column)
    return {
        "rows": before.height,
        "columns_compared": len(common),
        "columns_differ": only,
        "unequal_columns": unequal,
        "max_abs_diff": worst,
        "equal": not unequal,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="7fbe24a", help="the commit before the change")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--horizons", default="1w,1m")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per commit, alternating (timing noise)"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cbi-equivalence-"))
    shas, walls, tables = {}, {"before": [], "after": []}, {}
    commits = (("before", args.before), ("after", args.after))
    try:
        for label, commit in commits:
            shas[label] = _worktree(commit, work / label)
        for round_ in range(args.repeat):
            for label, _ in commits:
                home = work / f"home-{label}-{round_}"
                print(f"{label}: {shas[label][:10]} run {round_ + 1} ...", flush=True)
                walls[label].append(_run(work / label, home, args.horizons)["wall_s"])
                if round_ == 0:
                    tables[label] = _tables(home)
                print(f"  {walls[label][-1]:.1f} s", flush=True)
    finally:
        for label in ("before", "after"):
            if (work / label).exists():
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / label)],
                    capture_output=True,
                )
    names = sorted(set(tables["before"]) | set(tables["after"]))
    report = {}
    for name in names:
        if name not in tables["before"] or name not in tables["after"]:
            report[name] = {"only_in": "after" if name in tables["after"] else "before"}
            continue
        report[name] = _compare(tables["before"][name], tables["after"][name])
    result = {
        **machine_stamp(),
        "command": "benchmarks/refactor_equivalence.py " + " ".join(sys.argv[1:]),
        "before": shas["before"],
        "after": shas["after"],
        "horizons": args.horizons,
        "wall_s": {k: [round(w, 1) for w in v] for k, v in walls.items()},
        "tables": report,
    }
    ratio = statistics.median(walls["after"]) / statistics.median(walls["before"])
    result["median_ratio"] = round(ratio, 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "refactor_equivalence.json").write_text(json.dumps(result, indent=1, default=str))
    lines = [
        "# Refactor equivalence: the small pipeline on two commits",
        "",
        f"- date: {result['date']}; machine: {result['machine']} ({result['platform']}, "
        f"{result['cpus']} CPUs, {result['memory_gib']} GiB); python {result['python']}",
        f"- command: `.venv/bin/python {result['command']}`",
        f"- before `{shas['before'][:10]}`, after `{shas['after'][:10]}`; horizons "
        f"{args.horizons}; small files source and protocol of the asset tests; no networks",
        f"- wall time of `run_pipeline` in its own process, alternating runs, side by side: "
        f"before {result['wall_s']['before']} s, after {result['wall_s']['after']} s; "
        f"median ratio after/before **{ratio:.2f}**",
        "",
        "| table | rows | columns compared | equal | max abs diff | unequal columns | "
        "columns in one only |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report.items():
        if "only_in" in r:
            lines.append(f"| {name} | | | only in {r['only_in']} | | | |")
            continue
        lines.append(
            f"| {name} | {r['rows']} | {r.get('columns_compared', '')} | "
            f"{'yes' if r['equal'] else '**no**'} | {r.get('max_abs_diff', '')} | "
            f"{', '.join(r.get('unequal_columns', []))} | {', '.join(r['columns_differ'])} |"
        )
    md = out / "refactor_equivalence.md"
    md.write_text("\n".join(lines) + "\n")
    record_run(md)
    print(md.read_text())
    return 0 if all(r.get("equal", True) for r in report.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
