"""Machine, date, commit and wall time written next to every benchmark result.

`machine_stamp()` says where and when a benchmark ran and on which commit; `record_run()`,
called once a benchmark has written its results, adds the commit, the wall time since the
benchmark's process started and (where it has one) the protocol hash to its .md and .json, so
every results file says what code produced it and how long `make results-...` takes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Results files are written while a `make results` run goes on: they must not make the
# tree look dirty to the benchmarks that run after them.
_NOT_CODE = ":(exclude)benchmarks/results"


def _process_started() -> float:
    """time.monotonic() at this process's start (Linux /proc), else at this module's import."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.monotonic() - max(0.0, uptime - started_after_boot)
    except (OSError, ValueError, IndexError):
        return time.monotonic()


_STARTED = _process_started()


def git_commit(root: Path = ROOT) -> str:
    """The checkout's commit; "+dirty" when tracked or untracked code differs from it
    (benchmarks/results/ excluded); "unknown" outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", _NOT_CODE],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if status else head


def wall_seconds() -> float:
    """Seconds since this benchmark's process started."""
    return round(time.monotonic() - _STARTED, 1)


def machine_stamp() -> dict:
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            mem_gib = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "commit": git_commit(),
    }


def run_stamp(protocol_hash: str | None = None) -> dict:
    """Commit, wall time so far and protocol hash (None where the benchmark has none)."""
    return {"commit": git_commit(), "wall_seconds": wall_seconds(), "protocol_hash": protocol_hash}


def run_line(stamp: dict) -> str:
    """The stamp as one markdown list item."""
    text = f"- run: commit `{stamp['commit']}`; wall time **{stamp['wall_seconds']} s**"
    if stamp.get("protocol_hash"):
        text += f"; protocol hash `{stamp['protocol_hash']}`"
    return text + " (benchmarks/_machine.py)"


def record_run(md_path: Path | str, protocol_hash: str | None = None) -> dict:
    """Add the run stamp to a written results file: a line under the .md's title and a "run"
    key in the .json beside it (when there is one). Call it last, after writing both."""
    stamp = run_stamp(protocol_hash)
    md = Path(md_path).with_suffix(".md")
    if md.exists():
        lines = md.read_text(encoding="utf-8").splitlines()
        at = 1 if lines and lines[0].startswith("#") else 0
        lines[at:at] = ["", run_line(stamp)]
        md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    js = md.with_suffix(".json")
    if js.exists():
        data = json.loads(js.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data["run"] = stamp
            js.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    return stamp
