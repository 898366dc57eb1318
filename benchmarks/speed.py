"""Speed benchmark: the whole pipeline (`cbi run`, what `make run` does after installing),
wall time end to end, per stage and per asset step, and peak memory.

Usage: .venv/bin/python benchmarks/speed.py [--manifest PATH] [--horizons ...]
Runs in a fresh temporary home (warehouse, MLflow, instance), never the user's .cbi_home.
Results: benchmarks/results/speed_<source>.{md,json} with machine and date.
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import git_commit, machine_stamp, record_run  # noqa: E402


class PeakMemory(threading.Thread):
    """Samples the resident memory of this process plus its children (the walk-forward workers)
    every 0.2 s; the peak is what must fit the machine."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mib = 0.0
        self.samples: list[tuple[float, float, float]] = []  # (time, main MiB, children MiB)
        self.cpu: list[tuple[float, float]] = []  # (time.time(), CPU seconds so far)
        self.stop = threading.Event()

    @staticmethod
    def _status(pid: str) -> dict[str, str]:
        try:
            with open(f"/proc/{pid}/status") as f:
                return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            return {}

    def sample(self) -> tuple[float, float]:
        """(this process, its children) resident MiB now."""
        me, main, children = str(os.getpid()), 0.0, 0.0
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            status = self._status(pid)
            mib = float(status.get("VmRSS", "0 kB").split()[0]) / 1024
            if pid == me:
                main += mib
            elif status.get("PPid", "").strip() == me:
                children += mib
        return main, children

    @staticmethod
    def cpu_seconds() -> float:
        """CPU seconds (user + system) of this process and every process under it so far: its
        own, its reaped children's, and the live descendants' (with what they reaped)."""
        own = os.times()
        total = own.user + own.system + own.children_user + own.children_system
        tick = os.sysconf("SC_CLK_TCK")
        parents: dict[str, str] = {}
        times: dict[str, float] = {}
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[pid] = fields[1]
            times[pid] = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
        me, below = str(os.getpid()), set()
        frontier = {me}
        while frontier:
            frontier = {p for p, parent in parents.items() if parent in frontier} - below
            below |= frontier
        return total + sum(times[p] for p in below)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            main, children = self.sample()
            self.samples.append((time.perf_counter(), main, children))
            self.cpu.append((time.time(), self.cpu_seconds()))
            self.peak_mib = max(self.peak_mib, main + children)

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds spent between two wall-clock (time.time()) instants, from the samples."""
        if not self.cpu:
            return 0.0
        times = [t for t, _ in self.cpu]
        values = [c for _, c in self.cpu]

        def at(t: float) -> float:
            i = bisect.bisect_left(times, t)
            if i <= 0:
                return values[0]
            if i >= len(times):
                return values[-1]
            t0, t1, v0, v1 = times[i - 1], times[i], values[i - 1], values[i]
            return v0 + (v1 - v0) * (t - t0) / max(t1 - t0, 1e-9)

        return max(0.0, at(end) - at(start))

    def per_stage(self, ends: list[tuple[str, float]]) -> dict[str, dict[str, int]]:
        """Peak MiB (main, workers, together) within each stage, from the stage end times."""
        out, start = {}, 0.0
        for label, end in ends:
            inside = [s for s in self.samples if start < s[0] <= end]
            if inside:
                out[label] = {
                    "main": round(max(s[1] for s in inside)),
                    "workers": round(max(s[2] for s in inside)),
                    "together": round(max(s[1] + s[2] for s in inside)),
                }
            start = end
        return out


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest")
    parser.add_argument("--horizons", nargs="+", default=["1w", "1m", "3m", "6m", "12m"])
    parser.add_argument(
        "--checkout",
        type=Path,
        help="time this checkout's code instead of this one's (e.g. a git worktree of the "
        "commit before); results are named speed_<source>_<label>",
    )
    parser.add_argument("--label", help="suffix of the results files (default: none)")
    parser.add_argument(
        "--warm",
        action="store_true",
        help="after the cold run, run the pipeline again on the same home with nothing changed",
    )
    args = parser.parse_args()
    if args.checkout is not None:
        code = str(args.checkout.resolve())
        sys.path.insert(0, code)
        os.environ["PYTHONPATH"] = code  # worker processes import the same code
    home = Path(tempfile.mkdtemp(prefix="cbi-speed-"))
    os.environ["CBI_HOME"] = str(home)
    # A persistent instance beside the home, as `make run` has: a second run can see what the
    # first materialized, and every event has its timestamp (the per-step CPU below).
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    (home / "dagster").mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster" / "dagster.yaml")
    if args.manifest:
        os.environ["CBI_SOURCE"], os.environ["CBI_MANIFEST"] = (
            "files",
            str(Path(args.manifest).resolve()),
        )
    import dagster as dg

    from cbi_platform.runner import run_pipeline

    steps: list[dict] = []
    network_fits: dict[str, str] = {}  # stage -> the neural step's per-network fit table
    stages: dict[str, float] = {}
    stage_ends: list[tuple[str, float]] = []
    last = [time.perf_counter()]

    stage_cpu: dict[str, float] = {}
    step_cpu: list[dict] = []
    last_wall = [time.time()]

    def on_result(label: str, result: dg.ExecuteInProcessResult) -> None:
        now = time.perf_counter()
        stages[label] = round(now - last[0], 1)
        stage_ends.append((label, now))
        last[0] = now
        wall_now = time.time()
        stage_cpu[label] = round(sampler.cpu_between(last_wall[0], wall_now), 1)
        last_wall[0] = wall_now
        starts: dict[str, float] = {}
        for entry in dg.DagsterInstance.get().all_logs(result.run_id):
            event = entry.dagster_event
            if event is None or event.step_key is None:
                continue
            if event.event_type_value == "STEP_START":
                starts[event.step_key] = entry.timestamp
            elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                begun = starts.get(event.step_key, entry.timestamp)
                step_cpu.append(
                    {
                        "stage": label,
                        "step": event.step_key,
                        "cpu_seconds": round(sampler.cpu_between(begun, entry.timestamp), 2),
                    }
                )
        for event in result.all_events:
            if event.event_type_value == "ASSET_MATERIALIZATION":
                mat = event.event_specific_data.materialization
                if mat.asset_key.to_user_string() == "oof_neural" and "fits" in mat.metadata:
                    network_fits[label] = mat.metadata["fits"].value
            if event.event_type_value == "STEP_SUCCESS":
                steps.append(
                    {
                        "stage": label,
                        "step": event.step_key,
                        "seconds": round(event.event_specific_data.duration_ms / 1000, 2),
                    }
                )

    log = io.StringIO()
    sampler = PeakMemory()
    sampler.start()
    started = time.perf_counter()
    cpu_started = sampler.cpu_seconds()
    code = run_pipeline(args.horizons, log, on_result=on_result)
    wall = time.perf_counter() - started
    cpu_total = sampler.cpu_seconds() - cpu_started
    warm = None
    if args.warm and code == 0:
        # The same command again on the same home, nothing changed, as a user runs it: a new
        # `cbi run` process (imports included) with the same environment.
        warm_started, warm_cpu = time.perf_counter(), sampler.cpu_seconds()
        proc = subprocess.run(
            [sys.executable, "-W", "ignore", "-m", "cbi_platform.cli", "run", "--horizons",
             *args.horizons],
            env=os.environ.copy(),
            cwd=args.checkout.resolve() if args.checkout else ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        warm = {
            "exit_code": proc.returncode,
            "wall_seconds": round(time.perf_counter() - warm_started, 1),
            "cpu_seconds": round(sampler.cpu_seconds() - warm_cpu, 1),
            "stage_lines": [x for x in proc.stdout.splitlines() if x.startswith("[")],
            "output_tail": proc.stdout[-3000:],
        }
        (home / "warm_run.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    sampler.stop.set()
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_total = sampler.peak_mib
    stage_memory = sampler.per_stage(stage_ends)
    stamp = machine_stamp()
    per_asset: dict[str, float] = {}
    for s in steps:
        per_asset[s["step"]] = round(per_asset.get(s["step"], 0) + s["seconds"], 2)
    per_asset_cpu: dict[str, float] = {}
    for s in step_cpu:
        per_asset_cpu[s["step"]] = round(per_asset_cpu.get(s["step"], 0) + s["cpu_seconds"], 1)
    floor = cpu_total / 2  # the 2-core floor: the CPU work spread over both cores
    source = Path(args.manifest).stem if args.manifest else "simulated"
    name = f"speed_{source}" + (f"_{args.label}" if args.label else "")
    neural = per_asset.get("members_neural", 0.0) + per_asset.get("neural_volatility", 0.0)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    from cbi_platform.settings import load_protocol

    protocol_hash = load_protocol().hash()
    result = {
        "machine": stamp,
        "protocol_hash": protocol_hash,
        "source": source,
        "exit_code": code,
        "checkout": str(args.checkout.resolve() if args.checkout else ROOT),
        "commit": git_commit(args.checkout.resolve() if args.checkout else ROOT),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu_total, 1),
        "two_core_floor_seconds": round(floor, 1),
        "wall_over_floor": round(wall / floor, 2) if floor else None,
        "stage_cpu_seconds": stage_cpu,
        "per_asset_cpu_seconds": per_asset_cpu,
        "warm": warm,
        "peak_rss_mib_main": round(peak_self),
        "peak_rss_mib_main_plus_workers": round(peak_total),
        "stages": stages,
        "stage_peak_rss_mib": stage_memory,
        "per_asset_seconds": per_asset,
        "network_fits": network_fits,
        "home": str(home),  # kept: benchmarks/refresh.py --home reuses the trained versions
    }
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    manifest_arg = f" --manifest {args.manifest}" if args.manifest else ""
    rows = "\n".join(
        f"| {k} | {v} | {per_asset_cpu.get(k, '')} |"
        for k, v in sorted(per_asset.items(), key=lambda kv: -kv[1])
    )
    stage_rows = "\n".join(
        f"| {k} | {v} | {stage_cpu.get(k, '')} |" for k, v in stages.items()
    )
    warm_line = (
        f"- warm run (the same command again on the same home, nothing changed): exit code "
        f"{warm['exit_code']}; wall **{warm['wall_seconds']} s** "
        f"({100 * warm['wall_seconds'] / wall:.1f}% of the cold run), "
        f"CPU {warm['cpu_seconds']} s; what it printed per stage:\n\n```\n"
        + "\n".join(warm["stage_lines"])
        + "\n```\n\n"
        if warm
        else ""
    )
    (out / f"{name}.md").write_text(
        f"# Speed benchmark: {source}\n\n"
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['platform']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB)\n"
        f"- command: `.venv/bin/python benchmarks/speed.py{manifest_arg}` "
        f"(the pipeline `make run` runs, after installation, in a fresh home)\n"
        f"- protocol hash `{protocol_hash}`\n"
        f"- code: `{result['checkout']}` at `{result['commit']}`\n"
        f"- CPU seconds (this process and every worker under it, sampled every 0.2 s): "
        f"**{cpu_total:.0f}**; 2-core floor (CPU / 2) **{floor:.0f} s**; wall / floor "
        f"**{wall / floor:.2f}**\n"
        + warm_line
        + f"- exit code {code}; wall time **{wall:.0f} s**; peak RSS main process "
        f"**{peak_self:.0f} MiB**; peak of main + walk-forward workers together "
        f"**{peak_total:.0f} MiB** (sampled every 0.2 s)\n"
        f"- per stage (s): {stages}\n"
        f"- peak resident MiB per stage (main, workers, together): "
        + "; ".join(
            f"{k} {v['main']}/{v['workers']}/{v['together']}" for k, v in stage_memory.items()
        )
        + "\n"
        f"- networks (members_neural + neural_volatility): **{neural:.0f} s**, "
        f"{100 * neural / wall:.0f}% of the wall time\n\n"
        f"| stage | wall seconds | CPU seconds |\n|---|---|---|\n{stage_rows}\n\n"
        f"| asset step (all horizons) | seconds | CPU seconds |\n|---|---|---|\n{rows}\n"
        + "".join(
            f"\n## Network fits, {stage}\n\n{table}\n" for stage, table in network_fits.items()
        )
    )
    record_run(out / f"{name}.md", protocol_hash)
    print(log.getvalue()[-1500:])
    print(json.dumps(result, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
