"""Run lanes benchmark (issue 21): does a daily refresh still start and finish in time while a
retrain of one horizon runs? Targets: the refresh waits <= 60 s in the run queue, and its wall
time beside the retrain is <= 2x its wall time alone.

Usage: .venv/bin/python benchmarks/concurrency.py [--home DIR] [--horizon 1w]
       [--job retrain_job] [--lead 20] [--retrain-timeout 1800]

`DIR` is a home with trained versions on the default simulator (e.g. the `.cbi_home` a
`make run` leaves); it is copied, never written. Without `--home` a small one is built first:
the small files source of the tests (1,400 business days), a shrunk protocol, and `cbi run`
over 1w and 1m (CBI_HORIZONS: the refresh serves those; the daemon's runs use the same source and
protocol).
Then a real `dagster-daemon` on a fresh SQLite instance with this checkout's `dagster.yaml`:
1. the daily refresh alone (`dagster job launch -j daily_refresh_job`);
2. the retrain (`--job` for partition `--horizon`), and `--lead` seconds after it started, the
   refresh again: its queue delay (creation to start in the instance) and its wall time (start
   to RUN_SUCCESS) are the numbers; the retrain must still be running when the refresh starts,
   and it is awaited to the end (both must succeed).
The machine is what it is (other work on it shows up in the numbers): see its stamp.
Results: benchmarks/results/concurrency.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import git_commit, machine_stamp, record_run  # noqa: E402

BIN = Path(sys.executable).parent
TARGET_QUEUE_SECONDS = 60.0
TARGET_SLOWDOWN = 2.0
SMALL_HORIZONS = ("1w", "1m")  # the built home's (a retrain of one of them runs beside)
# The small protocol of the tests (cbi_platform_tests/conftest.py SMALL_PROTOCOL), one worker.
SMALL_PROTOCOL = {
    "grid": {"span": 240, "n_scored": 12, "end_offset": 5},
    "windows": {"n_development": 20, "n_calibration": 20, "min_first_origin_row": 100},
    "ensemble": {"min_history": 5},
}


def _small_setup(folder: Path) -> dict[str, str]:
    """The small files source and protocol, as the environment `cbi` and the daemon read."""
    from cbi_platform_tests.conftest import write_small_manifest

    data = folder / "data"
    data.mkdir(parents=True)
    manifest = write_small_manifest(data, n_days=1400)
    protocol = yaml.safe_load((ROOT / "cbi_platform" / "protocol.yaml").read_text())
    for section, values in SMALL_PROTOCOL.items():
        protocol[section].update(values)
    path = folder / "protocol.yaml"
    path.write_text(yaml.safe_dump(protocol))
    return {
        "CBI_MANIFEST": str(manifest),
        "CBI_PROTOCOL": str(path),
        "CBI_WORKERS": "1",
        "CBI_HORIZONS": ",".join(SMALL_HORIZONS),  # the refresh serves what was trained
    }


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DAGSTER_HOME", None)  # the daemon gets its own; `cbi run` an ephemeral one
    return env


def build_home(home: Path, extra: dict[str, str]) -> float:
    """`cbi run` over SMALL_HORIZONS (the daily refresh serves those, CBI_HORIZONS)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "cbi_platform.cli", "run", "--horizons",
         *SMALL_HORIZONS],  # fmt: skip
        cwd=ROOT,
        env=_env(CBI_HOME=str(home), **extra),
        capture_output=True,
        text=True,
        check=False,
    )
    (home / "build.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"cbi run failed (see {home / 'build.log'}):\n{proc.stderr[-3000:]}")
    return round(time.perf_counter() - started, 1)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the daemon and everything it started (its code server and run workers)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
            os.killpg(proc.pid, signal.SIGKILL)  # the group may outlive its leader
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue
        return


class Daemon:
    """A dagster-daemon on a fresh instance with this checkout's dagster.yaml."""

    def __init__(self, env: dict[str, str]):
        import dagster as dg
        from dagster._core.instance.ref import InstanceRef

        self.folder = Path(tempfile.mkdtemp(prefix="cbi-concurrency-instance-"))
        shutil.copy(ROOT / "dagster.yaml", self.folder / "dagster.yaml")
        self.env = {**env, "DAGSTER_HOME": str(self.folder)}
        # One process creates the instance's storage before two share it (SQLite: concurrent
        # first use races on the schema and leaves two alembic heads).
        subprocess.run(
            [str(BIN / "dagster"), "instance", "migrate"],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.log = (self.folder / "daemon.log").open("w")
        self.proc = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-m", "cbi_platform.definitions"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.folder)))
        deadline = time.time() + 300
        while "QUEUED_RUN_COORDINATOR" not in self.instance.get_daemon_heartbeats():
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the daemon did not start; see {self.folder / 'daemon.log'}")
            time.sleep(0.5)

    def launch(self, job: str, tags: dict[str, str] | None = None) -> str:
        known = {r.dagster_run.run_id for r in self.instance.get_run_records()}
        command = [str(BIN / "dagster"), "job", "launch", "-m", "cbi_platform.definitions"]
        command += ["-j", job] + (["--tags", json.dumps(tags)] if tags else [])
        proc = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dagster job launch {job} failed:\n{proc.stderr[-3000:]}")
        (record,) = [
            r for r in self.instance.get_run_records() if r.dagster_run.run_id not in known
        ]
        return record.dagster_run.run_id

    def record(self, run_id: str):
        return self.instance.get_run_record_by_id(run_id)

    def wait(self, run_id: str, timeout: float, started_only: bool = False):
        deadline = time.time() + timeout
        while time.time() < deadline:
            record = self.record(run_id)
            if record.dagster_run.is_finished or (started_only and record.start_time):
                return record
            time.sleep(0.2)
        raise RuntimeError(f"run {run_id} did not {'start' if started_only else 'end'} in time")

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


def timing(record) -> dict:
    created = record.create_timestamp.timestamp()
    end = record.end_time or time.time()
    start = record.start_time or end
    return {
        "run_id": record.dagster_run.run_id,
        "status": record.dagster_run.status.value,
        "tags": {k: v for k, v in record.dagster_run.tags.items() if k.startswith("cbi/")},
        "queued_seconds": round(start - created, 1),
        "wall_seconds": round(end - start, 1),
        "created": created,
        "start": start,
        "end": end,
    }


def measure(home: Path, extra: dict[str, str], args) -> dict:
    daemon = Daemon(_env(CBI_HOME=str(home), **extra))
    try:
        alone = timing(daemon.wait(daemon.launch("daily_refresh_job"), 900))
        print(f"refresh alone: {alone}", flush=True)
        if alone["status"] != "SUCCESS":
            raise RuntimeError(f"the refresh alone failed; see the instance {daemon.folder}")
        retrain_id = daemon.launch(args.job, {"dagster/partition": args.horizon})
        retrain_started = daemon.wait(retrain_id, 900, started_only=True)
        time.sleep(args.lead)
        if daemon.record(retrain_id).dagster_run.is_finished:
            raise RuntimeError(f"the retrain ended within --lead {args.lead} s: nothing overlaps")
        beside = timing(daemon.wait(daemon.launch("daily_refresh_job"), 900))
        print(f"refresh beside the retrain: {beside}", flush=True)
        retrain = timing(daemon.wait(retrain_id, args.retrain_timeout))
        print(f"retrain: {retrain}", flush=True)
    finally:
        daemon.stop()
    overlap = retrain["start"] < beside["start"] < retrain["end"]
    return {
        "instance": str(daemon.folder),
        "refresh_alone": alone,
        "retrain": {**retrain, "lead_seconds": args.lead},
        "refresh_beside_retrain": beside,
        "retrain_running_when_refresh_started": overlap,
        "retrain_started_queued_seconds": timing(retrain_started)["queued_seconds"],
    }


def _verdict(met: bool, text: str) -> str:
    return f"{'met' if met else 'missed'} ({text})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, help="a trained simulator home (default: build one)")
    parser.add_argument("--horizon", default="1w")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (the home)")
    parser.add_argument("--job", default="retrain_job", choices=["retrain_job", "horizon_job"])
    parser.add_argument("--lead", type=float, default=20.0, help="s between retrain and refresh")
    parser.add_argument("--retrain-timeout", type=float, default=1800.0)
    args = parser.parse_args()
    # A SIGTERM unwinds like an error: the daemon and its runs are stopped, the copy removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="cbi-concurrency-"))
    home = work / "home"
    try:
        if args.home:
            shutil.copytree(args.home.resolve(), home)
            extra, built, source = {}, None, f"copy of {args.home} (simulator)"
        else:
            extra = _small_setup(work)
            home.mkdir()
            built = build_home(home, extra)
            print(f"built a small home in {built} s", flush=True)
            source = "small files source of the tests (1,400 business days), shrunk protocol"
        result = measure(home, extra, args)
    finally:
        if args.keep:
            print(f"kept the work folder (its home/ is reusable with --home): {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    alone, beside = result["refresh_alone"], result["refresh_beside_retrain"]
    slowdown = round(beside["wall_seconds"] / alone["wall_seconds"], 2)
    queue_met = beside["queued_seconds"] <= TARGET_QUEUE_SECONDS
    slow_met = slowdown <= TARGET_SLOWDOWN
    ok = all(r["status"] == "SUCCESS" for r in (alone, beside, result["retrain"]))
    stamp = machine_stamp()
    payload = {
        "machine": stamp,
        "commit": git_commit(),
        "home": source,
        "home_build_seconds": built,
        "job": args.job,
        "horizon": args.horizon,
        **result,
        "slowdown": slowdown,
        "targets": {"queue_seconds": TARGET_QUEUE_SECONDS, "slowdown": TARGET_SLOWDOWN},
        "met": {"queue": queue_met, "slowdown": slow_met, "all_succeeded": ok},
    }
    out = ROOT / "benchmarks" / "results"
    (out / "concurrency.json").write_text(json.dumps(payload, indent=1))
    rows = [
        ("refresh alone", alone),
        ("refresh beside the retrain", beside),
        (f"{args.job} [{args.horizon}]", result["retrain"]),
    ]
    queue_text = f"{beside['queued_seconds']} s"
    slow_text = f"{slowdown}x: {beside['wall_seconds']} s against {alone['wall_seconds']} s"
    table = "\n".join(
        f"| {name} | {r['status']} | {r['queued_seconds']} | {r['wall_seconds']} |"
        for name, r in rows
    )
    (out / "concurrency.md").write_text(
        "# Run lanes: a daily refresh beside a retrain\n\n"
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['cpus']} CPUs, "
        f"{stamp['memory_gib']} GiB); commit `{payload['commit']}`\n"
        f"- command: `.venv/bin/python benchmarks/concurrency.py"
        f"{' --home <trained home>' if args.home else ''} --horizon {args.horizon} "
        f"--job {args.job} --lead {args.lead:g}`\n"
        f"- home: {source}"
        f"{f'; built by `cbi run` (1w, 1m) in {built} s' if built else ''}\n"
        "- a real `dagster-daemon` on a fresh SQLite instance with this checkout's "
        "`dagster.yaml` (run lanes: `cbi/lane` training 1, refresh 1); runs submitted with "
        "`dagster job launch`; queued = creation to start in the instance, wall = start to end. "
        f"The refresh beside the retrain was submitted {args.lead:g} s after the retrain "
        "started; the retrain was "
        f"{'still running' if result['retrain_running_when_refresh_started'] else 'NOT running'}"
        " when the refresh started\n"
        f"- queue delay of the refresh beside the retrain (target <= {TARGET_QUEUE_SECONDS:g} s): "
        f"{_verdict(queue_met, queue_text)}\n"
        f"- its wall time against alone (target <= {TARGET_SLOWDOWN:g}x): "
        f"{_verdict(slow_met, slow_text)}\n"
        f"- every run succeeded: {ok}\n\n"
        "| run | status | queued (s) | wall (s) |\n|---|---|---|---|\n"
        f"{table}\n"
    )
    record_run(out / "concurrency.md")
    print((out / "concurrency.md").read_text())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
