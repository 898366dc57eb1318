"""A one-step job on Dagster's multiprocess executor for test_lifeline: the step reports its
armed parent-death signal, trains in a package-style pool, then writes a marker.
(No `from __future__ import annotations`: Dagster reads the config annotation.)"""

import os
from pathlib import Path

import dagster as dg

import cbi_platform.defs  # noqa: F401  (the wiring under test: arms each step process)
from cbi_platform_tests.lifeline_helpers import armed_signal, run_package_pool


class SlowStepConfig(dg.Config):
    folder: str
    seconds: float


@dg.op
def slow_step(config: SlowStepConfig) -> None:
    folder = Path(config.folder)
    (folder / f"step-{os.getpid()}").write_text(str(armed_signal()))
    run_package_pool(config.folder, config.seconds, n_workers=1)
    (folder / "step-done").write_text("written")


@dg.job(executor_def=dg.multiprocess_executor)
def lifeline_job() -> None:
    slow_step()
