"""The supervisor: keeps every service alive and healthy, and says why it restarted one.

It runs in its own session with a pidfile (`run/supervisor.pid`), starts the services in order
(PostgreSQL first: then the role, the databases and `dagster instance migrate`), adopts those
already running from their pidfiles, and then every few seconds: reaps a service that died,
checks the health of the others, restarts one that died or failed its check several times in a
row (backing off when one keeps failing), rotates the logs and writes `run/state.json`. Each
restart is a line in its log and in `events.jsonl`: which service, and why (exit code, signal
or the failed check). SIGTERM stops the supervisor only; `cbi stack down` stops the services.

Usage: `python -m cbi_platform.stack.supervisor --home H` (started by `cbi stack up`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from cbi_platform.stack import processes
from cbi_platform.stack.config import StackConfig
from cbi_platform.stack.health import Health
from cbi_platform.stack.secrets import Secrets, redact
from cbi_platform.stack.services import ServiceSpec


@dataclass(frozen=True)
class Policy:
    failures_before_restart: int = 3  # consecutive failed health checks
    backoff_after: int = 3  # restarts inside the window before waiting between restarts
    backoff_window_seconds: float = 300.0
    max_backoff_seconds: float = 60.0


@dataclass(frozen=True)
class Decision:
    action: str  # "ok" | "starting" | "unhealthy" | "restart"
    reason: str | None = None


def decide(
    alive: bool,
    exit_description: str | None,
    check: Health | None,
    failures_so_far: int,
    seconds_since_start: float,
    grace_seconds: float,
    policy: Policy = Policy(),
) -> Decision:
    """What to do with one service after one observation (pure: the supervisor's rules)."""
    if not alive:
        return Decision("restart", f"died: {exit_description or 'exit status unknown'}")
    if check is None or check.ok:
        return Decision("ok")
    if seconds_since_start < grace_seconds:
        return Decision("starting", check.detail)
    failures = failures_so_far + 1
    if failures >= policy.failures_before_restart:
        return Decision(
            "restart", f"failed its health check {failures} times in a row: {check.detail}"
        )
    return Decision("unhealthy", check.detail)


def backoff_seconds(restart_times: list[float], now: float, policy: Policy = Policy()) -> float:
    """0 for the first few restarts in the window, then 2, 4, 8... up to the maximum."""
    recent = [t for t in restart_times if now - t <= policy.backoff_window_seconds]
    if len(recent) < policy.backoff_after:
        return 0.0
    return float(min(policy.max_backoff_seconds, 2 ** (len(recent) - policy.backoff_after + 1)))


@dataclass
class ServiceState:
    name: str
    pid: int | None = None
    process: subprocess.Popen | None = None  # None when adopted (not our child)
    started_at: float = 0.0  # wall clock
    status: str = "starting"
    health_failures: int = 0
    last_check_at: float = 0.0
    last_health: str = ""
    restart_times: list[float] = field(default_factory=list)
    restarts: int = 0
    last_reason: str | None = None
    restart_due_at: float | None = None

    def record(self) -> dict:
        return {
            "pid": self.pid,
            "status": self.status,
            "started_at": self.started_at,
            "restarts": self.restarts,
            "last_reason": self.last_reason,
            "last_health": self.last_health,
        }


class Supervisor:
    def __init__(
        self,
        config: StackConfig,
        specs: list[ServiceSpec],
        secrets: Secrets,
        policy: Policy = Policy(),
        before_start: Callable[[], None] | None = None,
        after_postgres: Callable[[Callable[[str], None]], None] | None = None,
        out: TextIO = sys.stdout,
    ):
        self.config = config
        self.paths = config.paths
        self.specs = specs
        self.secrets = secrets
        self.policy = policy
        self.before_start = before_start
        self.after_postgres = after_postgres
        self.out = out
        self.stopping = False
        self.states = {spec.name: ServiceState(spec.name) for spec in specs}
        self._carry_over_restarts()

    # ---- records ---------------------------------------------------------------------------
    def log(self, message: str) -> None:
        stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        self.out.write(f"{stamp} supervisor: {redact(message, self.secrets.values())}\n")
        self.out.flush()

    def event(self, service: str, event: str, reason: str | None = None, **extra) -> None:
        record = {
            "time": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "service": service,
            "event": event,
            "reason": reason,
            **extra,
        }
        line = redact(json.dumps(record), self.secrets.values())
        with open(self.paths.events, "a") as handle:
            handle.write(line + "\n")
        self.log(f"{service}: {event}" + (f" ({reason})" if reason else ""))

    def _carry_over_restarts(self) -> None:
        """A supervisor started again (stack still up) keeps the restart counts."""
        try:
            previous = json.loads(self.paths.state.read_text()).get("services", {})
        except (FileNotFoundError, ValueError):
            return
        for name, state in self.states.items():
            if name in previous:
                state.restarts = int(previous[name].get("restarts") or 0)
                state.last_reason = previous[name].get("last_reason")

    def write_state(self) -> None:
        payload = {
            "supervisor_pid": os.getpid(),
            "updated_at": time.time(),
            "services": {name: state.record() for name, state in self.states.items()},
        }
        tmp = self.paths.state.with_name(".state.json.tmp")
        tmp.write_text(redact(json.dumps(payload, indent=1), self.secrets.values()))
        os.replace(tmp, self.paths.state)

    # ---- processes -------------------------------------------------------------------------
    def start(self, spec: ServiceSpec) -> None:
        state = self.states[spec.name]
        state.process = processes.launch(
            spec.argv,
            spec.env,
            spec.cwd,
            self.paths.log(spec.name),
            self.paths.pidfile(spec.name),
            user=spec.user,
        )
        state.pid = state.process.pid
        state.started_at = time.time()
        state.status = "starting"
        state.health_failures = 0
        state.last_check_at = 0.0
        self.event(spec.name, "started", pid=state.pid)

    def adopt_or_start(self, spec: ServiceSpec) -> None:
        pid = processes.read_pid(self.paths.pidfile(spec.name))
        if pid and processes.group_alive(pid):
            state = self.states[spec.name]
            state.pid, state.process = pid, None
            state.started_at = self.paths.pidfile(spec.name).stat().st_mtime
            self.event(spec.name, "adopted", pid=pid)
        else:
            self.start(spec)

    def observe(self, state: ServiceState) -> tuple[bool, str | None]:
        if state.process is not None:
            code = state.process.poll()
            if code is None:
                return True, None
            return False, processes.describe_exit(code)
        if state.pid and processes.group_alive(state.pid):
            return True, None
        return False, processes.describe_exit(None)

    def wait_healthy(self, spec: ServiceSpec) -> None:
        state = self.states[spec.name]
        deadline = time.monotonic() + spec.grace_seconds
        while not self.stopping:
            alive, exit_description = self.observe(state)
            if not alive:
                raise RuntimeError(f"{spec.name} {exit_description} while starting")
            check = spec.check() if spec.check else Health(True, "alive")
            state.last_health = check.detail
            if check.ok:
                state.status = "running"
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{spec.name} not healthy after {spec.grace_seconds:.0f} s: {check.detail}"
                )
            time.sleep(0.5)

    def bootstrap(self) -> None:
        if self.before_start is not None:
            self.before_start()
        for spec in self.specs:
            if self.stopping:
                return
            self.adopt_or_start(spec)
            if spec.wait_healthy:
                self.wait_healthy(spec)
            if spec.name == "postgres" and self.after_postgres is not None:
                self.after_postgres(self.log)
            self.write_state()

    def tick(self) -> None:
        now = time.time()
        for spec in self.specs:
            state = self.states[spec.name]
            if state.restart_due_at is not None:
                if now >= state.restart_due_at:
                    state.restart_due_at = None
                    self.start(spec)
                continue
            alive, exit_description = self.observe(state)
            check = None
            if (
                alive
                and spec.check is not None
                and now - state.last_check_at >= self.config.health_interval_seconds
            ):
                check = spec.check()
                state.last_check_at = now
                state.last_health = check.detail
            elif alive:
                continue
            decision = decide(
                alive,
                exit_description,
                check,
                state.health_failures,
                now - state.started_at,
                spec.grace_seconds,
                self.policy,
            )
            if decision.action == "ok":
                state.health_failures, state.status = 0, "running"
            elif decision.action == "starting":
                state.status = "starting"
            elif decision.action == "unhealthy":
                state.health_failures += 1
                state.status = "unhealthy"
            else:
                self.restart(spec, state, decision.reason or "", alive, now)
        for log in sorted(self.paths.log_dir.glob("*.log")):
            if processes.rotate_log(log, self.config.log_max_bytes, self.config.log_keep):
                self.log(f"rotated {log.name}")
        self.write_state()

    def restart(
        self, spec: ServiceSpec, state: ServiceState, reason: str, alive: bool, now: float
    ) -> None:
        if state.pid:  # what is left of its process group too, when the leader died
            processes.stop_group(state.pid, timeout=15, process=state.process)
        state.restart_times.append(now)
        state.restarts += 1
        state.last_reason = reason
        delay = backoff_seconds(state.restart_times, now, self.policy)
        self.event(spec.name, "restart", reason, pid=state.pid, delay_seconds=delay)
        if delay:
            state.status = "backoff"
            state.restart_due_at = now + delay
        else:
            self.start(spec)

    def run(self) -> int:
        def _stop(signum, _frame):
            self.stopping = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        processes.write_pid(self.paths.pidfile("supervisor"), os.getpid())
        self.log(f"supervising {', '.join(s.name for s in self.specs)} (pid {os.getpid()})")
        try:
            self.bootstrap()
        except Exception as exc:  # noqa: BLE001 - said in the log, then exit 1
            self.event("supervisor", "bootstrap_failed", f"{type(exc).__name__}: {exc}")
            return 1
        while not self.stopping:
            self.tick()
            deadline = time.monotonic() + self.config.check_interval_seconds
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.1)
        self.log("stopping (the services keep running: `cbi stack down` stops them)")
        return 0


