"""The platform as services on a small trained home (issue 21), for the soak test and the soak
benchmark (`benchmarks/soak.py`): a gRPC code server, `dagster-daemon`, `dagster-webserver`
and the forecast API (`cbi serve`), each in its own session (its pid is its process group, so
one killpg stops it and all it started), on a SQLite instance with this checkout's dagster.yaml.

The approach of test_daemon.py's fixture, as plain helpers (no pytest), so that a benchmark can
drive it too: a reduced protocol and zoo (`SMALL`, the replay test's specs) trains a horizon in
seconds, and the simulated clock (CBI_CLOCK_FILE) says what day it is.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SPECS = REPO / "cbi_platform_tests" / "operations" / "replay_specs.yaml"
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
SERVICES = ("code_server", "daemon", "webserver", "api")

_TRAIN = """
import json, sys, dagster as dg
from cbi_platform.defs.pipeline import HORIZON, SHARED_STAGE
from cbi_platform.defs.resources import build_resources
from cbi_platform.runner import materialize
from cbi_platform.release.control import promote
from cbi_platform.release.versions import champion_version
from cbi_platform.tracking import registered_model_name
resources = build_resources()
instance = dg.DagsterInstance.ephemeral()
materialize(SHARED_STAGE, None, resources=resources, instance=instance, raise_on_error=True)
tracker = resources["mlflow"].tracker()
for horizon in sys.argv[1].split(","):
    materialize(HORIZON, horizon, resources=resources, instance=instance, raise_on_error=True)
    if champion_version(tracker, horizon) is None:
        version = tracker.latest_version(registered_model_name(horizon))
        promote(tracker, resources["operations"].audit(), horizon, version, actor="soak",
                reason="the soak starts from the version it trained", force=True)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, until: Callable[[], object], timeout: float, tail: Callable = str):
    """`until()`'s first truthy value, polled every half second; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = until()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail()}")


def http_ok(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _proc_stat(pid: int | str) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, pgrp, ...)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def group_alive(pgid: int) -> bool:
    """A live (not zombie) process is in process group `pgid`."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(entry.name)
            if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(entry.name)
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return {p for p in found if alive(p)}


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line or environment contains `text` (e.g. a run id)."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                if needle in (entry / part).read_bytes():
                    if alive(int(entry.name)):
                        found.append(int(entry.name))
                    break
            except OSError:
                continue
    return found


def run_worker_pid(instance, run_id: str) -> int | None:
    """The pid of a run's own process (the launcher logs it)."""
    for record in instance.all_logs(run_id):
        if "Started process for run" in record.message and "pid:" in record.message:
            return int(record.message.split("pid:")[1].strip(" )."))
    return None


def step_worker_pids(instance, run_id: str) -> dict[str, int]:
    """Step key -> the pid of its subprocess, for the steps the run has started."""
    out = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.event_type_value == "STEP_WORKER_STARTED":
            out[event.step_key] = int(event.event_specific_data.metadata["pid"].value)
    return out


class SimulatedClock:
    """The deployment's clock files (`clock_file`, `data_clock_file`), as the soak drives them."""

    clock_file: Path
    data_clock_file: Path

    def set_day(self, day: dt.date) -> None:
        from cbi_platform import clock

        clock.write_clock_file(self.clock_file, day)

    def hold_data(self, day: dt.date | None) -> None:
        """Hold the feed at `day` (an outage), or release it (None: data through the clock)."""
        from cbi_platform import clock

        if day is None:
            self.data_clock_file.unlink(missing_ok=True)
        else:
            clock.write_clock_file(self.data_clock_file, day)

    def day(self) -> dt.date:
        from cbi_platform import clock

        return clock.read_clock_file(self.clock_file)


