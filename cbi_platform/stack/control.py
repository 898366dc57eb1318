"""`cbi stack up|down|status`: start the supervisor, stop everything, say how each service is.

`up` is idempotent: with the supervisor running it only reports. `down` stops the supervisor
first (so it restarts nothing), then the services in reverse start order, PostgreSQL last with
`pg_ctl stop -m fast`, and removes the pidfiles. `status` prints each service's state, pid,
port, uptime, restarts and last restart reason; every line passes through `redact`.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cbi_platform.stack import postgres, processes
from cbi_platform.stack.config import (
    REPO_ROOT,
    StackConfig,
    load_config,
    write_generated_files,
)
from cbi_platform.stack.secrets import Secrets, SecretsError, load_secrets, redact
from cbi_platform.stack.services import ServiceSpec, build_specs, stack_env

SUPERVISOR = "supervisor"


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running | starting | unhealthy | stopped | backoff
    pid: int | None
    port: int | None
    uptime_seconds: float | None
    restarts: int
    last_reason: str | None
    detail: str


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _event(config: StackConfig, event: str, **extra) -> None:
    config.paths.events.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "time": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "service": "stack",
        "event": event,
        **extra,
    }
    with open(config.paths.events, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _specs(config: StackConfig, secrets: Secrets) -> list[ServiceSpec]:
    bindir = postgres.find_bindir() if "postgres" in config.services else None
    return build_specs(config, secrets, bindir, stack_env(config, secrets))


def collect_status(config: StackConfig, secrets: Secrets) -> list[ServiceStatus]:
    """Each service now: alive from its pidfile, healthy from its own check (run here), restart
    counts from the supervisor's state file."""
    paths = config.paths
    try:
        recorded = json.loads(paths.state.read_text()).get("services", {})
    except (FileNotFoundError, ValueError):
        recorded = {}
    rows = []
    now = time.time()
    for spec in _specs(config, secrets):
        pid = processes.read_pid(paths.pidfile(spec.name))
        record = recorded.get(spec.name, {})
        alive = bool(pid) and processes.group_alive(pid)
        started = record.get("started_at") if record.get("pid") == pid else None
        if alive and started is None:
            started = paths.pidfile(spec.name).stat().st_mtime
        if not alive:
            state = "backoff" if record.get("status") == "backoff" else "stopped"
            detail = ""
        elif spec.check is None:
            state, detail = "running", "alive"
        else:
            check = spec.check()
            detail = check.detail
            in_grace = started is not None and now - started < spec.grace_seconds
            state = "running" if check.ok else ("starting" if in_grace else "unhealthy")
        rows.append(
            ServiceStatus(
                spec.name,
                state,
                pid if alive else None,
                spec.port,
                now - started if alive and started else None,
                int(record.get("restarts") or 0),
                record.get("last_reason"),
                detail,
            )
        )
    return rows


def format_status(
    config: StackConfig, rows: list[ServiceStatus], secrets: Secrets, supervisor_pid: int | None
) -> str:
    paths = config.paths
    lines = [
        f"stack home {config.home}",
        f"supervisor: {'running, pid ' + str(supervisor_pid) if supervisor_pid else 'stopped'}"
        f"; logs {paths.log_dir}; pidfiles {paths.run_dir}; events {paths.events}",
        f"{'service':<16}{'state':<11}{'pid':>8}{'port':>7}{'uptime':>9}{'restarts':>10}  "
        "last restart reason",
    ]
    for row in rows:
        lines.append(
            f"{row.name:<16}{row.state:<11}{row.pid or '-':>8}{row.port or '-':>7}"
            f"{_duration(row.uptime_seconds):>9}{row.restarts:>10}  {row.last_reason or '-'}"
        )
    return redact("\n".join(lines), secrets.values())


def _supervisor_pid(config: StackConfig) -> int | None:
    pid = processes.read_pid(config.paths.pidfile(SUPERVISOR))
    return pid if pid and processes.group_alive(pid) else None


