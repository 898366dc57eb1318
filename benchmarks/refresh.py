"""Daily-refresh benchmark: one business day through the served versions, all five horizons,
no retraining. Targets (issue 19): <= 10 s in-process; <= 15 s launched, from submission to
RUN_SUCCESS through the queued run coordinator, the way the daemon runs it.

Usage: .venv/bin/python benchmarks/refresh.py --home DIR [--baseline CHECKOUT] [--days 3]
       [--launches 3]

`DIR` is a home with trained versions on the default simulator (e.g. the `.cbi_home` a
`make run` leaves). Each side of the comparison (the `--baseline` checkout, e.g. a
`git worktree` of the commit before, and this checkout) gets its own copy of `DIR` and runs:
* in-process: one process (benchmarks/_refresh_inprocess.py, with the side's code on
  PYTHONPATH) refreshes `--days` simulated business days one after the other, each a new day
  (live mode: a new row, earlier rows unchanged), as `make run`'s last stage and the replay do;
* launched: a real `dagster-daemon` on a fresh instance with the side's own dagster.yaml; each
  of `--launches` runs is submitted with `dagster job launch` (queued run coordinator), and
  timed from the run's creation to RUN_SUCCESS in the instance, and from the command's start.
The two sides run one after the other on the same machine. Results:
benchmarks/results/refresh_simulated.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import git_commit, machine_stamp, record_run  # noqa: E402

BIN = Path(sys.executable).parent  # the interpreter running this benchmark (its venv)
TARGET_IN_PROCESS, TARGET_LAUNCHED = 10.0, 15.0
FIRST_DAY = dt.date(2026, 1, 1)  # the day after the default simulator's end


def business_days(first: dt.date, n: int) -> list[dt.date]:
    out, day = [], first
    while len(out) < n:
        if day.weekday() < 5:
            out.append(day)
        day += dt.timedelta(days=1)
    return out


def _env(checkout: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1", **extra}


def in_process(checkout: Path, home: Path, days: list[dt.date]) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [
            str(BIN / "python"),
            str(ROOT / "benchmarks" / "_refresh_inprocess.py"),
            "--home",
            str(home),
            *[d.isoformat() for d in days],
        ],
        env=_env(checkout),
        cwd=checkout,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or len(lines) != len(days) + 1:
        raise RuntimeError(f"in-process refresh failed in {checkout}:\n{proc.stderr[-3000:]}")
    runs = lines[1:]
    for run in runs:
        print(f"  {run['day']}: {run['wall_seconds']} s success={run['success']}", flush=True)
    return {
        "process_seconds": round(time.perf_counter() - started, 1),
        "import_seconds": lines[0]["import_seconds"],
        "runs": runs,
        "first_day_seconds": runs[0]["wall_seconds"],
        "median_seconds": statistics.median(r["wall_seconds"] for r in runs),
        "median_after_first_seconds": statistics.median(r["wall_seconds"] for r in runs[1:])
        if len(runs) > 1
        else None,
    }


def _stop(proc: subprocess.Popen) -> None:
    """Stop the daemon and everything it started (its code server and run workers)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
            # the group may outlive its leader: make sure no worker is left behind
            os.killpg(proc.pid, signal.SIGKILL)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue
        return


def launched(checkout: Path, home: Path, day: dt.date, launches: int) -> dict:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    instance_dir = Path(tempfile.mkdtemp(prefix="cbi-refresh-instance-"))
    shutil.copy(checkout / "dagster.yaml", instance_dir / "dagster.yaml")
    env = _env(
        checkout,
        DAGSTER_HOME=str(instance_dir),
        CBI_HOME=str(home),
        CBI_SIM_END=day.isoformat(),
    )
    # Create the instance's storage here, before the daemon starts: two processes initialising
    # a fresh SQLite instance at once can both stamp its schema ("more than one head present").
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(instance_dir)))
    instance.get_run_records(limit=1)
    log = (instance_dir / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-m", "cbi_platform.definitions"],
        cwd=checkout,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    runs = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            beats = instance.get_daemon_heartbeats()
            if "QUEUED_RUN_COORDINATOR" in beats:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the daemon did not start; see {instance_dir / 'daemon.log'}")
        for i in range(launches):
            known = {r.dagster_run.run_id for r in instance.get_run_records()}
            t0 = time.time()
            proc = subprocess.run(
                [
                    str(BIN / "dagster"),
                    "job",
                    "launch",
                    "-m",
                    "cbi_platform.definitions",
                    "-j",
                    "daily_refresh_job",
                ],
                cwd=checkout,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            command_seconds = time.time() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"dagster job launch failed:\n{proc.stderr[-3000:]}")
            (record,) = [r for r in instance.get_run_records() if r.dagster_run.run_id not in known]
            run_id = record.dagster_run.run_id
            deadline = time.time() + 600
            while time.time() < deadline:
                record = instance.get_run_record_by_id(run_id)
                if record.dagster_run.is_finished:
                    break
                time.sleep(0.2)
            status = record.dagster_run.status.value
            created = record.create_timestamp.timestamp()
            end = record.end_time or time.time()
            row = {
                "launch": i + 1,
                "status": status,
                "submitted_to_success_seconds": round(end - created, 1),
                "queued_seconds": round((record.start_time or end) - created, 1),
                "worker_seconds": round(end - (record.start_time or end), 1),
                "command_start_to_success_seconds": round(end - t0, 1),
                "launch_command_seconds": round(command_seconds, 1),
            }
            runs.append(row)
            print(f"  launched {i + 1}: {row}", flush=True)
            if status != "SUCCESS":
                raise RuntimeError(f"run {run_id} ended {status}; see the instance {instance_dir}")
    finally:
        _stop(daemon)
        log.close()
    return {
        "day": day.isoformat(),
        "instance": str(instance_dir),
        "runs": runs,
        "median_submitted_to_success_seconds": statistics.median(
            r["submitted_to_success_seconds"] for r in runs
        ),
        "median_command_start_to_success_seconds": statistics.median(
            r["command_start_to_success_seconds"] for r in runs
        ),
    }


def measure(label: str, checkout: Path, source_home: Path, args) -> dict:
    print(f"{label}: {checkout} ({git_commit(checkout)})", flush=True)
    home = Path(tempfile.mkdtemp(prefix=f"cbi-refresh-{label}-")) / "home"
    shutil.copytree(source_home, home)
    days = business_days(FIRST_DAY, args.days + 1)
    try:
        result = {
            "checkout": str(checkout),
            "commit": git_commit(checkout),
            "in_process": in_process(checkout, home, days[:-1]),
            "launched": launched(checkout, home, days[-1], args.launches),
        }
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)
    return result