def dagster_migrate(env: dict[str, str], secrets: Secrets, log: Callable[[str], None]) -> None:
    """`dagster instance migrate` on the stack's instance (idempotent)."""
    from cbi_platform.stack.services import _bin

    result = subprocess.run(
        [_bin("dagster"), "instance", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    output = (result.stdout + result.stderr).strip().splitlines()
    for line in output[-5:]:
        log(f"dagster instance migrate: {line}")
    if result.returncode != 0:
        raise RuntimeError(f"dagster instance migrate failed ({result.returncode})")


def main(argv: list[str] | None = None) -> int:
    from cbi_platform.stack import postgres
    from cbi_platform.stack.config import ACCOUNTS_DB, DAGSTER_DB, MLFLOW_DB, load_config
    from cbi_platform.stack.secrets import DB_PASSWORD, load_secrets
    from cbi_platform.stack.services import build_specs

    parser = argparse.ArgumentParser(prog="cbi_platform.stack.supervisor", description=__doc__)
    parser.add_argument("--home", type=Path, required=True)
    args = parser.parse_args(argv)
    config = load_config(args.home)
    paths = config.paths
    secrets = load_secrets(paths.secrets_file, os.environ)
    env = dict(os.environ)
    bindir = postgres.find_bindir() if "postgres" in config.services else None
    specs = build_specs(config, secrets, bindir, env)

    def before_start() -> None:
        if bindir is not None:
            if postgres.initdb(bindir, paths):
                supervisor.log(f"initialised a PostgreSQL cluster in {paths.pg_data}")
            postgres.prepare_dirs(paths)

    def after_postgres(log: Callable[[str], None]) -> None:
        databases = (DAGSTER_DB, MLFLOW_DB, ACCOUNTS_DB)
        created = postgres.ensure_role_and_databases(
            paths, config.ports["postgres"], config.db_user, secrets[DB_PASSWORD], databases
        )
        log(
            "postgres: created " + ", ".join(created)
            if created
            else "postgres: role and databases present"
        )
        if any(name in config.services for name in ("code_server", "webserver", "daemon")):
            dagster_migrate(env, secrets, log)

    supervisor = Supervisor(
        config, specs, secrets, before_start=before_start, after_postgres=after_postgres
    )
    return supervisor.run()


if __name__ == "__main__":
    raise SystemExit(main())
