"""Soak benchmark (issue 21): months of simulated business days through the platform as services,
with planted faults.

Usage: .venv/bin/python benchmarks/soak.py [--days 120] [--faults daemon_kill@10,...]
       [--seconds-per-day 3] [--day-timeout 300] [--sensor-timeout 90] [--clients 4]
       [--name soak] [--no-stack]

Setup: a small home trained on the simulator through the start day, **1w and 1m only, on a
reduced protocol and zoo** (the replay test's: `cbi_platform_tests/deployment.py` SMALL), then
the services **on the stack** (default; `cbi_platform_tests/stack_deployment.py`): `cbi stack up`
with PostgreSQL (the Dagster instance storage and MLflow's backend), the gRPC code server,
`dagster-webserver`, `dagster-daemon` and the forecast API (`cbi serve`) under the stack's
supervisor, which restarts what dies; and a local SMTP server (aiosmtpd, in this process) that
receives the alerts. `--no-stack`: the old harness (`cbi_platform_tests/deployment.py`: SQLite
instance, the driver restarts killed services itself).

The clock is a file (CBI_CLOCK_FILE): the driver moves it one business day at a time once the
previous day's refresh has finished (or after `--day-timeout`) **and** the alert and retraining
sensors have ticked after that refresh (or after `--sensor-timeout`): a condition that fires
for a single simulated day is always seen and mailed. Under the simulated clock those sensors
tick every 5 s (`cbi_platform.clock.sensor_interval_seconds`; CBI_SENSOR_INTERVAL_SECONDS to
choose). The soak sensor launches each day's daily refresh (run_key = the day). A feed outage
holds the data clock (CBI_DATA_CLOCK_FILE) on the last day before it while the calendar moves
on. A bounded API client (threads, loopback only) reads the API the whole time.

Faults (`--faults NAME@DAY,...`; DAY counts business days from 0):
- daemon_kill: SIGKILL the daemon's process; the supervisor restarts it; time until a new
  daemon has written a heartbeat;
- webserver_kill, api_kill: SIGKILL, the supervisor restarts it, time until it answers again;
- postgres_restart (the stack only): SIGKILL the postmaster; the supervisor stops its backends
  and starts it again (crash recovery); time until it answers, the webserver reads the instance,
  the daemon beats again; which services the supervisor had to restart; does the day's refresh
  succeed;
- run_kill: SIGKILL the day's refresh run's own process mid-step (its step process is running):
  the instance must mark it failed, dagster.yaml's run retry re-launch it, nothing written after
  the failure, no process of it left (without the lifeline its step process may survive: counted);
- smtp_down: the mail server down for 2 simulated days, then back: alerts queued, delivered once;
- feed_outage: no new data for 3 simulated days (data clock held), then the feed catches up;
- bias: a planted forecast degradation of the 1w champion from that day (CBI_PLANTED_BIAS,
  alternating sign): when do the monitors alert, is a retrain requested, promoted?
- bad_negative_price, bad_duplicate_date, bad_missing_column: the feed delivers that day with
  a negative ZL close, the day's ZL row twice, or without `published_at` (CBI_PLANTED_DATA,
  cbi_platform/market/planted.py); the day's refresh must fail at validation with a message
  naming the column and rows, a failed-run alert fire, the warehouse keep the day before, and
  the next day's refresh succeed;
- late_revision: from that day on the feed delivers the close of 5 business days earlier 3%
  higher, published that day: no row lost or duplicated, the warehouse holds the revised value.
- celery_worker_kill (the stack only; Redis and three Celery workers run beside the services):
  launch `shared_data_job_celery` through GraphQL, and once one of its steps runs in a worker,
  SIGKILL that worker's `celery worker` process (its pool child dies with it): the run must
  fail, not hang (the executor finds the step's task lost), be retried from the failure, and
  the supervisor restart the worker; a failed-run alert fires.

Results: benchmarks/results/<name>.{md,json,png}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

from cbi_platform_tests.deployment import (  # noqa: E402
    SMALL,
    Deployment,
    alive,
    descendants,
    free_port,
    prepare,
    processes_naming,
    run_worker_pid,
    step_worker_pids,
    wait_for,
)
from cbi_platform_tests.stack_deployment import (  # noqa: E402
    StackDeployment,
    prepare_stack,
    stack_root,
)

HORIZONS = ("1w", "1m")
START = dt.date(2025, 6, 2)  # a Monday; 120 business days end mid-November
SOAK_DAY_TAG = "cbi/soak_day"
# Each fault at least once, all within the first 90 days (what fits 60 minutes here).
DEFAULT_FAULTS = (
    "daemon_kill@8,webserver_kill@16,run_kill@24,api_kill@32,feed_outage@40,smtp_down@41,"
    "postgres_restart@50,bias@60,daemon_kill@75,run_kill@85,bad_negative_price@92,"
    "bad_duplicate_date@96,bad_missing_column@100,late_revision@104,celery_worker_kill@112"
)
BIAS_LOGRET = "pm0.08"
API_PATHS = ("/health", "/forecast/1w", "/forecast/1m", "/predictions", "/history")


def business_days(start: dt.date, n: int) -> list[dt.date]:
    out, day = [], start
    while len(out) < n:
        if day.weekday() < 5:
            out.append(day)
        day += dt.timedelta(days=1)
    return out


# -- the mail server ------------------------------------------------------------------------------
class Inbox:
    """aiosmtpd handler keeping every accepted mail with its receipt time."""

    def __init__(self) -> None:
        self.mails: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = email.message_from_bytes(envelope.original_content or envelope.content)
        self.mails.append(
            {
                "received": time.time(),
                "message_id": message["Message-ID"],
                "subject": " ".join((message["Subject"] or "").split()),
            }
        )
        return "250 Message accepted for delivery"


class MailServer:
    def __init__(self, port: int) -> None:
        self.port, self.inbox, self.controller = port, Inbox(), None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


# -- the API client -------------------------------------------------------------------------------
class ApiClient:
    """`threads` readers (at most 20), loopback only, each pausing `pause` s between requests;
    every request recorded (time, path, ok, latency). Stops on `stop()`."""

    def __init__(self, port: int, key: str, threads: int, pause: float = 0.5) -> None:
        self.port, self.key, self.pause = port, key, pause
        self.threads = min(max(threads, 1), 20)
        self.samples: list[tuple[float, str, bool, float, str]] = []
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _loop(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            path = rng.choice(API_PATHS)
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}{path}", headers={"X-API-Key": self.key}
            )
            started = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
                    status = str(response.status)
            except urllib.error.HTTPError as exc:
                status = str(exc.code)
            except OSError as exc:
                status = type(exc).__name__
            ok = status.isdigit() and int(status) < 500
            self.samples.append((time.time(), path, ok, time.monotonic() - started, status))
            self._stop.wait(self.pause)

    def start(self) -> None:
        for i in range(self.threads):
            worker = threading.Thread(target=self._loop, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=15)


# -- the soak -------------------------------------------------------------------------------------
@dataclass
class Soak:
    deployment: Deployment | StackDeployment
    mail: MailServer
    days: list[dt.date]
    day_timeout: float
    timeline: list[dict] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)
    killed_runs: list[dict] = field(default_factory=list)
    pending: list[tuple[int, Callable[[], None]]] = field(default_factory=list)
    # Planted data faults (CBI_PLANTED_DATA) in force, and days whose refresh must fail.
    planted: list[dict] = field(default_factory=list)
    expect_failure: set = field(default_factory=set)
    started_utc: dt.datetime = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None)
    )

    def note(self, fault: dict, **what) -> None:
        fault.update(what)

    def runs_of_day(self, day: dt.date) -> list:
        import dagster as dg

        return self.deployment.instance().get_runs(
            dg.RunsFilter(job_name="daily_refresh_job", tags={SOAK_DAY_TAG: day.isoformat()})
        )

    def day_done(self, day: dt.date):
        """The day's successful run, or "failed" when every run of it finished and none
        succeeded and no retry is due (a retry is launched within seconds of the failure)."""
        import dagster as dg

        try:
            runs = self.runs_of_day(day)
        except Exception:  # noqa: BLE001 - the instance database may be restarting
            return None
        for run in runs:
            if run.status == dg.DagsterRunStatus.SUCCESS:
                return run
        # A planted bad day: its refresh must fail (a step failure is not retried).
        if (
            day in self.expect_failure
            and runs
            and all(r.status == dg.DagsterRunStatus.FAILURE for r in runs)
        ):
            return runs[0]
        return None

    def write_planted(self) -> None:
        path = Path(self.deployment.env["CBI_PLANTED_DATA"])
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(json.dumps(self.planted))
        os.replace(partial, path)


def _restart_and_time(deployment, name: str, fault: dict | None = None) -> float:
    """SIGKILL `name`; on the stack its supervisor restarts it, on the old harness the driver
    does at once. Seconds from the kill until it is ready again (the daemon: a new process
    that has written a heartbeat since the kill)."""
    killed = time.monotonic()
    if fault is not None:
        fault["killed_at"] = time.time()
    deployment.kill(name)
    if not getattr(deployment, "supervised", False):
        deployment.start(name, wait=False)
    deployment.wait_ready(name, 240)
    return round(time.monotonic() - killed, 1)


def _restarted_by(deployment) -> str:
    return (
        "the stack's supervisor"
        if getattr(deployment, "supervised", False)
        else "the driver (old harness, --no-stack)"
    )


def fault_daemon_kill(soak: Soak, i: int, fault: dict) -> None:
    seconds = _restart_and_time(soak.deployment, "daemon", fault)
    soak.note(fault, restarted_by=_restarted_by(soak.deployment), time_to_healthy_s=seconds)


def fault_postgres_restart(soak: Soak, i: int, fault: dict) -> None:
    """SIGKILL the postmaster (the stack only): the supervisor stops what is left of its group
    (the backends) and starts it again (crash recovery). Then: how long until PostgreSQL
    answers, the webserver reads the instance through GraphQL, and the daemon beats again;
    which services the supervisor restarted (judged after the soak, from its events)."""
    deployment = soak.deployment
    if not getattr(deployment, "supervised", False):
        fault.update(skipped="postgres_restart needs the stack (--stack)")
        return
    restarts_before = deployment.restarts()
    began = time.monotonic()
    killed_at = deployment.kill("postgres")

    def webserver_reads() -> bool:
        try:
            data = deployment.gql("{ runsOrError(limit: 1) { __typename } }")
        except Exception:  # noqa: BLE001 - the database is still coming back
            return False
        return data["runsOrError"]["__typename"] == "Runs"

    fault.update(killed_at=killed_at, restarts_before=restarts_before)
    for what, until in (
        ("postgres_ready_s", lambda: deployment.ready("postgres")),
        ("webserver_reads_instance_s", webserver_reads),
        ("daemon_heartbeat_s", lambda: deployment.daemon_beat_after(killed_at)),
    ):
        try:
            wait_for(what, until, 240)
            fault[what] = round(time.monotonic() - began, 1)
        except AssertionError:
            fault[what] = None
    fault["restarted_by"] = _restarted_by(deployment)


def fault_webserver_kill(soak: Soak, i: int, fault: dict) -> None:
    seconds = _restart_and_time(soak.deployment, "webserver", fault)
    soak.note(fault, restarted_by=_restarted_by(soak.deployment), time_to_answer_s=seconds)


def fault_api_kill(soak: Soak, i: int, fault: dict) -> None:
    seconds = _restart_and_time(soak.deployment, "api", fault)
    soak.note(fault, restarted_by=_restarted_by(soak.deployment), time_to_answer_s=seconds)


def fault_smtp_down(soak: Soak, i: int, fault: dict) -> None:
    soak.mail.stop()
    before = len(soak.mail.inbox.mails)
    fault.update(down_at_day=soak.days[i].isoformat(), mails_before=before)

    def back() -> None:
        from cbi_platform.operations.alerts import AlertBook

        book = AlertBook(soak.deployment.home / "operations.duckdb")
        queued = [e.key for e in book.undelivered()]
        soak.mail.start()
        fault.update(
            up_at_day=soak.days[min(i + 2, len(soak.days) - 1)].isoformat(),
            queued_while_down=queued,
            up_at=time.time(),
        )

    soak.pending.append((i + 2, back))


def fault_feed_outage(soak: Soak, i: int, fault: dict) -> None:
    held = soak.days[i - 1] if i > 0 else soak.days[0]
    soak.deployment.hold_data(held)
    fault.update(
        held_at=held.isoformat(), outage_days=[d.isoformat() for d in soak.days[i : i + 3]]
    )

    def release() -> None:
        soak.deployment.hold_data(None)
        fault.update(released_on=soak.days[min(i + 3, len(soak.days) - 1)].isoformat())

    soak.pending.append((i + 3, release))


def fault_bias(soak: Soak, i: int, fault: dict) -> None:
    fault.update(
        planted_from=soak.days[i].isoformat(), spec=soak.deployment.env["CBI_PLANTED_BIAS"]
    )


def fault_run_kill(soak: Soak, i: int, fault: dict) -> None:
    """Runs after the clock moved: the day's run, killed once a step process is running."""
    deployment, day = soak.deployment, soak.days[i]
    instance = deployment.instance()

    def started_step():
        runs = soak.runs_of_day(day)
        if not runs:
            return None
        run = runs[-1]  # the first run of the day
        worker = run_worker_pid(instance, run.run_id)
        if not worker:
            return None
        # A multiprocess run's steps run in their own processes; the daily refresh runs its
        # steps in the run's process (in_process executor): then a started step is enough.
        live = {k: p for k, p in step_worker_pids(instance, run.run_id).items() if alive(p)}
        started = _started_steps(instance, run.run_id)
        if live or started:
            return run, worker, live or {step: worker for step in started}
        return None

    try:
        run, worker, steps = wait_for("a step of the day's run", started_step, 180)
    except AssertionError as exc:
        fault.update(error=str(exc)[:300])
        return
    family = {worker, *steps.values(), *descendants(worker)}
    killed_at = time.time()
    os.kill(worker, signal.SIGKILL)
    fault.update(
        run_id=run.run_id,
        steps_running=sorted(steps),
        killed_pids=sorted(family),
        killed_at=killed_at,
    )
    soak.killed_runs.append({"run_id": run.run_id, "family": sorted(family), "at": killed_at})


LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
CELERY_JOB = "shared_data_job_celery"
CELERY_WORKERS = ("celery_default1", "celery_default2", "celery_gpu1")


def fault_celery_worker_kill(soak: Soak, i: int, fault: dict) -> None:
    """An engineer launches the shared assets on the Celery workers (`shared_data_job_celery`,
    through GraphQL as the launchpad does); once one of its steps runs in a worker, SIGKILL that
    worker's `celery worker` process (the service the supervisor runs), as a crashed host would.
    Its pool child, which runs the step, dies with it. The run must not hang: it fails once the
    step's task is found lost, dagster.yaml's run retry re-executes it from the failure, and the
    supervisor restarts the worker. Judged after the soak (`_judge`)."""
    deployment = soak.deployment
    if not getattr(deployment, "supervised", False):
        fault.update(skipped="celery_worker_kill needs the stack (--stack)")
        return
    instance = deployment.instance()
    launched = deployment.gql(
        LAUNCH_RUN,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": "cbi_platform",
                    "repositoryName": "__repository__",
                    "jobName": CELERY_JOB,
                },
                "runConfigData": {},
            }
        },
    )["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        fault.update(error=f"launchRun: {launched}"[:400])
        return
    run_id = launched["run"]["runId"]
    masters = {name: deployment.pid(name) for name in CELERY_WORKERS}

    def step_in_a_worker():
        records = instance.all_logs(run_id)
        # A pool child outlives its task (it takes the next one): only a step not yet finished.
        running = set(_started_steps(instance, run_id))
        for record in records:
            event = record.dagster_event
            if event is None or event.event_type_value != "STEP_START" or not event.pid:
                continue
            if event.step_key not in running or not alive(event.pid):
                continue
            try:
                parent = int(
                    Path(f"/proc/{event.pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, ValueError, IndexError):
                continue
            for name, pid in masters.items():
                if pid in (parent, event.pid):
                    return name, pid, event.pid, event.step_key
        return None

    try:
        name, master, step_pid, step = wait_for("a step in a Celery worker", step_in_a_worker, 300)
    except AssertionError as exc:
        fault.update(run_id=run_id, error=str(exc)[:300])
        return
    killed_at = deployment.kill(name)
    fault.update(
        run_id=run_id,
        worker=name,
        step=step,
        killed_pids=[master, step_pid],
        killed_at=killed_at,
    )
    soak.killed_runs.append({"run_id": run_id, "family": [master, step_pid], "at": killed_at})
    began = time.monotonic()
    try:
        deployment.wait_ready(name, 240)
        fault["worker_back_s"] = round(time.monotonic() - began, 1)
    except AssertionError as exc:
        fault["worker_back_error"] = str(exc)[:300]
    time.sleep(2)
    fault["step_process_alive_after_kill"] = alive(step_pid)


def _started_steps(instance, run_id: str) -> list[str]:
    """Steps started and not yet finished in the run."""
    started, finished = [], set()
    for record in instance.all_logs(run_id):
        kind = _event(record)
        if kind == "STEP_START":
            started.append(record.dagster_event.step_key)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
            finished.add(record.dagster_event.step_key)
    return [s for s in started if s not in finished]


WATCHED_SENSORS = ("alert_sensor", "retraining_sensor")


def sensors_ticked_after(instance, names: tuple[str, ...], after: float) -> bool:
    """Each named sensor has a finished tick that began after `after` (epoch seconds): it read
    what the monitors wrote before then."""
    from dagster._core.scheduler.instigation import InstigatorType, TickStatus

    try:
        states = {
            s.instigator_name: s
            for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        }
        for name in names:
            state = states.get(name)
            if state is None:
                return False
            ticks = instance.get_ticks(
                state.instigator_origin_id, state.selector_id, after=after, limit=5
            )
            if not any(t.status != TickStatus.STARTED and t.timestamp > after for t in ticks):
                return False
    except Exception:  # noqa: BLE001 - the instance database may be restarting
        return False
    return True


def wait_sensor_ticks(
    deployment, after: float, timeout: float, names: tuple[str, ...] = WATCHED_SENSORS
) -> float | None:
    """Seconds until the named sensors (the alert and retraining sensors) ticked after
    `after`; None on timeout."""
    began = time.monotonic()
    try:
        wait_for(
            "the operations sensors' ticks",
            lambda: sensors_ticked_after(deployment.instance(), names, after),
            timeout,
        )
    except AssertionError:
        return None
    return round(time.monotonic() - began, 1)


def _warehouse_rows(soak: Soak) -> dict:
    """Rows of the validated market table, and (symbol, date) pairs seen twice."""
    from cbi_platform.storage import read_connection

    with read_connection(soak.deployment.home / "warehouse.duckdb") as con:
        rows, pairs = con.execute(
            "select count(*), count(*) - count(distinct (symbol, date)) from cbi.market_prices"
        ).fetchone()
    return {"rows": int(rows), "duplicate_pairs": int(pairs)}


def _bad_day(kind: str):
    """A malformed delivery on the fault's day only: the refresh must fail at `market_prices`
    with a message naming the column and rows, and the warehouse keep the day before."""

    def fault_bad_data(soak: Soak, i: int, fault: dict) -> None:
        day = soak.days[i]
        entry = {"kind": kind, "day": day.isoformat()}
        soak.planted.append(entry)
        soak.write_planted()
        soak.expect_failure.add(day)
        fault.update(planted=entry, warehouse_before=_warehouse_rows(soak))

        def clear() -> None:
            soak.planted.remove(entry)
            soak.write_planted()

        soak.pending.append((i + 1, clear))

    return fault_bad_data


def fault_late_revision(soak: Soak, i: int, fault: dict) -> None:
    """From this day on the feed delivers a past close (5 business days back) 3% higher,
    published today: data, not an error; nothing may be lost or duplicated."""
    day, revised = soak.days[i], soak.days[max(i - 5, 0)]
    entry = {
        "kind": "late_revision",
        "day": day.isoformat(),
        "revised": revised.isoformat(),
        "factor": 1.03,
    }
    soak.planted.append(entry)
    soak.write_planted()
    fault.update(planted=entry)


FAULTS: dict[str, Callable[[Soak, int, dict], None]] = {
    "bad_negative_price": _bad_day("negative_price"),
    "bad_duplicate_date": _bad_day("duplicate_date"),
    "bad_missing_column": _bad_day("missing_column"),
    "late_revision": fault_late_revision,
    "daemon_kill": fault_daemon_kill,
    "webserver_kill": fault_webserver_kill,
    "api_kill": fault_api_kill,
    "smtp_down": fault_smtp_down,
    "feed_outage": fault_feed_outage,
    "bias": fault_bias,
    "run_kill": fault_run_kill,
    "postgres_restart": fault_postgres_restart,
    "celery_worker_kill": fault_celery_worker_kill,
}
AFTER_ADVANCE = {"run_kill"}  # the others act before the clock moves to their day


def parse_faults(text: str, n_days: int) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, day = item.partition("@")
        if name not in FAULTS or not day.isdigit():
            raise SystemExit(f"--faults: {item!r}: NAME@DAY with NAME in {sorted(FAULTS)}")
        if int(day) < n_days:
            out.append((name, int(day)))
    return out


# -- measurements ---------------------------------------------------------------------------------
def _percentiles(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {}
    array = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(array, 50)), 2),
        "p95": round(float(np.percentile(array, 95)), 2),
        "max": round(float(array.max()), 2),
    }


def _event(record) -> str | None:
    return record.dagster_event.event_type_value if record.dagster_event is not None else None


def measure(soak: Soak, client: ApiClient) -> dict:
    import dagster as dg
    import polars as pl

    from cbi_platform.operations.alerts import AlertBook
    from cbi_platform.serving.store import ForecastStore

    deployment = soak.deployment
    instance = deployment.instance()
    runs = instance.get_runs()
    by_status: dict[str, dict[str, int]] = {}
    for run in runs:
        by_status.setdefault(run.job_name, {}).setdefault(run.status.value, 0)
        by_status[run.job_name][run.status.value] += 1
    retried = [r.run_id for r in runs if int(r.tags.get("dagster/retry_number", "0")) > 0]

    # Writes after a run was marked failed, and processes a dead run left behind.
    late_writes, leftovers = [], []
    killed = {k["run_id"]: k for k in soak.killed_runs}
    for run in runs:
        if run.status != dg.DagsterRunStatus.FAILURE:
            continue
        records = instance.all_logs(run.run_id)
        failed_at = min(
            (r.timestamp for r in records if _event(r) in ("PIPELINE_FAILURE", "RUN_FAILURE")),
            default=None,
        )
        if failed_at is not None:
            late_writes += [
                {"run_id": run.run_id, "event": r.dagster_event.event_type_value}
                for r in records
                if r.dagster_event is not None
                and r.dagster_event.event_type_value in ("ASSET_MATERIALIZATION", "STEP_SUCCESS")
                and r.timestamp > failed_at
            ]
        left = set(processes_naming(run.run_id))
        left |= {p for p in killed.get(run.run_id, {}).get("family", []) if alive(p)}
        if left:
            leftovers.append({"run_id": run.run_id, "pids": sorted(left)})

    history = ForecastStore(deployment.home / "forecasts.duckdb").history()
    keys = ["as_of", "horizon", "role", "model_version"]
    keys = [k for k in keys if k in history.columns]
    duplicates = (
        history.group_by(keys).len().filter(pl.col("len") > 1).height if history.height else 0
    )
    served = history.filter(pl.col("role") == "served") if history.height else history
    served_days = (
        sorted({d.isoformat() for d in served["as_of"].to_list()}) if served.height else []
    )

    book = AlertBook(deployment.home / "operations.duckdb")
    alert_log = book.log()
    mails = soak.mail.inbox.mails
    ids = [m["message_id"] for m in mails]
    duplicate_mails = len(ids) - len(set(ids))

    audit_rows = _audit(deployment, soak.started_utc)
    gpu = _gpu_slots(instance)

    latencies = [t["refresh_latency_s"] for t in soak.timeline if t.get("refresh_latency_s")]
    samples = client.samples
    ok = [s for s in samples if s[2]]
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[s[4]] = statuses.get(s[4], 0) + 1
    return {
        "runs": {
            "launched": len(runs),
            "by_job_and_status": by_status,
            "succeeded": sum(r.status == dg.DagsterRunStatus.SUCCESS for r in runs),
            "failed": sum(r.status == dg.DagsterRunStatus.FAILURE for r in runs),
            "retried": len(retried),
            "days_without_success": [
                t["day"]
                for t in soak.timeline
                if not t.get("refresh_latency_s") and not t.get("failed_as_planted_s")
            ],
            "planted_bad_days_refused": [
                t["day"] for t in soak.timeline if t.get("failed_as_planted_s")
            ],
        },
        "forecast_history": {
            "rows": history.height,
            "duplicate_keys": duplicates,
            "key": keys,
            "served_days": len(served_days),
        },
        "alerts": {
            "log": alert_log.select(
                [
                    c
                    for c in ("seq", "key", "kind", "event", "as_of", "delivered", "delivery_error")
                    if c in alert_log.columns
                ]
            ).to_dicts(),
            "undelivered_at_end": len(book.undelivered()),
        },
        "mails": {
            "received": len(mails),
            "duplicate_message_ids": duplicate_mails,
            "subjects": [m["subject"] for m in mails],
        },
        "audit": audit_rows,
        "writes_after_failure": late_writes,
        "processes_left_by_dead_runs": leftovers,
        "gpu_pool": gpu,
        "api": {
            "requests": len(samples),
            "availability": round(len(ok) / len(samples), 5) if samples else None,
            "latency_s": _percentiles([s[3] for s in ok]),
            "statuses": statuses,
            "clients": client.threads,
        },
        "refresh_latency_s": _percentiles(latencies),
    }


def _audit(deployment: Deployment, since: dt.datetime) -> dict:
    """The audit log (from its snapshot): rows by action, retrains requested and promotions
    from `since` (UTC, the services' start: the training's promotions are not the soak's)."""
    from cbi_platform.release.control import AuditLog

    rows = AuditLog(deployment.home / "operations.duckdb").rows()
    if not rows.height:
        return {"rows": 0, "by_action": {}}
    soak_rows = rows.filter(rows["at"] >= since)
    counts = {str(r["action"]): r["len"] for r in soak_rows.group_by("action").len().to_dicts()}
    return {
        "rows": rows.height,
        "by_action": counts,
        "retrains_requested": counts.get("retrain_requested", 0),
        "promotions": counts.get("promote", 0) + counts.get("auto_promote", 0),
        "rollbacks": counts.get("rollback", 0),
    }


def _gpu_slots(instance) -> dict:
    try:
        info = instance.event_log_storage.get_concurrency_info("gpu")
    except Exception as exc:  # noqa: BLE001 (reported, not fatal)
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return {
        "slot_count": getattr(info, "slot_count", None),
        "claimed_slots_left": len(getattr(info, "claimed_slots", []) or []),
        "pending_steps_left": len(getattr(info, "pending_steps", []) or []),
    }


# -- reporting ------------------------------------------------------------------------------------
def plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    xs = [t["i"] for t in soak.timeline]
    ys = [t.get("refresh_latency_s") or float("nan") for t in soak.timeline]
    ax.plot(xs, ys, marker=".", lw=1, label="clock advance -> refresh success (s)")
    for fault in soak.faults:
        ax.axvline(fault["day_index"], color="tab:red", alpha=0.4, ls="--")
        ax.text(
            fault["day_index"],
            ax.get_ylim()[1] * 0.95,
            fault["name"],
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="tab:red",
        )
    ax.set_xlabel("simulated business day")
    ax.set_ylabel("seconds")
    ax.set_title("Soak: refresh latency per simulated day, planted faults dashed")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(name: str, result: dict, soak: Soak, smoke: bool) -> Path:
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))
    plot(soak, out / f"{name}.png")
    m, s = result["metrics"], result["setup"]
    label = (
        "**A SMOKE of the soak driver, not the soak**: a few simulated days and faults to show "
        "the driver works end to end; its numbers say nothing about months of operation."
        if smoke
        else "The soak: the platform as services over months of simulated business days."
    )
    lines = [
        f"# Soak{' smoke' if smoke else ''} (issue 21)",
        "",
        label,
        "",
        f"- machine: {result['machine']['machine']} ({result['machine']['cpus']} CPUs, shared "
        f"with other work: timings are noisy), {result['machine']['date']}, commit "
        f"`{result['machine']['commit']}`",
        f"- home: **reduced** — horizons {', '.join(s['horizons'])} only, reduced protocol and "
        f"zoo ({json.dumps(s['protocol'])}), simulated source; start {s['start']}, "
        f"{s['days']} business days to {s['end']}, >= {s['seconds_per_day']} s per day",
        f"- deployment: **{s['deployment']}**",
        f"- services: {', '.join(s.get('services') or [])}; SMTP (aiosmtpd, in the driver)",
        f"- operations sensors: {s['sensor_interval_s']}",
        f"- wall time: {result['wall_seconds']} s, of which setup (train the home, services "
        f"up) {result['setup_seconds']} s; **{result['seconds_per_simulated_day']} s per "
        "simulated day** (faults, refresh, sensor ticks; per-day wall times in the JSON "
        "timeline, `wall_s`)",
        "",
        "## Runs",
        f"- launched {m['runs']['launched']}, succeeded {m['runs']['succeeded']}, failed "
        f"{m['runs']['failed']}, retried (dagster/retry_number > 0) {m['runs']['retried']}",
        f"- by job and status: `{json.dumps(m['runs']['by_job_and_status'])}`",
        f"- days whose refresh did not succeed within the day timeout: "
        f"{m['runs']['days_without_success'] or 'none'}; planted bad days refused (their "
        f"refresh failed at validation, as it must): "
        f"{m['runs']['planted_bad_days_refused'] or 'none'}",
        f"- refresh latency (clock advance -> refresh run success), s: "
        f"`{json.dumps(m['refresh_latency_s'])}`",
        "",
        "## Invariants",
        f"- duplicate rows in the forecast history ({', '.join(m['forecast_history']['key'])}): "
        f"**{m['forecast_history']['duplicate_keys']}** (rows {m['forecast_history']['rows']}, "
        f"served days {m['forecast_history']['served_days']})",
        f"- duplicate mails (same Message-ID): **{m['mails']['duplicate_message_ids']}** "
        f"({m['mails']['received']} received)",
        f"- writes after a run was marked failed: **{len(m['writes_after_failure'])}**",
        f"- processes left by dead runs: **{len(m['processes_left_by_dead_runs'])}** "
        f"`{json.dumps(m['processes_left_by_dead_runs'])}`",
        f"- gpu pool at the end: `{json.dumps(m['gpu_pool'])}`",
        f"- alerts undelivered at the end: {m['alerts']['undelivered_at_end']}",
        "",
        "## API (bounded client, loopback)",
        f"- {m['api']['requests']} requests from {m['api']['clients']} threads; availability "
        f"(status < 500) **{m['api']['availability']}**; latency of answered requests, s: "
        f"`{json.dumps(m['api']['latency_s'])}`; statuses `{json.dumps(m['api']['statuses'])}`",
        "",
        "## Faults",
        "",
        "| day | fault | what happened |",
        "|---|---|---|",
    ]
    for fault in result["faults"]:
        detail = {k: v for k, v in fault.items() if k not in ("name", "day_index", "day")}
        lines.append(
            f"| {fault['day_index']} ({fault['day']}) | {fault['name']} | "
            f"`{json.dumps(detail, default=str)[:900]}` |"
        )
    lines += [
        "",
        "Bad data and the late revision are planted in the simulated feed's delivery "
        "(`CBI_PLANTED_DATA`, cbi_platform/market/planted.py), before the platform's "
        "validation reads it. The Celery worker kill launches `shared_data_job_celery` (the "
        "shared assets, each step on the stack's Celery workers) and kills the worker running "
        "one of its steps.",
        "",
        "## Alert log",
        "",
        "| seq | key | event | as_of | delivered |",
        "|---|---|---|---|---|",
        *[
            f"| {a.get('seq')} | {a.get('key')} | {a.get('event')} | {a.get('as_of')} | "
            f"{a.get('delivered')} {a.get('delivery_error') or ''} |"
            for a in m["alerts"]["log"]
        ],
        "",
        "## Audit log (retrains, promotions)",
        f"`{json.dumps(m['audit'])}`",
        "",
        f"![timeline]({name}.png)",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(lines))
    record_run(out / f"{name}.md")
    return out / f"{name}.md"