def _verdict(value: float, target: float) -> str:
    return f"{'met' if value <= target else 'missed'} ({value} s against {target:g} s)"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--baseline", type=Path, help="checkout of the code to compare against")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--launches", type=int, default=3)
    args = parser.parse_args()
    home = args.home.resolve()
    sides = {}
    if args.baseline:
        sides["baseline"] = measure("baseline", args.baseline.resolve(), home, args)
    sides["current"] = measure("current", ROOT, home, args)
    stamp = machine_stamp()
    now = sides["current"]
    result = {"machine": stamp, "home": str(home), "days": args.days, **sides}
    out = ROOT / "benchmarks" / "results"
    (out / "refresh_simulated.json").write_text(json.dumps(result, indent=1))
    table = ["| | " + " | ".join(sides) + " |", "|---" * (len(sides) + 1) + "|"]

    def row(name, get):
        table.append(f"| {name} | " + " | ".join(str(get(s)) for s in sides.values()) + " |")

    row("commit", lambda s: f"`{s['commit'][:12]}`")
    row("import of the pipeline (s)", lambda s: s["in_process"]["import_seconds"])
    row(
        "in-process, each day (s)",
        lambda s: ", ".join(str(r["wall_seconds"]) for r in s["in_process"]["runs"]),
    )
    row("in-process median (s)", lambda s: s["in_process"]["median_seconds"])
    row(
        "launched, submission to RUN_SUCCESS, each (s)",
        lambda s: ", ".join(str(r["submitted_to_success_seconds"]) for r in s["launched"]["runs"]),
    )
    row(
        "launched median, submission to RUN_SUCCESS (s)",
        lambda s: s["launched"]["median_submitted_to_success_seconds"],
    )
    row(
        "of which queued, median (s)",
        lambda s: statistics.median(r["queued_seconds"] for r in s["launched"]["runs"]),
    )
    row(
        "launched median, from `dagster job launch`'s start (s)",
        lambda s: s["launched"]["median_command_start_to_success_seconds"],
    )
    steps = now["in_process"]["runs"][-1]["steps"]
    step_rows = "\n".join(
        f"| {k} | {v} |" for k, v in sorted(steps.items(), key=lambda kv: -kv[1]) if v >= 0.2
    )
    ratio = ""
    if "baseline" in sides:
        base = sides["baseline"]
        ratio = (
            f"- ratios current / baseline: in-process median "
            f"{now['in_process']['median_seconds'] / base['in_process']['median_seconds']:.2f}, "
            "launched median "
            f"{now['launched']['median_submitted_to_success_seconds'] / base['launched']['median_submitted_to_success_seconds']:.2f}\n"  # noqa: E501
        )
    (out / "refresh_simulated.md").write_text(
        "# Daily refresh benchmark: simulator, five horizons, no retraining\n\n"
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['cpus']} CPUs, "
        f"{stamp['memory_gib']} GiB)\n"
        f"- command: `.venv/bin/python benchmarks/refresh.py --home <trained home>"
        f"{' --baseline <checkout>' if args.baseline else ''} --days {args.days} "
        f"--launches {args.launches}`\n"
        "- each side refreshes its own copy of the same trained home; the sides run one after "
        "the other. In-process: one process, one new simulated day per run. Launched: a "
        "`dagster-daemon` on a fresh instance with the side's own `dagster.yaml`; each run "
        "submitted with `dagster job launch` (queued run coordinator) for the same next day, "
        "timed from the run's creation in the instance to RUN_SUCCESS\n"
        f"- in-process target (10 s, median of the days): "
        f"{_verdict(now['in_process']['median_seconds'], TARGET_IN_PROCESS)}\n"
        f"- launched target (15 s, median): "
        f"{_verdict(now['launched']['median_submitted_to_success_seconds'], TARGET_LAUNCHED)}\n"
        f"{ratio}\n" + "\n".join(table) + "\n\n"
        f"Steps of the current code's last in-process run (s, >= 0.2 s):\n\n"
        f"| step | seconds |\n|---|---|\n{step_rows}\n"
    )
    record_run(out / "refresh_simulated.md")
    print((out / "refresh_simulated.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
