"""A new user's first `make run`: clone the repository, then time `make install` (the virtual
environment and `pip install -e '.[dev]'`) and `make run` (the whole pipeline on the embedded
simulator in a fresh `.cbi_home`), each with its wall time and CPU seconds.

Usage: .venv/bin/python benchmarks/clean_clone.py [--ref HEAD] [--keep]
The clone is made from this repository's committed `--ref` into a temporary folder (removed
afterwards unless `--keep`). pip uses this machine's download cache and configuration (a local
wheel mirror, find-links): the file records both, since a machine that has to download the
wheels from PyPI also pays the download.
Results: benchmarks/results/clean_clone.{md,json} with the machine, date and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path, log) -> dict:
    """Run `cmd`, streaming its output to `log`; wall time and the CPU seconds of its tree."""
    print(f"$ {' '.join(cmd)}", flush=True)
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    print(f"  exit {proc.returncode}; {wall:.1f} s wall, {cpu:.1f} CPU s", flush=True)
    return {
        "command": " ".join(cmd),
        "exit_code": proc.returncode,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ref", default="HEAD")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", args.ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="cbi-clean-clone-"))
    repo = work / "repo"
    log_path = work / "make.log"
    pip_cache = Path(os.environ.get("PIP_CACHE_DIR", Path.home() / ".cache" / "pip"))
    env_note: dict = {"pip_cache_present": pip_cache.exists(), "pip_config": []}
    stages: dict[str, dict] = {}
    try:
        subprocess.run(
            ["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(repo)], check=True
        )
        subprocess.run(["git", "checkout", "--quiet", "--detach", commit], cwd=repo, check=True)
        with log_path.open("w") as log:
            stages["make install"] = timed(["make", "install"], repo, log)
            if stages["make install"]["exit_code"] == 0:
                # where pip took the wheels from (an index, a local mirror, find-links)
                config = subprocess.run(
                    [str(repo / ".venv" / "bin" / "pip"), "config", "list"],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                env_note["pip_config"] = config.stdout.strip().splitlines()
                stages["make run"] = timed(["make", "run"], repo, log)
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ok = all(stage["exit_code"] == 0 for stage in stages.values()) and "make run" in stages
    total_wall = sum(stage["wall_seconds"] for stage in stages.values())
    total_cpu = sum(stage["cpu_seconds"] for stage in stages.values())
    stamp = machine_stamp()
    result = {
        "machine": stamp,
        "commit": commit,
        "ok": ok,
        **env_note,
        "stages": stages,
        "total_wall_seconds": round(total_wall, 1),
        "total_cpu_seconds": round(total_cpu, 1),
        "log_tail": tail,
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "clean_clone.json").write_text(json.dumps(result, indent=1))
    rows = "\n".join(
        f"| `{name}` | {s['exit_code']} | {s['wall_seconds']} | {s['cpu_seconds']} | "
        f"{s['cpu_seconds'] / max(s['wall_seconds'], 1e-9):.2f} |"
        for name, s in stages.items()
    )
    tail_text = "\n".join(tail)
    pip_config = "; ".join(f"`{line}`" for line in env_note["pip_config"]) or "none"
    cache = "present (wheels not downloaded again)" if env_note["pip_cache_present"] else "absent"
    (out / "clean_clone.md").write_text(
        "# A clean clone's first `make run`\n\n"
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['platform']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB)\n"
        f"- command: `.venv/bin/python benchmarks/clean_clone.py --ref {args.ref}`: "
        f"`git clone` of commit `{commit}` into a new folder, then `make install` and "
        "`make run` there (a fresh `.venv` and `.cbi_home`)\n"
        f"- pip's download cache on this machine: {cache}; pip's configuration (where it "
        f"takes the wheels from): {pip_config}\n"
        f"- {'succeeded' if ok else 'FAILED'}: **{total_wall:.0f} s** wall in all, "
        f"{total_cpu:.0f} CPU seconds\n\n"
        "| stage | exit | wall (s) | CPU (s) | CPU / wall |\n|---|---|---|---|---|\n"
        f"{rows}\n\n## The last lines `make run` printed\n\n```\n{tail_text}\n```\n"
    )
    record_run(out / "clean_clone.md")
    print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