def _log_tail(path: Path, secrets: Secrets, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return ""
    return redact("\n".join(text), secrets.values())


def up(home: Path, timeout: float = 600.0, out: TextIO = sys.stdout) -> int:
    """Start the supervisor (which starts the services) and wait until all are healthy."""
    config = load_config(home, create=True)
    paths = config.paths
    try:
        secrets = load_secrets(paths.secrets_file, generate=True)
    except SecretsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if "postgres" in config.services and postgres.find_bindir() is None:
        print("error: PostgreSQL is not installed (apt-get install -y postgresql)", file=sys.stderr)
        return 1
    write_generated_files(config)
    running = _supervisor_pid(config)
    if running:
        out.write(f"the stack is already up (supervisor pid {running})\n")
    else:
        _event(config, "up")
        processes.launch(
            [sys.executable, "-m", "cbi_platform.stack.supervisor", "--home", str(config.home)],
            stack_env(config, secrets),
            REPO_ROOT,
            paths.log(SUPERVISOR),
            paths.pidfile(SUPERVISOR),
        )
        out.write(f"starting the stack in {config.home} (supervisor log {paths.log(SUPERVISOR)})\n")
        out.flush()
    deadline = time.monotonic() + timeout
    while True:
        supervisor = _supervisor_pid(config)
        rows = collect_status(config, secrets)
        if all(row.state == "running" for row in rows) and supervisor:
            out.write(format_status(config, rows, secrets, supervisor) + "\n")
            return 0
        if supervisor is None:
            out.write(format_status(config, rows, secrets, None) + "\n")
            out.write("the supervisor exited; its log ends:\n")
            out.write(_log_tail(paths.log(SUPERVISOR), secrets) + "\n")
            return 1
        if time.monotonic() > deadline:
            out.write(format_status(config, rows, secrets, supervisor) + "\n")
            out.write(f"not every service is healthy after {timeout:.0f} s (see {paths.log_dir})\n")
            return 1
        time.sleep(2.0)


def down(home: Path, out: TextIO = sys.stdout) -> int:
    """Supervisor first, then the services in reverse start order, PostgreSQL last."""
    config = load_config(home)
    paths = config.paths
    stopped = []
    supervisor = processes.read_pid(paths.pidfile(SUPERVISOR))
    if supervisor and processes.stop_group(supervisor):
        stopped.append(SUPERVISOR)
    paths.pidfile(SUPERVISOR).unlink(missing_ok=True)
    known = list(config.service_names)
    # Pidfiles of services no longer in stack.yaml are stopped too.
    strays = sorted(
        p.stem for p in paths.run_dir.glob("*.pid") if p.stem not in known and p.stem != SUPERVISOR
    )
    order = [n for n in (*strays, *reversed(known)) if n != "postgres"]
    for name in order:
        pid = processes.read_pid(paths.pidfile(name))
        began = time.monotonic()
        if pid and processes.stop_group(pid, timeout=10):
            stopped.append(f"{name} ({time.monotonic() - began:.1f} s)")
        paths.pidfile(name).unlink(missing_ok=True)
    bindir = postgres.find_bindir()
    pg_pid = processes.read_pid(paths.pidfile("postgres"))
    pg_stopped = bindir is not None and postgres.stop(bindir, paths)
    if pg_pid and processes.stop_group(pg_pid, timeout=30):
        pg_stopped = True
    if pg_stopped:
        stopped.append("postgres")
    paths.pidfile("postgres").unlink(missing_ok=True)
    paths.state.unlink(missing_ok=True)
    if paths.events.parent.exists():
        _event(config, "down", stopped=stopped)
    out.write("stopped: " + (", ".join(stopped) or "nothing (the stack was not running)") + "\n")
    return 0


def status(home: Path, out: TextIO = sys.stdout) -> int:
    """0 when every service runs healthy, 1 otherwise (3 when the stack was never set up)."""
    config = load_config(home)
    if not config.paths.config_file.exists():
        out.write(f"no stack in {config.home} (run `make up`)\n")
        return 3
    try:
        secrets = load_secrets(config.paths.secrets_file)
    except SecretsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = collect_status(config, secrets)
    supervisor = _supervisor_pid(config)
    out.write(format_status(config, rows, secrets, supervisor) + "\n")
    return 0 if supervisor and all(row.state == "running" for row in rows) else 1


def main(action: str, home: str | Path | None = None, timeout: float = 600.0) -> int:
    from cbi_platform.stack.config import default_home

    stack_home = Path(home).resolve() if home else default_home()
    if action == "up":
        return up(stack_home, timeout=timeout)
    if action == "down":
        return down(stack_home)
    return status(stack_home)
