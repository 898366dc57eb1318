"""Test-suite timing: `make test` (ruff, then pytest with 2 workers) in a checkout, wall time,
pass/skip counts and the peak memory of the whole process tree.

Usage: .venv/bin/python benchmarks/test_suite.py [--checkout PATH]
`--checkout` defaults to this repository; point it at a fresh clone (with `shared/` beside it,
or without, to see the skips) to time what CI runs. Results:
benchmarks/results/test_suite.{md,json} with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", default=str(ROOT))
    args = parser.parse_args()
    checkout = Path(args.checkout).resolve()
    started = time.perf_counter()
    proc = subprocess.run(
        ["make", "test"], cwd=checkout, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    tail = (proc.stdout + proc.stderr)[-4000:]
    summary = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", proc.stdout, flags=re.M)
    stamp = machine_stamp()
    shared = (checkout.parent / "shared" / "data").exists()
    result = {
        "machine": stamp,
        "checkout": str(checkout),
        "shared_data_present": shared,
        "exit_code": proc.returncode,
        "wall_seconds": round(wall, 1),
        "peak_rss_mib_largest_child": round(peak_mib),
        "summary": summary[-1] if summary else None,
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "test_suite.json").write_text(json.dumps(result, indent=1))
    slow = "\n".join(
        line for line in proc.stdout.splitlines() if re.match(r"^\d+\.\d+s (call|setup)", line)
    )
    (out / "test_suite.md").write_text(
        "# Test suite timing\n\n"
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['platform']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB)\n"
        f"- command: `.venv/bin/python benchmarks/test_suite.py --checkout {checkout}` "
        "(runs `make test` there)\n"
        f"- shared data beside the checkout: {shared}\n"
        f"- exit code {proc.returncode}; wall time **{wall:.0f} s**; result: "
        f"{result['summary']}; peak RSS of the largest child process {peak_mib:.0f} MiB\n\n"
        f"## Slowest tests\n\n```\n{slow}\n```\n"
    )
    record_run(out / "test_suite.md")
    print(tail)
    print(json.dumps(result, indent=1))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
