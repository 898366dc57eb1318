"""Real processes: a PostgreSQL cluster brought up by the stack's code, and the supervisor
restarting a service killed with SIGKILL. The full stack (PostgreSQL, code server, webserver,
daemon) is brought up, used and brought down by cbi_platform_tests/test_daemon.py."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from cbi_platform.stack import control, postgres, processes
from cbi_platform.stack.config import StackPaths
from cbi_platform.stack.secrets import DB_PASSWORD, load_secrets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stack_home():
    """A short home the postgres user can reach (pytest's tmp_path is 0700 root and long)."""
    home = Path(tempfile.mkdtemp(prefix="cbi-stack-", dir="/tmp"))
    home.chmod(0o755)
    yield home
    # Whatever a failed test left running: stop it, by its pidfiles only.
    if (home / "stack.yaml").exists():
        control.down(home, out=io.StringIO())
    for pidfile in sorted((home / "run").glob("*.pid")):
        pid = processes.read_pid(pidfile)
        if pid:
            processes.stop_group(pid, timeout=5)
    shutil.rmtree(home, ignore_errors=True)


def _wait(predicate, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def test_postgres_cluster_init_start_databases_password_login_stop(stack_home):
    import psycopg2

    bindir = postgres.find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    paths = StackPaths(stack_home)
    port = _free_port()
    password = "test-password-not-a-real-one"
    assert postgres.initdb(bindir, paths)
    assert not postgres.initdb(bindir, paths)  # idempotent
    postgres.prepare_dirs(paths)
    server = processes.launch(
        postgres.server_command(bindir, paths, port),
        dict(os.environ),
        paths.pg_data,
        paths.log("postgres"),
        paths.pidfile("postgres"),
        user=postgres.server_process_user(),
    )
    try:
        assert _wait(lambda: postgres.is_ready(bindir, paths, port)[0], 30), paths.log(
            "postgres"
        ).read_text()
        created = postgres.ensure_role_and_databases(
            paths, port, "cbi", password, ("dagster", "mlflow")
        )
        assert created == ["role cbi", "database dagster", "database mlflow"]
        assert (
            postgres.ensure_role_and_databases(paths, port, "cbi", password, ("dagster", "mlflow"))
            == []
        )
        for database in ("dagster", "mlflow"):
            connection = psycopg2.connect(
                host="127.0.0.1", port=port, user="cbi", password=password, dbname=database
            )
            with connection, connection.cursor() as cursor:
                cursor.execute("SELECT current_user, current_database()")
                assert cursor.fetchone() == ("cbi", database)
            connection.close()
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(
                host="127.0.0.1", port=port, user="cbi", password="wrong", dbname="dagster"
            )
        # The clear password never reached the server (only its SCRAM verifier).
        assert password not in paths.log("postgres").read_text()
        assert postgres.stop(bindir, paths)
        assert _wait(lambda: server.poll() is not None, 20)
        assert not processes.group_alive(server.pid)
    finally:
        if server.poll() is None:
            processes.stop_group(server.pid, timeout=5, process=server)


def test_supervisor_restarts_a_killed_service_and_records_why(stack_home):
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    (stack_home / "stack.yaml").write_text(
        yaml.safe_dump(
            {"services": [], "commands": {"sleeper": sleeper}, "check_interval_seconds": 0.5}
        )
    )
    out = io.StringIO()
    assert control.up(stack_home, timeout=60, out=out) == 0, out.getvalue()
    paths = StackPaths(stack_home)
    supervisor = processes.read_pid(paths.pidfile("supervisor"))
    first = processes.read_pid(paths.pidfile("sleeper"))
    assert processes.group_alive(supervisor) and processes.group_alive(first)
    assert "already up" in _up_again(stack_home)  # idempotent: nothing new started
    assert processes.read_pid(paths.pidfile("supervisor")) == supervisor

    os.kill(first, signal.SIGKILL)
    second = _wait(
        lambda: (p := processes.read_pid(paths.pidfile("sleeper"))) != first and p, timeout=15
    )
    assert second and processes.group_alive(second)
    events = [json.loads(line) for line in paths.events.read_text().splitlines()]
    restart = [e for e in events if e["event"] == "restart"]
    assert restart[-1]["service"] == "sleeper"
    assert restart[-1]["reason"] == "died: killed by signal SIGKILL (9)"
    assert "sleeper: restart (died: killed by signal SIGKILL (9))" in (
        paths.log("supervisor").read_text()
    )
    status_out = io.StringIO()
    _wait(lambda: json.loads(paths.state.read_text())["services"]["sleeper"]["restarts"], 5)
    control.status(stack_home, out=status_out)
    row = next(line for line in status_out.getvalue().splitlines() if line.startswith("sleeper"))
    assert "running" in row and " 1  died: killed by signal SIGKILL (9)" in row
    secrets = load_secrets(paths.secrets_file)
    assert secrets[DB_PASSWORD] not in status_out.getvalue()
    assert secrets[DB_PASSWORD] not in paths.log("supervisor").read_text()

    control.down(stack_home, out=io.StringIO())
    assert not processes.group_alive(supervisor)
    assert not processes.group_alive(second)
    assert not list(paths.run_dir.glob("*.pid"))


def _up_again(home: Path) -> str:
    out = io.StringIO()
    assert control.up(home, timeout=30, out=out) == 0
    return out.getvalue()
