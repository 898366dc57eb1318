"""Daily-refresh benchmark: one business day through the served versions, all five horizons,
no retraining (target: <= 30 s wall on the 2-core machine).

Usage: .venv/bin/python benchmarks/refresh.py --home DIR [--days 3]
`DIR` is a home with trained versions on the default simulator (e.g. the one
`benchmarks/speed.py` leaves behind, named in benchmarks/results/speed_simulated.json). Each
measured day moves the simulator's end one business day forward (live mode: a new row, earlier
rows unchanged) and runs the `daily_refresh_job` selection in-process, as `make run`'s last
stage does; then once as the daemon would, `dagster job execute` in a new process (process
start and imports included). Results: benchmarks/results/refresh_simulated.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402


def _next_business_days(day: dt.date, n: int) -> list[dt.date]:
    out = []
    while len(out) < n:
        day += dt.timedelta(days=1)
        if day.weekday() < 5:
            out.append(day)
    return out


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--days", type=int, default=3)
    args = parser.parse_args()
    home = Path(args.home).resolve()
    import dagster as dg

    from cbi_platform.defs.pipeline import REFRESH
    from cbi_platform.defs.resources import build_resources
    from cbi_platform.market.simulator import SimulatorConfig
    from cbi_platform.runner import materialize

    days = _next_business_days(SimulatorConfig().end, args.days + 1)
    runs = []
    for day in days[:-1]:
        resources = build_resources({"CBI_HOME": str(home), "CBI_SIM_END": day.isoformat()})
        started = time.perf_counter()
        result = materialize(
            REFRESH,
            resources=resources,
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
        wall = time.perf_counter() - started
        steps = {
            e.step_key: round(e.event_specific_data.duration_ms / 1000, 2)
            for e in result.all_events
            if e.event_type_value == "STEP_SUCCESS"
        }
        runs.append(
            {
                "day": str(day),
                "success": result.success,
                "wall_seconds": round(wall, 1),
                "steps": steps,
            }
        )
        print(f"{day}: {wall:.1f}s success={result.success}", flush=True)
    # As the daemon launches it: a new process, definitions imported, the job executed.
    day = days[-1]
    env = {
        **os.environ,
        "CBI_HOME": str(home),
        "CBI_SIM_END": day.isoformat(),
        "DAGSTER_HOME": tempfile.mkdtemp(prefix="cbi-refresh-instance-"),
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "dagster"),
            "job",
            "execute",
            "-m",
            "cbi_platform.definitions",
            "-j",
            "daily_refresh_job",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    process_wall = time.perf_counter() - started
    print(f"{day} (dagster job execute): {process_wall:.1f}s rc={proc.returncode}", flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
    stamp = machine_stamp()
    median = statistics.median(r["wall_seconds"] for r in runs)
    result = {
        "machine": stamp,
        "home": str(home),
        "in_process": runs,
        "median_in_process_seconds": median,
        "dagster_job_execute": {
            "day": str(day),
            "wall_seconds": round(process_wall, 1),
            "returncode": proc.returncode,
        },
    }
    out = ROOT / "benchmarks" / "results"
    (out / "refresh_simulated.json").write_text(json.dumps(result, indent=1))
    steps = runs[-1]["steps"]
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(steps.items(), key=lambda kv: -kv[1]))
    (out / "refresh_simulated.md").write_text(
        "# Daily refresh benchmark: simulator, five horizons, no retraining\n\n"
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['cpus']} CPUs, "
        f"{stamp['memory_gib']} GiB)\n"
        f"- command: `.venv/bin/python benchmarks/refresh.py --home <trained home> "
        f"--days {args.days}`\n"
        f"- in-process runs of the `daily_refresh_job` selection (new simulated day each): "
        + ", ".join(f"{r['day']} **{r['wall_seconds']} s**" for r in runs)
        + f"; median **{median} s** (target 30 s)\n"
        f"- as the daemon runs it (`dagster job execute`, new process, imports included): "
        f"**{process_wall:.1f} s** (exit code {proc.returncode})\n\n"
        f"Steps of the last in-process run (s):\n\n| step | seconds |\n|---|---|\n{rows}\n"
    )
    record_run(out / "refresh_simulated.md")
    print((out / "refresh_simulated.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
