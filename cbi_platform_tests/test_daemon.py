"""The platform the way production runs it (issue 21): `cbi stack` brings up PostgreSQL (the
instance's storage and MLflow), a gRPC code server, `dagster-daemon` and `dagster-webserver`
under its supervisor, on a small home trained first against that PostgreSQL; `status` says each
is running and `down` leaves none behind.

Through them, as an engineer would:
- a partition backfill (`features` for 1w and 1m) is launched through the webserver's GraphQL
  and run by the daemon's backfill loop; its run's own process is killed with SIGKILL mid-step:
  the instance marks the run failed, no process of the dead run survives it and nothing is
  materialized under it; the backfill is then re-executed from failure and completes;
- the real cron schedule (`daily_refresh_schedule`, set to every minute here) launches the daily
  refresh, which serves a forecast from the trained champion.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import yaml

from cbi_platform_tests.deployment import SMALL
from cbi_platform_tests.operations.conftest import free_port

pytestmark = pytest.mark.slow
# The waits below are generous: on the quiet 2-core machine the whole test takes about 3
# minutes; with other work on the cores (the full suite's other worker, a benchmark) the
# re-executed backfill alone took over 180 s. They bound a hang; they do not measure speed.

REPO = Path(__file__).resolve().parent.parent
LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
REEXECUTE_BACKFILL = """mutation($params: ReexecutionParams!) {
  reexecutePartitionBackfill(reexecutionParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""


@dataclass
class Deployment:
    root: Path  # the stack's home (PostgreSQL cluster, logs, pidfiles, instance config)
    home: Path  # the platform's home (warehouse, forecast history, operations store)
    web_port: int

    def gql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
        assert "errors" not in body, body
        return body["data"]

    def instance(self):
        import dagster as dg

        from cbi_platform.stack.config import StackPaths

        return dg.DagsterInstance.from_config(str(StackPaths(self.root).dagster_home))

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            for p in sorted((self.root / "logs").glob("*.log"))
        )


def _settings(home: Path, monitoring: Path) -> dict[str, str]:
    """The deployment's platform settings (the stack adds DAGSTER_HOME, MLflow and secrets)."""
    return {
        "CBI_HOME": str(home),
        "CBI_SOURCE": "simulated",
        "CBI_SIM_LIVE": "1",
        "CBI_HORIZONS": "1w",
        "CBI_PROTOCOL_OVERRIDES": json.dumps(SMALL),
        "CBI_WORKERS": "1",
        "CBI_SPECS": str(REPO / "cbi_platform_tests" / "operations" / "replay_specs.yaml"),
        "CBI_MONITORING": str(monitoring),
        "OMP_NUM_THREADS": "1",
    }


def _train_home(env: dict[str, str]) -> None:
    """Market data and the 1w pipeline, in a child process on the deployment's own settings
    (MLflow on the stack's PostgreSQL); the version is promoted, by force when it failed the
    gates, as the replay does."""
    script = """
import dagster as dg
from cbi_platform.defs.pipeline import HORIZON, SHARED_STAGE
from cbi_platform.defs.resources import build_resources
from cbi_platform.runner import materialize
from cbi_platform.release.control import promote
from cbi_platform.release.versions import champion_version
from cbi_platform.tracking import registered_model_name
resources = build_resources()
instance = dg.DagsterInstance.ephemeral()
materialize(SHARED_STAGE, None, resources=resources, instance=instance, raise_on_error=True)
materialize(HORIZON, "1w", resources=resources, instance=instance, raise_on_error=True)
tracker = resources["mlflow"].tracker()
if champion_version(tracker, "1w") is None:
    version = tracker.latest_version(registered_model_name("1w"))
    promote(tracker, resources["operations"].audit(), "1w", version, actor="test",
            reason="the daemon test starts from the version it trained", force=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _up(root: Path, services: list[str], ports: dict[str, int], home: Path, settings) -> None:
    from cbi_platform.stack import control

    (root / "stack.yaml").write_text(
        yaml.safe_dump({"services": services, "ports": ports, "cbi_home": str(home)})
    )
    out = io.StringIO()
    with mock.patch.dict(os.environ, settings):
        code = control.up(root, timeout=240, out=out)
    assert code == 0, out.getvalue()


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    from cbi_platform.stack import control, postgres, processes
    from cbi_platform.stack.config import load_config
    from cbi_platform.stack.secrets import DB_PASSWORD, load_secrets
    from cbi_platform.stack.services import stack_env

    if postgres.find_bindir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    # A short home the postgres user can enter (pytest's tmp_path is root's, mode 0700).
    root = Path(tempfile.mkdtemp(prefix="cbi-daemon-", dir="/tmp"))
    root.chmod(0o755)
    home = root / "home"
    home.mkdir()
    monitoring = root / "monitoring.yaml"
    monitoring.write_text('refresh: {cron: "* * * * *", timezone: UTC}\n')
    settings = _settings(home, monitoring)
    ports = {name: free_port() for name in ("postgres", "code_server", "webserver")}
    services = ["postgres", "code_server", "webserver", "daemon"]
    pids: list[int] = []
    try:
        # PostgreSQL first: the champion is trained with MLflow on it, then the services start.
        _up(root, ["postgres"], ports, home, settings)
        config = load_config(root)
        secrets = load_secrets(config.paths.secrets_file)
        _train_home(stack_env(config, secrets, base={**os.environ, **settings}))
        control.down(root, out=io.StringIO())
        _up(root, services, ports, home, settings)
        pids = [
            processes.read_pid(config.paths.pidfile(name)) for name in [*services, "supervisor"]
        ]
        status = io.StringIO()
        assert control.status(root, out=status) == 0, status.getvalue()
        rows = [line.split() for line in status.getvalue().splitlines()[3:]]
        assert [r[0] for r in rows] == services and {r[1] for r in rows} == {"running"}
        assert secrets[DB_PASSWORD] not in status.getvalue()
        os.environ[DB_PASSWORD] = secrets[DB_PASSWORD]  # the instance config reads it
        yield Deployment(root, home, ports["webserver"])
    finally:
        os.environ.pop(DB_PASSWORD, None)
        control.down(root, out=io.StringIO())
        left = [pid for pid in pids if pid and processes.group_alive(pid)]
        postmaster = (root / "postgres" / "data" / "postmaster.pid").exists()
        shutil.rmtree(root, ignore_errors=True)
        assert not postmaster, "PostgreSQL still running after down"
        assert left == [], f"services still running after down: {left}"


def _wait(what: str, until: Callable[[], object], timeout: float, deployment=None):
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        value = until()
        if value:
            print(f"{time.strftime('%H:%M:%S')} {what}: {time.monotonic() - started:.1f}s")
            return value
        time.sleep(0.5)
    tail = deployment.log_tail() if deployment else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def _run_worker_pid(instance, run_id: str) -> int | None:
    for record in instance.all_logs(run_id):
        if "Started process for run" in record.message and "pid:" in record.message:
            return int(record.message.split("pid:")[1].strip(" )."))
    return None


def _step_worker(instance, run_id: str, step: str) -> int | None:
    """The pid of `step`'s subprocess once the run has started it (None before). The step
    process spends its first seconds importing the code, then runs the step: killed here, the
    run dies with a live step process that, left alone, would go on to write."""
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.step_key == step:
            if event.event_type_value == "STEP_WORKER_STARTED":
                return int(event.event_specific_data.metadata["pid"].value)
    return None


def _descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_backfill_survives_a_killed_run_and_the_schedule_refreshes(deployment):
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionStatus

    instance = deployment.instance()
    launched = deployment.gql(
        LAUNCH_BACKFILL,
        {
            "params": {
                "partitionNames": ["1w", "1m"],
                "assetSelection": [{"path": ["features"]}],
                # No automatic retry (dagster.yaml retries a dead run once): the test re-executes
                # the failed backfill itself, as an engineer would from the UI.
                "tags": [{"key": "dagster/max_retries", "value": "0"}],
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def backfill_runs() -> list:
        return instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))

    run = _wait("the backfill's run", lambda: (backfill_runs() or [None])[0], 240, deployment)
    step_pid = _wait(
        "the features step's process",
        lambda: _step_worker(instance, run.run_id, "features"),
        240,
        deployment,
    )
    worker = _run_worker_pid(instance, run.run_id)
    assert worker is not None
    family = {worker, step_pid, *_descendants(worker)}
    assert _alive(step_pid), "the step's process ended before its run could be killed"
    killed_at = time.time()
    os.kill(worker, signal.SIGKILL)

    failed = _wait(
        "the instance to mark the killed run failed",
        lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE,
        120,
        deployment,
    )
    assert failed
    # No process of the dead run outlives it, and nothing was materialized under it.
    _wait(
        f"the dead run's processes {sorted(family)} to exit",
        lambda: not [pid for pid in family if _alive(pid)],
        30,
        deployment,
    )
    time.sleep(3)  # an orphan would go on to write within seconds
    late = [
        r
        for r in instance.all_logs(run.run_id)
        if r.dagster_event is not None
        and r.dagster_event.event_type_value in ("ASSET_MATERIALIZATION", "STEP_SUCCESS")
        and r.timestamp > killed_at
    ]
    assert late == [], [r.message for r in late]

    _wait(
        "the backfill to finish as failed",
        lambda: (
            instance.get_backfill(backfill_id).status
            in (BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.FAILED)
        ),
        240,
        deployment,
    )
    again = deployment.gql(
        REEXECUTE_BACKFILL, {"params": {"parentRunId": backfill_id, "strategy": "FROM_FAILURE"}}
    )["reexecutePartitionBackfill"]
    assert again["__typename"] == "LaunchBackfillSuccess", again
    retry_id = again["backfillId"]
    _wait(
        "the re-executed backfill to complete",
        lambda: instance.get_backfill(retry_id).status == BulkActionStatus.COMPLETED_SUCCESS,
        480,
        deployment,
    )
    for partition in ("1w", "1m"):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("features"), asset_partitions=[partition]),
            limit=1,
        ).records
        assert records and records[0].run_id != run.run_id

    # The real cron schedule (every minute here) launches the daily refresh; it succeeds and
    # serves today's 1w forecast from the trained champion.
    def scheduled_success():
        records = instance.get_run_records(
            dg.RunsFilter(
                job_name="daily_refresh_job",
                tags={"dagster/schedule_name": "daily_refresh_schedule"},
                statuses=[dg.DagsterRunStatus.SUCCESS],
            ),
            limit=1,
        )
        return records[0] if records else None

    refresh = _wait("a scheduled daily refresh to succeed", scheduled_success, 300, deployment)
    served_by_refresh = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("live_forecasts")), limit=10
    ).records
    assert refresh.dagster_run.run_id in {r.run_id for r in served_by_refresh}
    from cbi_platform.serving.store import ForecastStore

    # The served 1w forecast of the data's last day, once, however many refreshes ran.
    served = ForecastStore(deployment.home / "forecasts.duckdb").history(role="served")
    assert served.height >= 1 and set(served["horizon"]) == {"1w"}
    assert served.select("as_of", "horizon").is_unique().all()
