"""The replay runs the pipeline through a `ReplayDriver` it is given: the operations layer stays
free of Dagster and of the wiring above it, and training stops at the first failed run."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from cbi_platform.operations.replay import RetrainingTick, train

DAY = dt.date(2024, 3, 1)


class RecordingDriver:
    """A driver that records what the replay asks it to run and fails where told."""

    def __init__(self, fail: dict[str, str] | None = None):
        self.fail = fail or {}
        self.calls: list[tuple] = []

    def resources(self, through):
        return {}

    def train_shared(self, through, tags):
        self.calls.append(("shared", through, dict(tags)))
        return self.fail.get("shared")

    def train_horizon(self, through, horizon, tags):
        self.calls.append((horizon, through, dict(tags)))
        return self.fail.get(horizon)

    def refresh(self, day):
        return None

    def alert_tick(self, day):
        return None

    def retraining_tick(self, day, cursor):
        return RetrainingTick(cursor=cursor, requests=[])


def test_train_runs_the_shared_stage_then_each_horizon_with_the_run_tags():
    driver = RecordingDriver()
    said: list[str] = []
    train(driver, DAY, ["1w", "3m"], tags={"cbi/run_key": "k"}, say=said.append)
    assert driver.calls == [
        ("shared", DAY, {"cbi/run_key": "k"}),
        ("1w", DAY, {"cbi/run_key": "k"}),
        ("3m", DAY, {"cbi/run_key": "k"}),
    ]
    assert [line.split()[:2] for line in said] == [["trained", "1w"], ["trained", "3m"]]


def test_train_stops_at_the_first_failed_run_and_names_it():
    driver = RecordingDriver(fail={"1w": "features: leakage"})
    with pytest.raises(RuntimeError, match="training 1w through 2024-03-01 failed: features"):
        train(driver, DAY, ["1w", "3m"])
    assert [c[0] for c in driver.calls] == ["shared", "1w"]
    with pytest.raises(RuntimeError, match="market data through 2024-03-01"):
        train(RecordingDriver(fail={"shared": "market_prices: schema"}), DAY, ["1w"])


def test_the_replay_module_imports_neither_dagster_nor_the_wiring():
    code = (
        "import sys, cbi_platform.operations.replay; "
        "print(sorted(m for m in sys.modules "
        "if m == 'dagster' or m.startswith('cbi_platform.defs')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