@dataclass
class Deployment(SimulatedClock):
    root: Path
    home: Path
    instance_dir: Path
    logs: Path
    clock_file: Path
    data_clock_file: Path
    env: dict[str, str]
    grpc_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    # -- services -------------------------------------------------------------------------------
    def argv(self, name: str) -> list[str]:
        workspace = str(self.root / "workspace.yaml")
        return {
            "code_server": [
                str(BIN / "dagster"), "api", "grpc", "-m", "cbi_platform.definitions",
                "-h", "127.0.0.1", "-p", str(self.grpc_port),
            ],
            "daemon": [str(BIN / "dagster-daemon"), "run", "-w", workspace],
            "webserver": [
                str(BIN / "dagster-webserver"), "-w", workspace,
                "-h", "127.0.0.1", "-p", str(self.web_port),
            ],
            "api": [
                str(BIN / "cbi"), "serve", "--home", str(self.home),
                "--host", "127.0.0.1", "--port", str(self.api_port), "--log-level", "warning",
            ],
        }[name]  # fmt: skip

    def start(self, name: str, wait: bool = True, timeout: float = 180) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                self.argv(name),
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its pid is its process group
            )
        self.processes[name] = process
        if wait:
            self.wait_ready(name, timeout)
        return process

    def ready(self, name: str) -> bool:
        if name == "code_server":
            return (
                subprocess.run(
                    [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(self.grpc_port)],
                    capture_output=True,
                ).returncode
                == 0
            )
        if name == "webserver":
            return http_ok(f"http://127.0.0.1:{self.web_port}/server_info")
        if name == "api":
            return http_ok(f"http://127.0.0.1:{self.api_port}/health")
        return name in self.processes and self.processes[name].poll() is None

    def wait_ready(self, name: str, timeout: float = 180) -> None:
        wait_for(f"the {name}", lambda: self.ready(name), timeout, self.log_tail)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal `name`'s whole process group and reap it."""
        process = self.processes.pop(name, None)
        if process is None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop_all(self) -> None:
        """Every service down, its group gone (SIGKILL: nothing here needs a clean exit)."""
        for name in list(self.processes):
            process = self.processes[name]
            self.kill(name)
            wait_for(f"{name}'s processes to stop", lambda p=process: not group_alive(p.pid), 15)

    # -- reading the deployment -----------------------------------------------------------------
    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.instance_dir))

    def gql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
        if "errors" in body:
            raise RuntimeError(body["errors"])
        return body["data"]

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
            for p in sorted(self.logs.glob("*.log"))
        )


def prepare(
    root: Path,
    start_day: dt.date,
    horizons: tuple[str, ...] = ("1w",),
    extra_env: Mapping[str, str] | None = None,
    monitoring: str | None = None,
) -> Deployment:
    """Folders, the clock at `start_day`, a home trained on the data published by then (in a
    child process on the deployment's own settings), the instance's dagster.yaml (this
    checkout's, storage under `root`) migrated once before the services share it."""
    home, instance_dir, logs = root / "home", root / "instance", root / "logs"
    for folder in (home, instance_dir, logs):
        folder.mkdir(parents=True, exist_ok=True)
    monitoring_file = root / "monitoring.yaml"
    monitoring_file.write_text(monitoring or "{}\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(instance_dir),
        "CBI_HOME": str(home),
        "CBI_SOURCE": "simulated",
        "CBI_SIM_LIVE": "1",
        "CBI_CLOCK_FILE": str(root / "clock"),
        "CBI_DATA_CLOCK_FILE": str(root / "data_clock"),
        "CBI_HORIZONS": ",".join(horizons),
        "CBI_PROTOCOL_OVERRIDES": json.dumps(SMALL),
        "CBI_WORKERS": "1",
        "CBI_SPECS": str(SPECS),
        "CBI_MONITORING": str(monitoring_file),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        **(extra_env or {}),
    }
    deployment = Deployment(
        root, home, instance_dir, logs, root / "clock", root / "data_clock", env
    )
    deployment.set_day(start_day)
    done = subprocess.run(
        [sys.executable, "-c", _TRAIN, ",".join(horizons)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"training the home failed:\n{done.stderr[-4000:]}")
    config = (REPO / "dagster.yaml").read_text().split("\nload_from:")[0]
    (instance_dir / "dagster.yaml").write_text(config)
    (root / "workspace.yaml").write_text(
        "load_from:\n  - grpc_server: "
        f"{{host: 127.0.0.1, port: {deployment.grpc_port}, location_name: cbi}}\n"
    )
    subprocess.run(
        [str(BIN / "dagster"), "instance", "migrate"], env=env, check=True, capture_output=True
    )
    return deployment
