"""The platform the way production runs it (issue 21): a real code server, `dagster-daemon` and
`dagster-webserver` on a small trained home, each in its own process group.

Through them, as an engineer would:
- a partition backfill (`features` for 1w and 1m) is launched through the webserver's GraphQL
  and run by the daemon's backfill loop; its run's own process is killed with SIGKILL mid-step:
  the instance marks the run failed, no process of the dead run survives it and nothing is
  materialized under it; the backfill is then re-executed from failure and completes;
- the real cron schedule (`daily_refresh_schedule`, set to every minute here) launches the daily
  refresh, which serves a forecast from the trained champion.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cbi_platform_tests.operations.conftest import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# A reduced protocol and zoo (the replay test's): the daemon's runs take seconds, not minutes.
SMALL = dict(
    n_scored=6,
    span=110,
    end_offset=5,
    n_development=8,
    n_calibration=10,
    min_first_origin_row=100,
    min_history=5,
    regime_folds=2,
    model_kinds=["benchmark", "tree"],
)
LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
REEXECUTE_BACKFILL = """mutation($params: ReexecutionParams!) {
  reexecutePartitionBackfill(reexecutionParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""


@dataclass
class Deployment:
    home: Path
    instance_dir: Path
    web_port: int
    services: dict[str, subprocess.Popen]  # each its own process group
    logs: Path

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

        return dg.DagsterInstance.from_config(str(self.instance_dir))

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            for p in sorted(self.logs.glob("*.log"))
        )


def _env(home: Path, instance_dir: Path, monitoring: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DAGSTER_HOME": str(instance_dir),
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
    """Market data and the 1w pipeline, in a child process on the deployment's own settings (a
    champion is registered and promoted, or promoted by force as the replay does)."""
    script = """
import json, dagster as dg
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


def _start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen:
    with open(logs / f"{name}.log", "wb") as log:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its pid is its process group: one killpg stops it all
        )


def _group_alive(pgid: int) -> bool:
    """A live (not zombie) process is in process group `pgid` (from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait(what: str, until: Callable[[], object], timeout: float, deployment=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = until()
        if value:
            return value
        time.sleep(0.5)
    tail = deployment.log_tail() if deployment else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("daemon")
    home, instance_dir, logs = root / "home", root / "instance", root / "logs"
    for folder in (home, instance_dir, logs):
        folder.mkdir()
    monitoring = root / "monitoring.yaml"
    monitoring.write_text('refresh: {cron: "* * * * *", timezone: UTC}\n')
    config = (REPO / "dagster.yaml").read_text().split("\nload_from:")[0]
    # Retries stay off here: the test re-executes the failed backfill itself.
    (instance_dir / "dagster.yaml").write_text(config)
    env = _env(home, instance_dir, monitoring)
    _train_home(env)
    grpc_port, web_port = free_port(), free_port()
    workspace = root / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - grpc_server: {{host: 127.0.0.1, port: {grpc_port}, location_name: cbi}}\n"
    )
    # One writer initializes the instance's storage before the services share it.
    subprocess.run(
        [str(BIN / "dagster"), "instance", "migrate"], env=env, check=True, capture_output=True
    )
    services: dict[str, subprocess.Popen] = {}
    deployment = Deployment(home, instance_dir, web_port, services, logs)
    try:
        services["code_server"] = _start(
            "code_server",
            [
                str(BIN / "dagster"),
                "api",
                "grpc",
                "-m",
                "cbi_platform.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                str(grpc_port),
            ],
            env,
            logs,
        )
        _wait(
            "the code server",
            lambda: (
                subprocess.run(
                    [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(grpc_port)],
                    capture_output=True,
                ).returncode
                == 0
            ),
            120,
            deployment,
        )
        services["daemon"] = _start(
            "daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, logs
        )
        services["webserver"] = _start(
            "webserver",
            [
                str(BIN / "dagster-webserver"),
                "-w",
                str(workspace),
                "-h",
                "127.0.0.1",
                "-p",
                str(web_port),
            ],
            env,
            logs,
        )
        _wait(
            "the webserver",
            lambda: _http_ok(f"http://127.0.0.1:{web_port}/server_info"),
            120,
            deployment,
        )
        yield deployment
    finally:
        for process in services.values():
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)
        for name, process in services.items():
            _wait(f"{name}'s processes to stop", lambda p=process: not _group_alive(p.pid), 10)


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
        {"params": {"partitionNames": ["1w", "1m"], "assetSelection": [{"path": ["features"]}]}},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def backfill_runs() -> list:
        return instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))

    run = _wait("the backfill's run", lambda: (backfill_runs() or [None])[0], 90, deployment)
    step_pid = _wait(
        "the features step's process",
        lambda: _step_worker(instance, run.run_id, "features"),
        120,
        deployment,
    )
    worker = _run_worker_pid(instance, run.run_id)
    assert worker is not None
    family = {worker, step_pid, *_descendants(worker)}
    killed_at = time.time()
    os.kill(worker, signal.SIGKILL)
    assert _alive(step_pid), "the step's process ended before its run was killed"

    failed = _wait(
        "the instance to mark the killed run failed",
        lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE,
        60,
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
        90,
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
        180,
        deployment,
    )
    for partition in ("1w", "1m"):
        event = instance.get_latest_materialization_event(
            dg.AssetKey("features"), partition=partition
        )
        assert event is not None and event.run_id != run.run_id

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

    refresh = _wait("a scheduled daily refresh to succeed", scheduled_success, 150, deployment)
    from cbi_platform.serving.store import ForecastStore

    history = ForecastStore(deployment.home / "forecasts.duckdb").history()
    served = history.filter(history["role"] == "served")
    assert served.height >= 1 and set(served["horizon"]) == {"1w"}
    created = refresh.create_timestamp.astimezone(dt.UTC).replace(tzinfo=None)
    assert served["created_at"].max() >= created - dt.timedelta(seconds=1)
