"""A step whose Celery worker dies mid-step fails its run instead of hanging it.

The unit tests drive the lost-task decision (cbi_platform/celery_watch.py) with a fake app and
a fake clock; the slow test kills a real worker's master process under a real run.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from cbi_platform import workers
from cbi_platform.celery_watch import CeleryTaskLost, LostAwareResult, LostTaskWatch

# ---- the decision, with a fake app ----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeInspect:
    def __init__(self, app: FakeApp, timeout: float) -> None:
        self.app, self.timeout = app, timeout

    def active(self) -> dict | None:
        self.app.broadcasts.append(self.timeout)
        if not self.app.workers:
            return None  # what Celery returns when no worker answers
        return {host: [{"id": i} for i in ids] for host, ids in self.app.workers.items()}


class FakeApp:
    """`control.inspect(timeout=...).active()` over `workers`: {hostname: task ids it runs}."""

    def __init__(self) -> None:
        self.workers: dict[str, set[str]] = {}
        self.broadcasts: list[float] = []
        self.control = self

    def inspect(self, timeout: float) -> FakeInspect:
        return FakeInspect(self, timeout)


class FakeResult:
    """The AsyncResult surface the wrapper uses: id, state, info, ready, get, revoke."""

    def __init__(self, task_id: str, state: str = "PENDING") -> None:
        self.id, self.state = task_id, state
        self.info: object = None
        self.revoked = 0
        self.queue = "dagster"

    def start(self, hostname: str = "default1@box", pid: int = 4242) -> None:
        self.state, self.info = "STARTED", {"hostname": hostname, "pid": pid}

    def ready(self) -> bool:
        return self.state in ("SUCCESS", "FAILURE", "REVOKED")

    def get(self, **kwargs) -> list[str]:
        return ["events"]

    def revoke(self, **kwargs) -> None:
        self.revoked += 1


def _setup(n: int = 1) -> tuple[FakeApp, FakeClock, LostTaskWatch, list[FakeResult], list]:
    app, clock = FakeApp(), FakeClock()
    watch = LostTaskWatch(app, clock=clock)
    raw = [FakeResult(f"task-{i}") for i in range(n)]
    wrapped = [LostAwareResult(r, f"step_{i}", watch) for i, r in enumerate(raw)]
    return app, clock, watch, raw, wrapped


def _tick(clock: FakeClock, wrapped: list, seconds: float = 1.0) -> list[bool]:
    """One loop tick: dagster-celery polls every in-flight result's ready()."""
    clock.now += seconds
    return [w.ready() for w in wrapped]


def test_a_pending_task_is_never_lost_and_costs_no_broadcast():
    app, clock, _, raw, (result,) = _setup()
    for _ in range(60):  # a minute in the queue with no worker at all
        assert _tick(clock, [result]) == [False]
    assert app.broadcasts == []
    assert result.get() == ["events"]  # delegated


def test_a_started_task_that_a_live_worker_lists_is_not_lost():
    app, clock, _, raw, (result,) = _setup()
    raw[0].start()
    app.workers = {"default1@box": {"task-0"}}
    for _ in range(60):
        assert _tick(clock, [result]) == [False]
    assert len(app.broadcasts) >= 10
    assert raw[0].revoked == 0


def test_a_started_task_missing_on_two_checks_is_lost_with_a_clear_error():
    app, clock, watch, raw, (result,) = _setup()
    raw[0].start(hostname="default2@box", pid=777)
    app.workers = {"default1@box": set(), "gpu1@box": set()}  # alive, but not running it
    assert _tick(clock, [result]) == [False]  # first check: one miss
    assert watch.checks == 1
    for _ in range(4):  # within the interval: no new check, still not lost
        assert _tick(clock, [result]) == [False]
    assert watch.checks == 1
    assert _tick(clock, [result]) == [True]  # second check, 5 s later: lost
    assert watch.checks == 2
    assert app.broadcasts == [1.0, 1.0]  # inspect timeout 1 s
    with pytest.raises(CeleryTaskLost) as lost:
        result.get()
    message = str(lost.value)
    assert 'celery task task-0 for step "step_0" was lost' in message
    assert "worker default2@box (pid 777) no longer runs it" in message
    assert "re-execute it from the failed step" in message
    assert raw[0].revoked == 1  # a redelivered copy must not run beside the retry
    assert result.ready() is True  # stays lost


def test_one_miss_then_listed_again_is_not_lost():
    app, clock, watch, raw, (result,) = _setup()
    raw[0].start()
    app.workers = {"default1@box": set()}  # the worker has not registered it yet
    assert _tick(clock, [result]) == [False]
    app.workers = {"default1@box": {"task-0"}}
    assert _tick(clock, [result], 5.0) == [False]
    app.workers = {"default1@box": set()}  # one miss again: the count started over
    assert _tick(clock, [result], 5.0) == [False]
    app.workers = {"default1@box": {"task-0"}}
    for _ in range(20):
        assert _tick(clock, [result]) == [False]
    assert watch.checks == 7


def test_no_worker_answering_on_two_checks_is_lost():
    app, clock, _, raw, (result,) = _setup()
    raw[0].start()
    app.workers = {}
    assert _tick(clock, [result], 5.0) == [False]
    assert _tick(clock, [result], 5.0) == [True]
    with pytest.raises(CeleryTaskLost, match="no worker answered the inspect"):
        result.get()


