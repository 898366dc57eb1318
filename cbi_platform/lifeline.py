"""A child process must not outlive the process that started it (issue 21).

A run worker killed with SIGKILL cannot tell its step processes to stop, and a step process
killed so cannot tell its training workers: they go on as orphans and write results under a
run already marked failed. `die_with_parent()`, called first thing in every child we start
(pool initializers, the scoring process, Dagster's step processes), makes the child die with
its parent instead.

Mechanism. On Linux: `prctl(PR_SET_PDEATHSIG, SIGKILL)`. The kernel sends the signal, so it
works even while the child is stuck in C code holding the GIL (a tree or network fit), where
a Python thread could not run. Two caveats, both met by how this package starts children:
- the signal fires when the parent *thread* that forked the child exits, not the parent
  process. Every child here is started and waited on by the same thread (a pool inside a
  `with`/`try: ... finally: shutdown(wait=True)` block, `subprocess.run`, Dagster's executor
  loop in the run worker's main thread), so the thread outlives the child. Do not start a
  lifeline child from a thread that returns before the child is done: it would be killed.
- the setting is per process: it is not inherited by the child's own children (so every
  level calls this itself) and is cleared by exec of a set-uid binary.
The parent may have died before the child got here (then no signal ever comes): the call
checks the parent is still there after arming, and kills this process at once when not.

Elsewhere (no prctl: macOS, or libc not found) a daemon thread polls the parent every second
and kills this process when it has gone. It needs the GIL, so on Linux it would add nothing
over the kernel's signal; it is not started there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 1.0
# The Dagster executor's step process runs this function (dagster 1.13, pinned).
_DAGSTER_STEP_TARGET = (
    "dagster._core.executor.child_process_executor",
    "_execute_command_in_child_process",
)


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)  # not reached


def _parent_alive_check(parent_pid: int | None) -> Callable[[], bool]:
    """How to tell that the parent is still there. With `parent_pid`: our parent pid is still
    that one (an orphan is re-parented to init or a subreaper). For a multiprocessing child:
    the pipe its parent holds open is not at end of file (this also holds for a forkserver
    child, whose OS parent is the fork server and not the process that asked for it)."""
    if parent_pid is not None:
        return lambda: os.getppid() == parent_pid
    parent = multiprocessing.parent_process()
    if parent is not None:
        return parent.is_alive
    first = os.getppid()
    return lambda: os.getppid() == first and first != 1


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_alive: Callable[[], bool], poll_seconds: float) -> None:
    while parent_alive():
        time.sleep(poll_seconds)
    _kill_self()


def die_with_parent(parent_pid: int | None = None, poll_seconds: float = POLL_SECONDS) -> str:
    """Arrange for this process to be killed (SIGKILL) when its parent dies; returns how:
    "pdeathsig" (Linux) or "watchdog" (a polling daemon thread). `parent_pid`: the pid the
    parent recorded for itself before starting us (a plain subprocess passes it; a
    multiprocessing child needs none). Kills this process now if the parent is already gone."""
    parent_alive = _parent_alive_check(parent_pid)
    if _set_pdeathsig():
        how = "pdeathsig"
    else:
        how = "watchdog"
        threading.Thread(
            target=_watch, args=(parent_alive, poll_seconds), name="lifeline", daemon=True
        ).start()
    if not parent_alive():
        _kill_self()
    return how


def in_dagster_step_process() -> bool:
    """True in a step process of Dagster's multiprocess executor (its multiprocessing target
    is the executor's child entry point), False in the run worker, a code server or a test."""
    target = getattr(multiprocessing.current_process(), "_target", None)
    return (
        getattr(target, "__module__", None),
        getattr(target, "__name__", None),
    ) == _DAGSTER_STEP_TARGET


def protect_dagster_step_process() -> str | None:
    """`die_with_parent()` when this is a Dagster step process (its parent: the run worker);
    elsewhere nothing (a run worker must not die with the code server that launched it)."""
    if in_dagster_step_process():
        return die_with_parent()
    return None
