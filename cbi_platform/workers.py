"""Local distributed services: a Redis broker and Celery workers for the celery executor.

Each service runs in its own session (setsid), so its pid is its process group and one
`killpg` stops it with every child (the prefork pool). Pidfiles live in one folder, by default
`$DAGSTER_HOME/services/`. Usage: `python -m cbi_platform.workers up|down [--dir D] [--port P]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PORT = 6379
DEFAULT_QUEUE = "dagster"  # dagster-celery's default queue
GPU_QUEUE = "gpu"
REPO_ROOT = Path(__file__).resolve().parent.parent


def broker_url(port: int = DEFAULT_PORT) -> str:
    return f"redis://127.0.0.1:{port}/0"


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


def redis_command(services_dir: Path, port: int = DEFAULT_PORT) -> list[str]:
    """redis-server on 127.0.0.1:port, no persistence, in the foreground (logs to stdout)."""
    return [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(services_dir),
        "--save",
        "",
        "--appendonly",
        "no",
    ]


def start_redis(services_dir: Path, port: int = DEFAULT_PORT, timeout: float = 10.0) -> int:
    """Daemonized redis-server on 127.0.0.1:port, no persistence; returns its pid (= its pgid:
    redis calls setsid when it daemonizes)."""
    services_dir.mkdir(parents=True, exist_ok=True)
    pidfile = services_dir / "redis.pid"
    pidfile.unlink(missing_ok=True)
    subprocess.run(
        [
            *redis_command(services_dir, port),
            "--daemonize",
            "yes",
            "--pidfile",
            str(pidfile),
            "--logfile",
            str(services_dir / "redis.log"),
        ],
        check=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not write {pidfile}; see {services_dir}/redis.log")


def _write_celery_config(services_dir: Path, broker: str) -> Path:
    """The module dagster_celery.app reads on workers (`dagster_celery_config`).

    `task_track_started`: a worker stores STARTED, with its hostname and pid, in the result
    backend when a step begins; the executor reads it there to tell a task that waits in the
    queue (PENDING) from one whose worker died mid-step (cbi_platform/celery_watch.py). Only the
    workers need it: the executor reads states from the backend."""
    config_dir = services_dir / "celery_config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "dagster_celery_config.py").write_text(
        f"broker_url = {broker!r}\nresult_backend = {broker!r}\nworker_prefetch_multiplier = 1\n"
        "task_track_started = True\n"
    )
    return config_dir


def worker_command(
    services_dir: Path, name: str, queue: str, broker: str, concurrency: int = 1
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of one Celery worker (dagster_celery.app) on one queue."""
    config_dir = _write_celery_config(services_dir, broker)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(config_dir), str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "dagster_celery.app",
        "worker",
        "-Q",
        queue,
        "-c",
        str(concurrency),
        "--prefetch-multiplier=1",
        "-O",
        "fair",
        "-n",
        f"{name}@%h",
        "--loglevel",
        "INFO",
    ]
    return argv, env


def start_worker(
    services_dir: Path, name: str, queue: str, broker: str, concurrency: int = 1
) -> int:
    """One Celery worker (dagster_celery.app) on one queue, in its own session; returns its pid."""
    argv, env = worker_command(services_dir, name, queue, broker, concurrency)
    log = open(services_dir / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
    process = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    (services_dir / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def wait_for_workers(broker: str, names: list[str], timeout: float = 60.0) -> None:
    """Block until every named worker answers a ping (so no step waits on a booting worker)."""
    from celery import Celery  # heavy: delayed

    app = Celery("cbi-ping", broker=broker, backend=broker)
    deadline = time.monotonic() + timeout
    wanted = set(names)
    seen: set[str] = set()
    while time.monotonic() < deadline:
        for reply in app.control.ping(timeout=0.5) or []:
            seen.update(host.split("@")[0] for host in reply)
        if wanted <= seen:
            return
        time.sleep(0.2)
    raise TimeoutError(f"workers {sorted(wanted - seen)} did not answer within {timeout} s")


def start_all(
    services_dir: Path,
    port: int = DEFAULT_PORT,
    default_workers: int = 2,
    broker: str | None = None,
    wait: bool = True,
) -> dict[str, int]:
    """Redis, `default_workers` workers on the default queue and one on the gpu queue."""
    broker = broker or broker_url(port)
    pids = {"redis": start_redis(services_dir, port)}
    names = [f"default{i + 1}" for i in range(default_workers)]
    for name in names:
        pids[name] = start_worker(services_dir, name, DEFAULT_QUEUE, broker)
    pids["gpu1"] = start_worker(services_dir, "gpu1", GPU_QUEUE, broker)
    if wait:
        wait_for_workers(broker, [*names, "gpu1"])
    return pids


def _group_alive(pgid: int) -> bool:
    try:
        os.waitpid(pgid, os.WNOHANG)  # reap our own child, if it is one
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_all(services_dir: Path, timeout: float = 20.0) -> list[str]:
    """SIGTERM every service's process group (workers first, then redis), SIGKILL what is left
    after `timeout`; removes the pidfiles. Returns the names stopped."""
    pidfiles = sorted(services_dir.glob("*.pid"), key=lambda p: p.stem == "redis")
    stopped = []
    for pidfile in pidfiles:
        try:
            pgid = int(pidfile.read_text().strip())
        except ValueError:
            pidfile.unlink(missing_ok=True)
            continue
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)
                while _group_alive(pgid):
                    time.sleep(0.05)
            stopped.append(pidfile.stem)
        pidfile.unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cbi_platform.workers", description=__doc__)
    parser.add_argument("action", choices=["up", "down"])
    home = Path(os.environ.get("DAGSTER_HOME", REPO_ROOT / ".cbi_home"))
    parser.add_argument("--dir", type=Path, default=home / "services")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--default-workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.action == "down":
        print("stopped:", ", ".join(stop_all(args.dir)) or "nothing")
        return 0
    if not redis_available():
        print("redis-server is not installed (apt-get install -y redis-server)", file=sys.stderr)
        return 1
    running = [p.stem for p in args.dir.glob("*.pid") if _group_alive(int(p.read_text() or 0))]
    if running:
        print(f"already running: {', '.join(running)} (make workers-down)", file=sys.stderr)
        return 1
    broker = os.environ.get("CBI_CELERY_BROKER", broker_url(args.port))
    pids = start_all(args.dir, args.port, args.default_workers, broker)
    print(f"broker {broker}; " + ", ".join(f"{k} pid {v}" for k, v in pids.items()))
    print(f"logs and pidfiles in {args.dir}; stop with `make workers-down`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
