"""Runs overlap in lanes: dagster.yaml limits each `cbi/lane` to one run, every job carries its
lane, and Dagster's own queue logic lets a refresh start beside a retrain but not a second
retrain."""

from pathlib import Path

import dagster as dg
import yaml
from dagster._core.test_utils import instance_for_test
from dagster._utils.tags import TagConcurrencyLimitsCounter

from cbi_platform.defs.pipeline import JOBS, LANE

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict:
    return yaml.safe_load((ROOT / "dagster.yaml").read_text())


def _lane_limits() -> dict[str, int]:
    limits = _config()["concurrency"]["runs"]["tag_concurrency_limits"]
    return {entry["value"]: entry["limit"] for entry in limits if entry["key"] == LANE}


def test_every_job_runs_in_a_lane_of_one():
    limits = _lane_limits()
    assert limits == {"training": 1, "refresh": 1, "buyer": 1}  # buyer: test_programme_job
    lanes = {job.name: job.tags.get(LANE) for job in JOBS}
    assert lanes == {
        "market_data_job": "training",
        "horizon_job": "training",
        "retrain_job": "training",
        "daily_refresh_job": "refresh",
    }
    # room for both lanes (and an ad-hoc run from the UI) at once
    assert _config()["concurrency"]["runs"]["max_concurrent_runs"] >= len(limits) + 1


def test_the_lane_goes_on_every_run_of_the_job_sensor_launched_too():
    """The sensor daemon starts a run's tags from the job's run tags (then the request's)."""
    from cbi_platform.definitions import defs

    for job in JOBS:
        resolved = defs.resolve_job_def(job.name)
        assert resolved.run_tags.get(LANE) == job.tags[LANE], job.name


def _run(job_name: str) -> dg.DagsterRun:
    job = next(j for j in JOBS if j.name == job_name)
    return dg.DagsterRun(job_name=job_name, tags=dict(job.run_tags or job.tags))


def test_a_refresh_is_not_held_behind_a_retrain_but_a_second_retrain_is():
    config = _config()
    with instance_for_test(overrides={"concurrency": config["concurrency"]}) as instance:
        queue = instance.get_concurrency_config().run_queue_config  # dagster.yaml validates
    assert queue.max_concurrent_runs == config["concurrency"]["runs"]["max_concurrent_runs"]
    # what the run queue counts: the runs in progress (a retrain) against each queued run
    counter = TagConcurrencyLimitsCounter(queue.tag_concurrency_limits, [_run("retrain_job")])
    assert not counter.is_blocked(_run("daily_refresh_job"))
    assert counter.is_blocked(_run("horizon_job"))
    assert counter.is_blocked(_run("market_data_job"))
    counter.update_counters_with_launched_item(_run("daily_refresh_job"))
    assert counter.is_blocked(_run("daily_refresh_job"))  # one refresh at a time
