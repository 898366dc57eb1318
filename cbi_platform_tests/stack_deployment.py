"""The platform on the production stack (issue 21), for the soak benchmark (`benchmarks/soak.py`):
`cbi_platform.stack` runs PostgreSQL (the Dagster instance storage and MLflow's backend), the
gRPC code server, `dagster-webserver`, `dagster-daemon` and the forecast API under its
supervisor, which restarts a service that dies or fails its health check.

`StackDeployment` has the interface the soak driver uses from `deployment.Deployment` (the
clock, ready / wait_ready / kill / stop_all, instance, gql, log_tail, ports, env), but `kill`
only signals the service's process (pid from the stack's pidfile): bringing it back is the
supervisor's job, and `wait_ready` measures it. The home is trained as test_daemon.py's fixture
does: PostgreSQL alone first, the champion trained with MLflow on it, down, then every service.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import yaml

from cbi_platform_tests.deployment import (
    _TRAIN,
    REPO,
    SMALL,
    SPECS,
    SimulatedClock,
    free_port,
    http_ok,
    wait_for,
)

STACK_SERVICES = ("postgres", "code_server", "webserver", "daemon", "api")


def stack_root(prefix: str = "cbi-soak-") -> Path:
    """A short folder under /tmp the postgres user can enter (mode 0755): the stack's home."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    return root