# -- main -----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--faults", default=DEFAULT_FAULTS)
    parser.add_argument("--seconds-per-day", type=float, default=3.0)
    parser.add_argument("--day-timeout", type=float, default=300.0)
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=900.0,
        help="after the last day, wait at most this long for runs still in flight (a retrain)",
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--start", default=START.isoformat())
    parser.add_argument("--name", default="soak")
    parser.add_argument("--smoke", action="store_true", help="label the results a smoke")
    parser.add_argument("--keep", action="store_true", help="keep the soak's folder")
    parser.add_argument(
        "--stack",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run on the production stack (PostgreSQL, supervisor; default) or, --no-stack, "
        "on the old harness (SQLite, the driver restarts services)",
    )
    parser.add_argument(
        "--sensor-timeout",
        type=float,
        default=90.0,
        help="after each day's refresh, wait at most this long for the alert and retraining "
        "sensors to tick before the clock moves",
    )
    args = parser.parse_args()

    days = business_days(dt.date.fromisoformat(args.start), args.days + 1)  # day 0: the start
    plan = parse_faults(args.faults, args.days + 1)
    root = stack_root() if args.stack else Path(tempfile.mkdtemp(prefix="cbi-soak-"))
    smtp_port = free_port()
    bias_day = next((d for n, d in plan if n == "bias"), None)
    extra = {
        "CBI_SMTP_HOST": "127.0.0.1",
        "CBI_SMTP_PORT": str(smtp_port),
        "CBI_SMTP_SECURITY": "none",
        "CBI_SMTP_SENDER": "cbi@localhost",
        "CBI_SMTP_RECIPIENTS": "ops@localhost",
        "CBI_PLANTED_DATA": str(root / "planted_data.json"),  # absent until a data fault
    }
    if bias_day is not None:
        extra["CBI_PLANTED_BIAS"] = f"1w:{BIAS_LOGRET}:{days[bias_day].isoformat()}"
    print(f"soak in {root}: {args.days} business days from {days[0]}, faults {plan}", flush=True)

    stopping = threading.Event()

    def unwind(signum, frame):  # SIGTERM / SIGINT: stop the services and exit
        stopping.set()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, unwind)
    signal.signal(signal.SIGINT, unwind)
    mail = MailServer(smtp_port)
    client = None
    started = time.monotonic()
    deployment = None
    try:
        if args.stack:
            deployment = prepare_stack(root, days[0], horizons=HORIZONS, extra_env=extra)
            # Redis and the Celery workers beside the services, as `make up` runs them.
            deployment.services = (*deployment.services, "redis", *CELERY_WORKERS)
            deployment.ports["redis"] = free_port()
        else:
            deployment = prepare(root, days[0], horizons=HORIZONS, extra_env=extra)
        print(f"home trained in {time.monotonic() - started:.0f} s", flush=True)
        from cbi_platform.api.keys import create_key

        key, _ = create_key(deployment.home, "soak")
        mail.start()
        if args.stack:
            deployment.start_services()  # cbi stack up: the supervisor starts them all
        else:
            for name in ("code_server", "daemon", "webserver", "api"):
                deployment.start(name)
        services_up = time.monotonic()
        print(f"services up in {services_up - started:.0f} s", flush=True)
        client = ApiClient(deployment.api_port, key, args.clients)
        client.start()
        soak = Soak(deployment, mail, days, args.day_timeout)

        for i, day in enumerate(days):
            if stopping.is_set():
                break
            for due, action in [p for p in soak.pending if p[0] == i]:
                action()
                soak.pending.remove((due, action))
            todays = [n for n, d in plan if d == i]
            for name in todays:
                if name not in AFTER_ADVANCE:
                    fault = {"name": name, "day_index": i, "day": day.isoformat()}
                    soak.faults.append(fault)
                    FAULTS[name](soak, i, fault)
            advanced = time.time()
            deployment.set_day(day)
            for name in todays:
                if name in AFTER_ADVANCE:
                    fault = {"name": name, "day_index": i, "day": day.isoformat()}
                    soak.faults.append(fault)
                    FAULTS[name](soak, i, fault)
            entry = {"i": i, "day": day.isoformat(), "advanced": advanced}
            try:
                run = wait_for(
                    f"the refresh of {day}", lambda d=day: soak.day_done(d), args.day_timeout
                )
                record = deployment.instance().get_run_record_by_id(run.run_id)
                end = record.end_time or time.time()
                retry = int(run.tags.get("dagster/retry_number", "0"))
                if record.dagster_run.is_failure:  # a planted bad day, refused as it must be
                    entry.update(
                        run_id=run.run_id,
                        failed_as_planted_s=round(end - advanced, 1),
                        warehouse_after=_warehouse_rows(soak),
                    )
                    # The failed-run sensor records the failure before the alert sensor mails.
                    wait_sensor_ticks(
                        deployment, end, args.sensor_timeout, ("failed_run_alert_sensor",)
                    )
                else:
                    entry.update(
                        run_id=run.run_id, refresh_latency_s=round(end - advanced, 1), retry=retry
                    )
                # The clock moves only once the alert and retraining sensors have read what the
                # day's monitors wrote: a condition that fires for one day is always seen.
                entry["sensor_wait_s"] = wait_sensor_ticks(
                    deployment,
                    time.time() if entry.get("failed_as_planted_s") else end,
                    args.sensor_timeout,
                )
            except AssertionError:
                entry.update(refresh_latency_s=None, timed_out=True)
            entry["wall_s"] = round(time.time() - advanced, 1)
            soak.timeline.append(entry)
            print(
                f"day {i:3d} {day}: refresh {entry.get('refresh_latency_s')} s, sensors "
                f"+{entry.get('sensor_wait_s')} s",
                flush=True,
            )
            rest = args.seconds_per_day - (time.time() - advanced)
            if rest > 0:
                time.sleep(rest)
        for _, action in list(soak.pending):
            action()  # a fault still open at the end is closed (e.g. the SMTP back up)
        soak.pending.clear()
        # A retrain still running when the days end is waited for (its result is the point of
        # the bias fault), at most --drain-timeout seconds.
        drained = _drain_runs(deployment, args.drain_timeout)
        print(f"runs in flight at the end: {drained}", flush=True)
        # Let the alert sensor deliver what was queued (two ticks from now), then measure.
        for _ in range(2):
            wait_sensor_ticks(deployment, time.time(), args.sensor_timeout)
        loop_seconds = time.monotonic() - services_up
        client.stop()
        for fault in soak.faults:
            _judge(soak, fault)
        metrics = measure(soak, client)
        result = {
            "machine": machine_stamp(),
            "setup": {
                "horizons": list(HORIZONS),
                "protocol": SMALL,
                "start": days[0].isoformat(),
                "end": days[len(soak.timeline) - 1].isoformat(),
                "days": len(soak.timeline),
                "seconds_per_day": args.seconds_per_day,
                "services": list(getattr(deployment, "services", ())),
                "day_timeout_s": args.day_timeout,
                "faults_planned": plan,
                "deployment": "on the stack (PostgreSQL, supervisor): cbi_platform.stack "
                "runs PostgreSQL (Dagster instance storage, MLflow backend), code server, "
                "webserver, daemon and API; its supervisor restarts killed services"
                if args.stack
                else "old harness (--no-stack): SQLite instance, the driver restarts killed "
                "services itself",
                "supervisor": "cbi_platform.stack supervisor" if args.stack else "the driver",
                "sensor_interval_s": "5 (CBI_SENSOR_INTERVAL_SECONDS unset, simulated clock); "
                "the driver waits for an alert and a retraining tick after each refresh",
                "bias": extra.get("CBI_PLANTED_BIAS"),
            },
            "faults": soak.faults,
            "timeline": soak.timeline,
            "metrics": metrics,
            "wall_seconds": round(time.monotonic() - started, 1),
            "setup_seconds": round(services_up - started, 1),
            "seconds_per_simulated_day": round(loop_seconds / max(len(soak.timeline), 1), 1),
        }
        path = write_results(args.name, result, soak, args.smoke)
        print(f"wrote {path}", flush=True)
        return 0
    finally:
        if client is not None:
            client.stop()
        if deployment is not None:
            deployment.stop_all()
        mail.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _drain_runs(deployment, timeout: float) -> dict:
    """Wait for every queued or running run to finish; what was in flight and how it ended."""
    import dagster as dg

    live = {
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    }
    instance = deployment.instance()
    waiting = [r.run_id for r in instance.get_runs() if r.status in live]
    deadline, began = time.monotonic() + timeout, time.monotonic()
    while time.monotonic() < deadline:
        runs = [instance.get_run_by_id(r) for r in waiting]
        if not any(r is not None and r.status in live for r in runs):
            break
        time.sleep(2)
    runs = [instance.get_run_by_id(r) for r in waiting]
    return {
        "runs": [(r.job_name, r.status.value) for r in runs if r is not None],
        "waited_s": round(time.monotonic() - began, 1),
    }


