"""Lost Celery tasks: a step whose worker died must fail its run, not hang it.

Why: dagster-celery's orchestration loop (`core_celery_execution_loop`) waits on each step's
`AsyncResult.ready()` and nothing else. Measured on this machine with a one-step toy job whose
step sleeps 25 s: kill -9 of the worker's pool child fails the run within about a second (the
worker master reports WorkerLostError into the result backend), but kill -9 of the worker
MASTER (the `celery worker` process; its pool child dies with it) hung the run for as long as
we watched (70 s, and forever in principle): no process is left to store a result, and the
task was acknowledged when it started, so the broker never hands it to another worker.

The fix: each step's AsyncResult is wrapped in a `LostAwareResult` whose `ready()` is also true
once the task is LOST, and whose `get()` then raises `CeleryTaskLost`; dagster-celery turns that
into a failed run (DagsterSubprocessError naming the step), and dagster.yaml's run retries
re-execute it from the failed step. Lost means: the backend says STARTED (the workers run with
`task_track_started`, cbi_platform/workers.py, so a started task records its worker's hostname
and pid) and no live worker lists the task among its active tasks (`inspect().active()`) on
two consecutive checks at least `interval` apart; no answer from any worker counts as not
listed. A PENDING task (queued, not started) is never lost: it waits for a worker as before.

The checks are one broadcast shared by all of a run's in-flight tasks (`LostTaskWatch`), at
most one per `interval` (5 s) and only while some task is STARTED: the loop polls every task
every tick, and a broadcast per task per tick would flood the broker and block the loop for the
inspect timeout each time. Before declaring a task lost its state is read once more, because a
worker stores a task's result in the backend before it drops the task from its active list.

Plain module: Celery only (no Dagster); cbi_platform/defs/distributed.py wires it into the
executor. Tests: cbi_platform_tests/test_celery_lost_task.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import states

DEFAULT_INTERVAL = 5.0  # seconds between two inspect broadcasts of one run
DEFAULT_CONFIRMATIONS = 2  # consecutive checks a STARTED task must be missing from
DEFAULT_INSPECT_TIMEOUT = 1.0  # seconds each broadcast waits for the workers' replies


class CeleryTaskLost(Exception):
    """A STARTED task that no live worker runs any more: its worker died mid-step."""


class LostTaskWatch:
    """Decides, for a run's STARTED tasks, whether any live worker still runs them.

    `app` is the Celery app of the run (anything with `control.inspect(timeout=...)` whose
    `active()` returns `{hostname: [{"id": task_id, ...}, ...]}` or None). One inspect
    broadcast serves every task of the run; `clock` is injectable for the tests.
    """

    def __init__(
        self,
        app: Any,
        *,
        interval: float = DEFAULT_INTERVAL,
        confirmations: int = DEFAULT_CONFIRMATIONS,
        inspect_timeout: float = DEFAULT_INSPECT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if confirmations < 1:
            raise ValueError("confirmations must be at least 1")
        self._app = app
        self._interval = interval
        self._confirmations = confirmations
        self._inspect_timeout = inspect_timeout
        self._clock = clock
        self._last_check: float | None = None
        self._misses: dict[str, int] = {}  # STARTED task id -> consecutive checks missing it
        self.checks = 0  # inspect broadcasts sent
        self.workers_answered = 0  # workers that answered the latest broadcast

    def is_lost(self, task_id: str, state: str) -> bool:
        """Whether the task, whose backend state was just read as `state`, is lost."""
        if state != states.STARTED:
            self.forget(task_id)
            return False
        # Only checks taken after its state was read as STARTED count for a task.
        self._misses.setdefault(task_id, 0)
        self._maybe_check()
        return self._misses[task_id] >= self._confirmations

    def forget(self, task_id: str) -> None:
        """Stop tracking a task (finished, or no longer STARTED)."""
        self._misses.pop(task_id, None)

    def _maybe_check(self) -> None:
        now = self._clock()
        if self._last_check is not None and now - self._last_check < self._interval:
            return
        self._last_check = now
        self.checks += 1
        replies = self._app.control.inspect(timeout=self._inspect_timeout).active() or {}
        self.workers_answered = len(replies)
        running = {task.get("id") for tasks in replies.values() for task in tasks or ()}
        for task_id in self._misses:
            self._misses[task_id] = 0 if task_id in running else self._misses[task_id] + 1


class LostAwareResult:
    """A Celery AsyncResult for one step whose `ready()` is also true once the task is lost
    (then `get()` raises CeleryTaskLost); everything else is the real AsyncResult's."""

    def __init__(self, result: Any, step_key: str, watch: LostTaskWatch) -> None:
        self._result = result
        self._step_key = step_key
        self._watch = watch
        self._lost: str | None = None  # the CeleryTaskLost message, once lost

    @property
    def id(self) -> str:
        return self._result.id

    @property
    def lost(self) -> str | None:
        """Why the task is lost, or None while it is not."""
        return self._lost

    def ready(self) -> bool:
        if self._lost is not None:
            return True
        state = self._result.state
        if state in states.READY_STATES:
            self._watch.forget(self.id)
            return True
        if not self._watch.is_lost(self.id, state):
            return False
        # The worker stores the result before it drops the task from its active list: read
        # the meta, then the state; a state still STARTED means the meta is the STARTED one.
        info = self._result.info
        state = self._result.state
        if state != states.STARTED:
            self._watch.forget(self.id)
            return state in states.READY_STATES
        self._lost = self._message(info)
        self._watch.forget(self.id)
        try:  # best effort: a copy of the message redelivered later must not run beside a retry
            self._result.revoke()
        except Exception:  # the broker may be unreachable; the run fails anyway
            pass
        return True

    def get(self, *args: Any, **kwargs: Any) -> Any:
        if self._lost is not None:
            # A fresh exception each time: one kept on self would hold, through its traceback,
            # this result (and the AsyncResult's backend subscription) in a reference cycle.
            raise CeleryTaskLost(self._lost)
        return self._result.get(*args, **kwargs)

    def revoke(self, *args: Any, **kwargs: Any) -> Any:
        return self._result.revoke(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._result, name)

    def _message(self, info: Any) -> str:
        info = info if isinstance(info, dict) else {}
        hostname = info.get("hostname", "unknown")
        pid = info.get("pid", "unknown")
        nobody = "; no worker answered the inspect" if self._watch.workers_answered == 0 else ""
        return (
            f'celery task {self.id} for step "{self._step_key}" was lost: worker {hostname} '
            f"(pid {pid}) no longer runs it (killed?){nobody}. The run fails; dagster.yaml's run "
            "retries re-execute it from the failed step."
        )
