"""Processes for test_lifeline: a parent with a lifeline child, a package-style training pool,
and a Dagster run worker (`python -m cbi_platform_tests.lifeline_helpers MODE ...`); and the
/proc readings the tests judge them by (psutil is not installed)."""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import ctypes.util
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

PR_GET_PDEATHSIG = 2


def armed_signal() -> int:
    """The signal this process gets when its parent dies (0: none), read back from the kernel."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    signal = ctypes.c_int(0)
    libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(signal), 0, 0, 0)
    return signal.value


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running (a zombie is dead: it only waits for a parent to reap it)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    """Every living process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] not in ("Z", "X"):
                children.setdefault(stat[1], []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_for(predicate, timeout: float, step: float = 0.05) -> float | None:
    """Seconds until `predicate()` held, None if it did not within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    return None


def sleeping_task(folder: str, seconds: float) -> int:
    """A stand-in for a long fit: says it started (with its armed signal), sleeps, then writes
    the marker that a surviving orphan would leave."""
    here = Path(folder)
    (here / f"worker-{os.getpid()}").write_text(str(armed_signal()))
    time.sleep(seconds)
    (here / f"done-{os.getpid()}").write_text("written")
    return os.getpid()


def run_package_pool(folder: str, seconds: float, n_workers: int = 2) -> None:
    """A pool built like walk_forward.execute's: spawn context, the package's initializer."""
    from cbi_platform.evaluation.walk_forward import SINGLE_THREAD_ENV, _init_worker

    pool = cf.ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(SINGLE_THREAD_ENV, {}),
    )
    try:
        futures = [pool.submit(sleeping_task, folder, seconds) for _ in range(n_workers)]
        for future in futures:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _child(parent_pid: int, watchdog: bool) -> None:
    import cbi_platform.lifeline as lifeline

    if watchdog:
        lifeline._set_pdeathsig = lambda: False
    print(lifeline.die_with_parent(parent_pid, poll_seconds=0.2), flush=True)
    time.sleep(60)


def _parent(watchdog: bool) -> None:
    command = [sys.executable, "-m", "cbi_platform_tests.lifeline_helpers", "child"]
    child = subprocess.Popen([*command, str(os.getpid()), *(["watchdog"] if watchdog else [])])
    print(child.pid, flush=True)
    child.wait(timeout=60)  # a child that failed to start ends this process too


def _run_job(folder: str, seconds: float) -> None:
    import dagster as dg

    from cbi_platform_tests.lifeline_job import lifeline_job

    home = Path(folder) / "instance"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.execute_job(
            dg.reconstructable(lifeline_job),
            instance,
            run_config={"ops": {"slow_step": {"config": {"folder": folder, "seconds": seconds}}}},
        )
        (Path(folder) / f"run-{result.success}").write_text(result.run_id)


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "child":
        _child(int(rest[0]), watchdog=rest[1:] == ["watchdog"])
    elif mode == "parent":
        _parent(watchdog=rest == ["watchdog"])
    elif mode == "pool":
        run_package_pool(rest[0], float(rest[1]))
    elif mode == "job":
        _run_job(rest[0], float(rest[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")
