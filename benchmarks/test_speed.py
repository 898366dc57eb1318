"""Test-suite speed, side by side (issue 19): pytest on 2 workers in a baseline checkout and in
this one, one right after the other on the same machine, then (with --coverage) each again
under coverage.py for the line coverage of `cbi_platform`.

Usage: .venv/bin/python benchmarks/test_speed.py --baseline CHECKOUT [--coverage]
`CHECKOUT` is e.g. a `git worktree` of the commit before. Both sides run this venv's Python
with their checkout first on PYTHONPATH (subprocesses included), from their checkout, so each
runs its own tests against its own code. The timed run is `python -m pytest -q -n 2`, the
command `make test` runs after ruff and lint-imports. Coverage runs are separate (coverage
slows a run down) and use `--cov=cbi_platform --cov-report=json`.
Results: benchmarks/results/test_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import git_commit, machine_stamp, record_run  # noqa: E402

TARGET_RATIO = 0.50
COVERAGE_SLACK = 0.5  # points


def _pytest(checkout: Path, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    env.pop("DAGSTER_HOME", None)
    before = os.times()
    started = time.perf_counter()
    proc = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-m",
            "pytest",
            "-q",
            "-n",
            "2",
            "-p",
            "no:cacheprovider",
            "--durations=25",
            *extra,
        ],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    summary = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", proc.stdout, flags=re.M)
    slow = [x for x in proc.stdout.splitlines() if re.match(r"^\d+\.\d+s (call|setup)", x)]
    return {
        "exit_code": proc.returncode,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "summary": summary[-1] if summary else proc.stdout[-500:],
        "slowest": slow,
    }


def _coverage(checkout: Path) -> dict:
    report = Path(tempfile.mkdtemp(prefix="cbi-cov-")) / "coverage.json"
    run = _pytest(
        checkout,
        ["--cov=cbi_platform", f"--cov-report=json:{report}", "--cov-report="],
    )
    totals = json.loads(report.read_text())["totals"] if report.exists() else {}
    return {
        **{k: run[k] for k in ("exit_code", "wall_seconds", "summary")},
        "percent_covered": round(totals.get("percent_covered", float("nan")), 2),
        "covered_lines": totals.get("covered_lines"),
        "num_statements": totals.get("num_statements"),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--coverage", action="store_true")
    args = parser.parse_args()
    sides = {"baseline": args.baseline.resolve(), "current": ROOT}
    result: dict = {"machine": machine_stamp()}
    for label, checkout in sides.items():
        print(f"{label}: {checkout}", flush=True)
        result[label] = {"checkout": str(checkout), "commit": git_commit(checkout)}
        result[label]["timed"] = _pytest(checkout, [])
        print(
            f"  timed: {result[label]['timed']['wall_seconds']} s, "
            f"{result[label]['timed']['summary']}",
            flush=True,
        )
    if args.coverage:
        for label, checkout in sides.items():
            result[label]["coverage"] = _coverage(checkout)
            print(f"  {label} coverage: {result[label]['coverage']}", flush=True)
    base, now = result["baseline"], result["current"]
    ratio = now["timed"]["wall_seconds"] / base["timed"]["wall_seconds"]
    result["ratio"] = round(ratio, 3)
    verdict = "met" if ratio <= TARGET_RATIO else "missed"
    cov_line = ""
    if args.coverage:
        drop = base["coverage"]["percent_covered"] - now["coverage"]["percent_covered"]
        cov_ok = drop <= COVERAGE_SLACK
        result["coverage_drop_points"] = round(drop, 2)
        cov_line = (
            f"- line coverage of `cbi_platform` (coverage.py through pytest-cov, separate runs): "
            f"baseline **{base['coverage']['percent_covered']}%**, current "
            f"**{now['coverage']['percent_covered']}%** ({'kept' if cov_ok else 'dropped'}: "
            f"the budget is a drop of at most {COVERAGE_SLACK} points)\n"
        )
    out = ROOT / "benchmarks" / "results"
    (out / "test_speed.json").write_text(json.dumps(result, indent=1))
    stamp = result["machine"]

    def block(side):
        return "\n".join(side["timed"]["slowest"])

    (out / "test_speed.md").write_text(
        "# Test-suite speed, side by side\n\n"
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['platform']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB)\n"
        f"- command: `.venv/bin/python benchmarks/test_speed.py --baseline <checkout>"
        f"{' --coverage' if args.coverage else ''}`; each side: `python -m pytest -q -n 2` "
        "in its own checkout, one after the other\n"
        f"- baseline `{base['commit'][:12]}`: **{base['timed']['wall_seconds']} s** wall, "
        f"{base['timed']['cpu_seconds']} CPU s, {base['timed']['summary']}\n"
        f"- current `{now['commit'][:12]}`: **{now['timed']['wall_seconds']} s** wall, "
        f"{now['timed']['cpu_seconds']} CPU s, {now['timed']['summary']}\n"
        f"- ratio current / baseline **{ratio:.2f}**: target (<= {TARGET_RATIO}) {verdict}\n"
        + cov_line
        + f"\n## Slowest, baseline\n\n```\n{block(base)}\n```\n\n"
        f"## Slowest, current\n\n```\n{block(now)}\n```\n"
    )
    record_run(out / "test_speed.md")
    print((out / "test_speed.md").read_text())
    return 0 if now["timed"]["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
