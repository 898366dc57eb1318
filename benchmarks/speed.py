"""Speed benchmark: the whole pipeline (`cbi run`, what `make run` does after installing),
wall time end to end, per stage and per asset step, and peak memory.

Usage: .venv/bin/python benchmarks/speed.py [--manifest PATH] [--horizons ...]
Runs in a fresh temporary home (warehouse, MLflow, instance), never the user's .cbi_home.
Results: benchmarks/results/speed_<source>.{md,json} with machine and date.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402


class PeakMemory(threading.Thread):
    """Samples the resident memory of this process plus its children (the walk-forward workers)
    every 0.2 s; the peak is what must fit the machine."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mib = 0.0
        self.samples: list[tuple[float, float, float]] = []  # (time, main MiB, children MiB)
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

    def run(self) -> None:
        while not self.stop.wait(0.2):
            main, children = self.sample()
            self.samples.append((time.perf_counter(), main, children))
            self.peak_mib = max(self.peak_mib, main + children)

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
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cbi-speed-"))
    os.environ["CBI_HOME"] = str(home)
    os.environ.pop("DAGSTER_HOME", None)
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

    def on_result(label: str, result: dg.ExecuteInProcessResult) -> None:
        now = time.perf_counter()
        stages[label] = round(now - last[0], 1)
        stage_ends.append((label, now))
        last[0] = now
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
    code = run_pipeline(args.horizons, log, on_result=on_result)
    wall = time.perf_counter() - started
    sampler.stop.set()
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_total = sampler.peak_mib
    stage_memory = sampler.per_stage(stage_ends)
    stamp = machine_stamp()
    per_asset: dict[str, float] = {}
    for s in steps:
        per_asset[s["step"]] = round(per_asset.get(s["step"], 0) + s["seconds"], 2)
    source = Path(args.manifest).stem if args.manifest else "simulated"
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
        "wall_seconds": round(wall, 1),
        "peak_rss_mib_main": round(peak_self),
        "peak_rss_mib_main_plus_workers": round(peak_total),
        "stages": stages,
        "stage_peak_rss_mib": stage_memory,
        "per_asset_seconds": per_asset,
        "network_fits": network_fits,
        "home": str(home),  # kept: benchmarks/refresh.py --home reuses the trained versions
    }
    (out / f"speed_{source}.json").write_text(json.dumps(result, indent=1))
    manifest_arg = f" --manifest {args.manifest}" if args.manifest else ""
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(per_asset.items(), key=lambda kv: -kv[1]))
    (out / f"speed_{source}.md").write_text(
        f"# Speed benchmark: {source}\n\n"
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['platform']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB)\n"
        f"- command: `.venv/bin/python benchmarks/speed.py{manifest_arg}` "
        f"(the pipeline `make run` runs, after installation, in a fresh home)\n"
        f"- protocol hash `{protocol_hash}`\n"
        f"- exit code {code}; wall time **{wall:.0f} s**; peak RSS main process "
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
        f"| asset step (all horizons) | seconds |\n|---|---|\n{rows}\n"
        + "".join(
            f"\n## Network fits, {stage}\n\n{table}\n" for stage, table in network_fits.items()
        )
    )
    record_run(out / f"speed_{source}.md", protocol_hash)
    print(log.getvalue()[-1500:])
    print(json.dumps(result, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