def test_a_task_that_finished_while_being_checked_is_not_lost():
    """The worker stores the result before it drops the task from its active list: the state
    is read again before a task is declared lost."""
    app, clock, _, raw, (result,) = _setup()
    raw[0].start()
    app.workers = {"default1@box": set()}
    assert _tick(clock, [result], 5.0) == [False]

    class FinishesDuringTheCheck(FakeInspect):
        def active(self):
            raw[0].state, raw[0].info = "SUCCESS", ["events"]
            return super().active()

    app.inspect = lambda timeout: FinishesDuringTheCheck(app, timeout)
    assert _tick(clock, [result], 5.0) == [True]
    assert result.get() == ["events"]
    assert raw[0].revoked == 0


def test_one_broadcast_per_interval_serves_every_task_of_the_run():
    app, clock, watch, raw, wrapped = _setup(4)
    for r in raw:
        r.start()
    app.workers = {"default1@box": {"task-0", "task-1"}, "default2@box": {"task-2", "task-3"}}
    for _ in range(41):  # 10.25 s of a fast loop polling four in-flight steps
        assert _tick(clock, wrapped, 0.25) == [False] * 4
    # 164 ready() calls, one broadcast per 5 s: at 0.25 s, 5.25 s and 10.25 s
    assert len(app.broadcasts) == watch.checks == 3
    # a dead worker: its two tasks are lost after two more checks, the others are not
    app.workers = {"default2@box": {"task-2", "task-3"}}
    states = [_tick(clock, wrapped, 0.25) for _ in range(40)]
    assert states[19] == [False] * 4  # one miss (at 15.25 s) is not enough
    assert states[-1] == [True, True, False, False]  # the second (at 20.25 s) is
    assert len(app.broadcasts) == 5


def test_everything_else_is_the_real_async_result():
    _, _, _, raw, (result,) = _setup()
    assert result.id == "task-0"
    assert result.queue == "dagster"
    result.revoke(terminate=True)
    assert raw[0].revoked == 1
    raw[0].state = "SUCCESS"
    assert result.ready() is True
    assert result.get(propagate=True) == ["events"]


# ---- a real worker killed under a real run -------------------------------------------------

STEP_SECONDS = 20.0  # far longer than detection: a run that ends early was not waiting it out
DETECTION_LIMIT = 30.0  # seconds from the kill to a failed run


@dg.asset
def lost_toy_step() -> int:
    marks = Path(os.environ["CBI_TEST_LOST_DIR"])
    (marks / "step.pid").write_text(str(os.getpid()))
    time.sleep(STEP_SECONDS)
    (marks / "step.done").write_text("done")
    return 1


def lost_toy_job() -> dg.JobDefinition:
    from cbi_platform.defs.distributed import redis_celery_executor

    broker = os.environ["CBI_TEST_CELERY_BROKER"]
    job = dg.define_asset_job("lost_toy_job", executor_def=redis_celery_executor(broker))
    return dg.Definitions(assets=[lost_toy_step], jobs=[job]).resolve_job_def("lost_toy_job")


def _parent(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")"
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Task name 'execute_plan' is already registered")
def test_killing_the_worker_master_mid_step_fails_the_run(tmp_path, monkeypatch, redis_broker):
    port, broker = redis_broker
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("CBI_TEST_LOST_DIR", str(marks))  # the workers inherit it
    services = tmp_path / "services"
    outcome: dict = {}
    try:
        pids = workers.start_all(services, port=port, default_workers=1, broker=broker)
        (tmp_path / "home").mkdir()
        retries = {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}
        overrides = {"run_retries": retries}  # as in dagster.yaml
        with dg.instance_for_test(temp_dir=str(tmp_path / "home"), overrides=overrides) as inst:

            def run() -> None:
                result = dg.execute_job(
                    dg.reconstructable(lost_toy_job), instance=inst, raise_on_error=False
                )
                outcome["result"], outcome["end"] = result, time.monotonic()

            runner = threading.Thread(target=run, daemon=True)  # a hang must not hang pytest
            runner.start()
            _wait_for(marks / "step.pid", timeout=60)
            step_pid = int((marks / "step.pid").read_text())
            master = _parent(step_pid)
            assert master == pids["default1"]  # the `celery worker` process we started
            os.kill(master, signal.SIGKILL)
            killed = time.monotonic()
            runner.join(timeout=DETECTION_LIMIT)
            assert not runner.is_alive(), f"the run still hangs {DETECTION_LIMIT} s after the kill"
            result = outcome["result"]
            run = inst.get_run_by_id(result.run_id)
    finally:
        stopped = workers.stop_all(services)

    seconds = outcome["end"] - killed
    print(f"run failed {seconds:.1f} s after the worker master was killed")
    assert not result.success
    assert run.status == dg.DagsterRunStatus.FAILURE
    failure = result.get_run_failure_event()
    error = failure.event_specific_data.error
    text = failure.message + (error.to_string() if error else "")
    assert re.search(r'CeleryTaskLost: celery task \S+ for step "lost_toy_step" was lost', text)
    assert f"(pid {step_pid}) no longer runs it" in text
    assert not (marks / "step.done").exists()  # the step died with its worker
    # a run failure, not a step failure: dagster.yaml's run retries will re-execute it
    assert run.tags.get("dagster/will_retry") == "true"

    assert set(stopped) == {"redis", "gpu1"}  # default1 was dead already, with its step
    for pgid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
    assert not Path(f"/proc/{step_pid}").exists()
