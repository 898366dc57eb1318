"""Issue 21: a child process dies with its parent. kill -9 a parent, a process running a
package-style training pool, and a Dagster run worker mid-step: every process below it is gone
within seconds and the marker a surviving orphan would write never appears."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cbi_platform.lifeline import in_dagster_step_process, protect_dagster_step_process
from cbi_platform_tests.lifeline_helpers import alive, descendants, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

ROOT = Path(__file__).resolve().parents[1]
# Lifeline children die at once; the bound leaves room for a loaded 2-core machine.
GONE_WITHIN = 5.0


def _start(*args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "cbi_platform_tests.lifeline_helpers", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, text=True)


def _kill_tree(process: subprocess.Popen, below: set[int]) -> None:
    """Clean up whatever a failed test left running (only the processes this test started)."""
    for pid in [process.pid, *below]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.mark.parametrize("mechanism", ["pdeathsig", "watchdog"])
def test_a_child_dies_within_seconds_of_its_parent_kill_9(mechanism):
    parent = _start("parent", *(["watchdog"] if mechanism == "watchdog" else []))
    child = None
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == mechanism  # the child armed itself
        assert alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        seconds = wait_for(lambda: not alive(child), GONE_WITHIN)
        assert seconds is not None, f"child {child} outlived its parent by {GONE_WITHIN}s"
    finally:
        _kill_tree(parent, {child} if child else set())


def test_a_child_whose_parent_is_already_gone_dies_at_once():
    """The race: the parent died before the child armed itself (no signal would ever come)."""
    code = "from cbi_platform.lifeline import die_with_parent; die_with_parent(1); print('lived')"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == -signal.SIGKILL and "lived" not in result.stdout


def test_only_a_dagster_step_process_is_protected():
    """The test process (like a run worker or a code server) is no step: nothing is armed."""
    assert not in_dagster_step_process()
    assert protect_dagster_step_process() is None


def _wait_for_files(
    process: subprocess.Popen, folder: Path, pattern: str, count: int, timeout: float
) -> list[Path]:
    """The files once `count` exist; fails when the process ends or time runs out first."""
    found: list[Path] = []

    def enough() -> bool:
        found[:] = sorted(folder.glob(pattern))
        return len(found) >= count or process.poll() is not None

    wait_for(enough, timeout, step=0.1)
    assert len(found) >= count, f"{len(found)} of {count} {pattern} in {timeout}s"
    return found


def _kill_9_and_judge(process: subprocess.Popen, below: set[int], folder: Path, sleep: float):
    """kill -9 `process`: every process below it is gone within GONE_WITHIN, and no marker
    appears even after the sleep an orphan would have finished."""
    killed_at = time.monotonic()
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    seconds = wait_for(lambda: not any(alive(pid) for pid in below), GONE_WITHIN)
    survivors = {pid for pid in below if alive(pid)}
    assert seconds is not None, f"{survivors} outlived the kill -9 by {GONE_WITHIN}s"
    time.sleep(max(0.0, sleep + 1.0 - (time.monotonic() - killed_at)))
    assert not list(folder.glob("done-*")) and not (folder / "step-done").exists()


def _pids(files: list[Path]) -> set[int]:
    return {int(p.name.split("-")[1]) for p in files}


def test_kill_9_of_a_process_running_a_training_pool_kills_its_workers(tmp_path):
    sleep = 6.0
    process = _start("pool", str(tmp_path), str(sleep), stdout=None)
    below: set[int] = set()
    try:
        workers = _wait_for_files(process, tmp_path, "worker-*", 2, timeout=60)
        below = descendants(process.pid)  # the two workers and the resource tracker
        assert _pids(workers) <= below
        assert {p.read_text() for p in workers} == {str(int(signal.SIGKILL))}
        _kill_9_and_judge(process, below, tmp_path, sleep)
    finally:
        _kill_tree(process, below | descendants(process.pid))


@pytest.mark.slow
def test_kill_9_of_a_dagster_run_worker_mid_step_kills_the_step_and_its_workers(tmp_path):
    """The multiprocess executor's step process (armed by importing cbi_platform.defs) and the
    pool worker it trains in both die with the run worker; nothing is written afterwards."""
    sleep = 6.0
    process = _start("job", str(tmp_path), str(sleep), stdout=None)
    below: set[int] = set()
    try:
        workers = _wait_for_files(process, tmp_path, "worker-*", 1, timeout=90)
        below = descendants(process.pid)
        steps = list(tmp_path.glob("step-*"))
        assert len(steps) == 1 and _pids(steps) | _pids(workers) <= below
        _kill_9_and_judge(process, below, tmp_path, sleep)
        assert steps[0].read_text() == str(int(signal.SIGKILL))  # the step armed itself
        assert not list(tmp_path.glob("run-*"))  # the run worker never finished
    finally:
        _kill_tree(process, below | descendants(process.pid))


def test_an_isolated_fit_process_is_armed():
    """walk_forward.in_spawned_process (the networks' one-off process) arms its worker too."""
    from cbi_platform.evaluation.walk_forward import in_spawned_process
    from cbi_platform_tests.lifeline_helpers import armed_signal

    assert in_spawned_process(armed_signal) == signal.SIGKILL
