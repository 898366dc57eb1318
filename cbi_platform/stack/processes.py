"""Processes in their own sessions, with pidfiles and append-only logs; copytruncate rotation.

A service runs in its own session (setsid): its pid is its process group, so one `killpg` stops
it with every child (a webserver's workers, runuser's postgres). Its log is opened O_APPEND, so
after the supervisor copies and truncates it the child keeps writing at the new end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path


def launch(
    argv: list[str],
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    pidfile: Path,
    user: str | None = None,
) -> subprocess.Popen:
    """Start `argv` in a new session, output appended to `log`, pid written to `pidfile`; as
    `user` (and its group, no others) when given (we are root then)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **({"user": user, "group": user, "extra_groups": []} if user else {}),
        )
    write_pid(pidfile, process.pid)
    return process


def write_pid(pidfile: Path, pid: int) -> None:
    tmp = pidfile.with_name(f".{pidfile.name}.tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, pidfile)


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    """True while `pid` runs (a zombie does not: it has exited and waits to be reaped)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state not in ("Z", "X")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A group whose only members are zombies is gone for our purposes.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def stop_group(pgid: int, timeout: float = 20.0, process: subprocess.Popen | None = None) -> bool:
    """SIGTERM the group, SIGKILL what is left after `timeout`; False when nothing ran."""

    def reap() -> None:
        if process is not None:
            process.poll()

    reap()
    if not group_alive(pgid):
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap()
        if not group_alive(pgid):
            return True
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    while group_alive(pgid):
        reap()
        time.sleep(0.05)
    return True


def describe_exit(returncode: int | None) -> str:
    """'exited with code 1', 'killed by signal SIGKILL (9)', or unknown (not our child)."""
    if returncode is None:
        return "exited (exit status unknown: not the supervisor's child)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "signal"
        return f"killed by signal {name} ({-returncode})"
    return f"exited with code {returncode}"


def rotate_log(path: Path, max_bytes: int, keep: int) -> bool:
    """Copytruncate: when `path` exceeds `max_bytes`, shift path.1..path.(keep-1) up one, copy
    path to path.1 and truncate it in place (the writer's O_APPEND descriptor stays valid).
    Returns whether it rotated. Lines written between the copy and the truncate are lost."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    if keep < 1:
        os.truncate(path, 0)
        return True
    path.with_name(f"{path.name}.{keep}").unlink(missing_ok=True)
    for index in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)
    return True