def _judge(soak: Soak, fault: dict) -> None:
    """After the soak: what each fault led to (from the instance, the alert log, the inbox)."""
    import dagster as dg

    from cbi_platform.operations.alerts import AlertBook

    i, day = fault["day_index"], soak.days[fault["day_index"]]
    entry = next((t for t in soak.timeline if t["i"] == i), {})
    fault["refresh_of_the_day"] = {
        "latency_s": entry.get("refresh_latency_s"),
        "succeeded_on_retry": entry.get("retry"),
    }
    log = AlertBook(soak.deployment.home / "operations.duckdb").log()
    if fault["name"] == "run_kill" and "run_id" in fault:
        run = soak.deployment.instance().get_run_by_id(fault["run_id"])
        fault["killed_run_status"] = run.status.value if run else None
        retries = soak.deployment.instance().get_runs(
            dg.RunsFilter(tags={"dagster/parent_run_id": fault["run_id"]})
        )
        fault["retries"] = [(r.run_id, r.status.value) for r in retries]
        fired = log.filter(log["key"].str.starts_with("failed_run")) if log.height else log
        fault["failed_run_alerts"] = fired.height
    if fault["name"] == "celery_worker_kill" and "run_id" in fault:
        instance = soak.deployment.instance()
        record = instance.get_run_record_by_id(fault["run_id"])
        fault["killed_run_status"] = record.dagster_run.status.value if record else None
        if record is not None and record.end_time:
            fault["run_ended_after_kill_s"] = round(record.end_time - fault["killed_at"], 1)
        failure = [
            r.dagster_event.message or ""
            for r in instance.all_logs(fault["run_id"])
            if _event(r) in ("PIPELINE_FAILURE", "RUN_FAILURE") and r.dagster_event is not None
        ]
        fault["failure_message"] = failure[0][:300] if failure else None
        errors = []
        for r in instance.all_logs(fault["run_id"]):
            data = getattr(r.dagster_event, "event_specific_data", None)
            error = getattr(data, "error", None)
            text = error.to_string() if error is not None else ""
            if "was lost" in text:  # CeleryTaskLost, inside the executor's DagsterSubprocessError
                line = next(x for x in text.splitlines() if "was lost" in x)
                errors.append(line.strip())
        fault["lost_task_message"] = errors[0][:400] if errors else None
        retries = instance.get_run_records(
            dg.RunsFilter(tags={"dagster/parent_run_id": fault["run_id"]})
        )
        fault["retries"] = [
            {
                "run_id": r.dagster_run.run_id,
                "status": r.dagster_run.status.value,
                "ended_after_kill_s": round(r.end_time - fault["killed_at"], 1)
                if r.end_time
                else None,
            }
            for r in retries
        ]
        fault["supervisor_reasons"] = [
            e.get("reason")
            for e in soak.deployment.events_since(fault["killed_at"])
            if e.get("event") == "restart" and e.get("service") == fault.get("worker")
        ][:1]
        fired = log.filter(log["key"] == f"failed_run/{CELERY_JOB}") if log.height else log
        fault["failed_run_alert_events"] = (
            [
                {"event": r["event"], "as_of": str(r["as_of"]), "delivered": r["delivered"]}
                for r in fired.to_dicts()
            ]
            if fired.height
            else []
        )
    if fault["name"] == "postgres_restart" and "killed_at" in fault:
        # Until the end of its day (later faults restart services too).
        end = entry["advanced"] + entry["wall_s"] + 1 if entry else None
        events = soak.deployment.events_since(fault["killed_at"], until=end)
        restarts = [e for e in events if e.get("event") == "restart"]
        fault["supervisor_restarts"] = [
            {"service": e.get("service"), "reason": e.get("reason")} for e in restarts
        ]
        fault["daemon_restarted_too"] = any(e.get("service") == "daemon" for e in restarts)
        fault["runs_continue"] = entry.get("refresh_latency_s") is not None
    if fault["name"] in ("daemon_kill", "webserver_kill", "api_kill") and getattr(
        soak.deployment, "supervised", False
    ):
        service = fault["name"].removesuffix("_kill")
        fault["supervisor_reasons"] = [
            e.get("reason")
            for e in soak.deployment.events_since(fault.get("killed_at") or 0)
            if e.get("event") == "restart" and e.get("service") == service
        ][:1]
    if fault["name"].startswith("bad_"):
        instance = soak.deployment.instance()
        runs = soak.runs_of_day(day)
        fault["runs_of_the_day"] = [r.status.value for r in runs]
        messages = []
        for run in runs:
            for record in instance.all_logs(run.run_id):
                event = record.dagster_event
                if event is not None and event.event_type_value == "STEP_FAILURE":
                    error = event.event_specific_data.error
                    while error.cause is not None:  # the platform's own message, not Dagster's
                        error = error.cause
                    messages.append(f"{event.step_key}: {error.message.strip()[:400]}")
        fault["failure_messages"] = messages[:2]
        fault["refused_after_s"] = entry.get("failed_as_planted_s")
        fault["warehouse_after_the_day"] = entry.get("warehouse_after")
        nxt = next((t for t in soak.timeline if t["i"] == i + 1), {})
        fault["next_day_refresh_latency_s"] = nxt.get("refresh_latency_s")
        if log.height:
            failed = log.filter(log["key"].str.starts_with("failed_run/daily_refresh_job"))
            fault["failed_run_alert_events"] = failed.select(
                "event", "as_of", "delivered"
            ).to_dicts()
    if fault["name"] == "late_revision":
        from cbi_platform.storage import read_connection

        with read_connection(soak.deployment.home / "warehouse.duckdb") as con:
            rows = con.execute(
                "select value, published_at from cbi.market_prices "
                "where symbol = 'ZL' and date = ?",
                [fault["planted"]["revised"]],
            ).fetchall()
        fault["revised_close_in_warehouse"] = [[v, str(p)] for v, p in rows]
        fault["warehouse_at_end"] = _warehouse_rows(soak)
    if fault["name"] == "feed_outage" and log.height:
        stale = log.filter(log["key"].str.contains("stale"))
        fault["stale_alert_events"] = stale.select("event", "as_of", "delivered").to_dicts()
    if fault["name"] == "feed_outage":
        from cbi_platform.operations.condition_log import ConditionLog

        # What the monitors judged (the alert sensor mails only what it sees on its ticks).
        judged = ConditionLog(soak.deployment.home / "operations.duckdb").frame()
        if judged.height:
            stale = judged.filter((judged["kind"] == "stale_data") & judged["firing"])
            fault["stale_condition_firing_on"] = sorted({str(d) for d in stale["as_of"]})
    if fault["name"] == "smtp_down":
        up = fault.get("up_at")
        fault["mails_after_back"] = [
            m["subject"] for m in soak.mail.inbox.mails if up and m["received"] >= up
        ]
        delivered = log.filter(log["delivered"]) if log.height else log
        fault["queued_now_delivered"] = [
            k for k in fault.get("queued_while_down", []) if k in set(delivered["key"].to_list())
        ]
    if fault["name"] == "bias" and log.height:
        after = log.filter(log["as_of"] >= day)
        fault["alerts_after"] = (
            after.filter(~after["key"].str.starts_with("failed_run"))
            .select("key", "event", "as_of")
            .to_dicts()[:20]
        )


if __name__ == "__main__":
    sys.exit(main())