@dataclass
class StackDeployment(SimulatedClock):
    root: Path  # the stack's home: PostgreSQL cluster, pidfiles, logs, instance config
    home: Path  # the platform's home (warehouse, forecast history, operations store)
    clock_file: Path
    data_clock_file: Path
    env: dict[str, str]  # the platform settings the services inherit (CBI_*)
    ports: dict[str, int]
    services: tuple[str, ...] = STACK_SERVICES
    secrets: dict[str, str] = field(default_factory=dict)
    supervised: bool = True  # killed services come back by the supervisor, not the driver
    killed: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (pid, at)
    _instance: object = None

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def web_port(self) -> int:
        return self.ports["webserver"]

    @property
    def api_port(self) -> int:
        return self.ports["api"]

    # -- the stack ------------------------------------------------------------------------------
    def _config(self):
        from cbi_platform.stack.config import load_config

        return load_config(self.root)

    def _write_config(self, services: tuple[str, ...]) -> None:
        (self.root / "stack.yaml").write_text(
            yaml.safe_dump(
                {
                    "services": list(services),
                    "ports": {k: v for k, v in self.ports.items()},
                    "cbi_home": str(self.home),
                }
            )
        )

    def up(self, services: tuple[str, ...] | None = None, timeout: float = 400) -> None:
        """`cbi stack up` with these services, the platform settings in its environment."""
        from cbi_platform.stack import control

        self._write_config(services or self.services)
        out = io.StringIO()
        with mock.patch.dict(os.environ, self.env):
            code = control.up(self.root, timeout=timeout, out=out)
        if code != 0:
            raise RuntimeError(f"cbi stack up failed:\n{out.getvalue()}\n{self.log_tail()}")

    def start_services(self) -> None:
        self.up()

    def pid(self, name: str) -> int | None:
        from cbi_platform.stack import processes
        from cbi_platform.stack.config import StackPaths

        return processes.read_pid(StackPaths(self.root).pidfile(name))

    def supervisor_state(self) -> dict:
        from cbi_platform.stack.config import StackPaths

        try:
            return json.loads(StackPaths(self.root).state.read_text()).get("services", {})
        except (FileNotFoundError, ValueError):
            return {}

    def restarts(self) -> dict[str, int]:
        """Restarts so far, per service (the supervisor's state file)."""
        return {k: int(v.get("restarts") or 0) for k, v in self.supervisor_state().items()}

    def events_since(self, since: float, until: float | None = None) -> list[dict]:
        """The stack's events (restarts with their reasons) from `since` to `until` (epoch
        seconds; None: to now)."""
        from cbi_platform.stack.config import StackPaths

        out = []
        path = StackPaths(self.root).events
        if not path.exists():
            return out
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                at = dt.datetime.fromisoformat(record["time"]).timestamp()
            except (ValueError, KeyError):
                continue
            if at >= int(since) and (until is None or at < until):  # whole seconds
                out.append(record)
        return out

    def ready(self, name: str) -> bool:
        """Up and answering; after `kill(name)`: a new process, and for the daemon a heartbeat
        written after the kill."""
        from cbi_platform.stack import health, postgres, processes
        from cbi_platform.stack.config import StackPaths

        pid = self.pid(name)
        if not pid or not processes.alive(pid):
            return False
        killed_pid, killed_at = self.killed.get(name, (None, 0.0))
        if pid == killed_pid:
            return False
        if name == "postgres":
            bindir = postgres.find_bindir()
            return postgres.is_ready(bindir, StackPaths(self.root), self.ports["postgres"])[0]
        if name == "code_server":
            return health.grpc_serving(self.ports["code_server"]).ok
        if name == "webserver":
            return http_ok(f"http://127.0.0.1:{self.web_port}/server_info")
        if name == "api":
            return http_ok(f"http://127.0.0.1:{self.api_port}/health")
        if name == "daemon":
            return self.daemon_beat_after(killed_at)
        return True

    def daemon_beat_after(self, since: float) -> bool:
        """Every daemon's newest heartbeat is after `since` (epoch seconds)."""
        try:
            beats = self.instance().get_daemon_heartbeats()
        except Exception:  # noqa: BLE001 - the database may be restarting
            return False
        return bool(beats) and all(b.timestamp > since for b in beats.values())

    def wait_ready(self, name: str, timeout: float = 180) -> None:
        wait_for(f"the {name}", lambda: self.ready(name), timeout, self.log_tail)

    def start(self, name: str, wait: bool = True, timeout: float = 180) -> None:
        """The supervisor starts services; this only waits for `name` to be ready."""
        if wait:
            self.wait_ready(name, timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Signal the service's own process (its pidfile's pid); the supervisor notices, stops
        what is left of its process group and starts it again. Returns the time of the kill."""
        pid = self.pid(name)
        if not pid:
            raise RuntimeError(f"{name} has no pidfile in {self.root}/run")
        at = time.time()
        self.killed[name] = (pid, at)
        os.kill(pid, sig)
        return at

    def stop_all(self) -> None:
        """`cbi stack down`; then nothing of the stack may be left running."""
        from cbi_platform.stack import control, processes

        pids = [self.pid(n) for n in (*self.services, "supervisor")]
        control.down(self.root, out=io.StringIO())
        left = [p for p in pids if p and processes.group_alive(p)]
        if left or (self.root / "postgres" / "data" / "postmaster.pid").exists():
            raise RuntimeError(f"stack processes left after down: {left}")

    # -- reading the deployment -----------------------------------------------------------------
    def instance(self):
        """The stack's instance (PostgreSQL; its engine opens a connection per query, so one
        instance survives a database restart)."""
        if self._instance is None:
            import dagster as dg

            from cbi_platform.stack.config import StackPaths

            self._instance = dg.DagsterInstance.from_config(str(StackPaths(self.root).dagster_home))
        return self._instance

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
        from cbi_platform.stack.secrets import redact

        text = "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
            for p in sorted(self.logs.glob("*.log"))
        )
        return redact(text, self.secrets.values())


def prepare_stack(
    root: Path,
    start_day: dt.date,
    horizons: tuple[str, ...] = ("1w",),
    extra_env: Mapping[str, str] | None = None,
    monitoring: str | None = None,
) -> StackDeployment:
    """The clock at `start_day`; PostgreSQL up alone; the home trained on the data published by
    then (in a child process, MLflow on the stack's PostgreSQL); PostgreSQL down. `root` is the
    stack's home (see `stack_root`); the services start with `start_services()`."""
    from cbi_platform.stack import control
    from cbi_platform.stack.config import load_config
    from cbi_platform.stack.secrets import DB_PASSWORD, load_secrets
    from cbi_platform.stack.services import stack_env

    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    monitoring_file = root / "monitoring.yaml"
    monitoring_file.write_text(monitoring or "{}\n")
    env = {
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
        **(extra_env or {}),
    }
    ports = {name: free_port() for name in ("postgres", "code_server", "webserver", "api")}
    deployment = StackDeployment(root, home, root / "clock", root / "data_clock", env, ports)
    deployment.set_day(start_day)
    deployment.up(("postgres",), timeout=240)
    try:
        config = load_config(root)
        secrets = load_secrets(config.paths.secrets_file)
        deployment.secrets = dict(secrets)
        done = subprocess.run(
            [sys.executable, "-c", _TRAIN, ",".join(horizons)],
            env=stack_env(config, secrets, base={**os.environ, **env}),
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"training the home failed:\n{done.stderr[-4000:]}")
    finally:
        control.down(root, out=io.StringIO())
    os.environ[DB_PASSWORD] = secrets[DB_PASSWORD]  # the instance config reads it
    return deployment


def wait_until(what: str, until, timeout: float) -> float:
    """Seconds until `until()` held (polled every half second); AssertionError on timeout."""
    began = time.monotonic()
    wait_for(what, until, timeout)
    return round(time.monotonic() - began, 1)
