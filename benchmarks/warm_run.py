"""Warm-run benchmark (issue 19): a cold `cbi run` in a fresh temporary home, then the same
command again on the unchanged home, which should skip every asset Dagster calls fresh.

Usage: .venv/bin/python benchmarks/warm_run.py [--manifest PATH] [--horizons ...]
Each run is `python -m cbi_platform.cli run` in its own process (imports included), with
DAGSTER_HOME and CBI_HOME in a new temporary folder (never the user's .cbi_home).
Results: benchmarks/results/warm_run_<source>.{md,json} with machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

TARGET_RATIO = 0.10  # a warm run costs at most 10% of the cold run


def _cbi_run(home: Path, extra: list[str], log: Path) -> dict:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CBI_HOME": str(home),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONPATH": str(ROOT),
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "cbi_platform.cli", "run", *extra],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    stages = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    skipped = [line for line in stages if "up to date" in line]
    return {
        "wall_seconds": round(wall, 1),
        "returncode": proc.returncode,
        "stages": stages,
        "stages_skipped": len(skipped),
        "last_lines": proc.stdout.splitlines()[-12:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", help="files source (default: the simulator)")
    parser.add_argument("--horizons", nargs="+")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    extra = (["--manifest", args.manifest] if args.manifest else []) + (
        ["--horizons", *args.horizons] if args.horizons else []
    )
    source = "files" if args.manifest else "simulated"
    home = Path(tempfile.mkdtemp(prefix="cbi-warm-run-"))
    (home / "dagster.yaml").symlink_to(ROOT / "dagster.yaml")
    out = ROOT / "benchmarks" / "results"
    try:
        cold = _cbi_run(home, extra, home / "cold.log")
        print(f"cold: {cold['wall_seconds']} s rc={cold['returncode']}", flush=True)
        warm = _cbi_run(home, extra, home / "warm.log")
        print(f"warm: {warm['wall_seconds']} s rc={warm['returncode']}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    ratio = round(warm["wall_seconds"] / cold["wall_seconds"], 3)
    stamp = machine_stamp()
    command = "python benchmarks/warm_run.py" + ("".join(f" {a}" for a in extra))
    result = {
        "machine": stamp,
        "command": command,
        "cold": cold,
        "warm": warm,
        "warm_over_cold": ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
    }
    (out / f"warm_run_{source}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"warm_run_{source}.md").write_text(
        f"# Warm `cbi run` benchmark: {source} source\n\n"
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['cpus']} CPUs, "
        f"{stamp['memory_gib']} GiB)\n"
        f"- command: `{command}` (each run: `cbi run` in its own process, fresh temp home)\n"
        f"- cold run: **{cold['wall_seconds']} s** (exit {cold['returncode']})\n"
        f"- warm run, nothing changed: **{warm['wall_seconds']} s** (exit "
        f"{warm['returncode']}), {warm['stages_skipped']} of {len(warm['stages'])} stages "
        f"skipped; warm/cold **{ratio}** (target <= {TARGET_RATIO})\n\n"
        "What the warm run printed:\n\n```\n" + "\n".join(warm["stages"]) + "\n```\n"
    )
    record_run(out / f"warm_run_{source}.md")
    print((out / f"warm_run_{source}.md").read_text())
    return 0 if cold["returncode"] == 0 and warm["returncode"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
