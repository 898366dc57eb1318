"""Sensor-driven retraining: run_key per condition episode, JSON cursor, cooldown; the real
sensors ticked with `build_sensor_context` on an instance."""

from __future__ import annotations

import datetime as dt
import json
import socket

import dagster as dg
import pytest

from cbi_platform.conditions import ACCURACY, CORRELATION_BREAK, COVERAGE, DRIFT, Condition
from cbi_platform.defs.operations.sensors import build_sensors
from cbi_platform.defs.pipeline import ALL_CHECKS, retrain_job
from cbi_platform.defs.resources import (
    ForecastStoreResource,
    MlflowResource,
    OperationsResource,
)
from cbi_platform.operations.condition_log import ConditionLog
from cbi_platform.operations.config import RetrainingSettings
from cbi_platform.operations.retraining import plan_retraining

H = ("1w", "1m", "3m", "6m", "12m")
D = dt.date(2024, 3, 4)  # a Monday


def _cond(key, kind, firing, day, horizon=None, **evidence):
    return Condition(
        key=key, kind=kind, firing=firing, title=key, as_of=day, horizon=horizon, evidence=evidence
    )


def _plan(conditions, cursor=None, **kw):
    return plan_retraining(
        conditions,
        cursor,
        horizons=H,
        kinds=("accuracy", "coverage"),
        cooldown_business_days=10,
        **kw,
    )


def test_one_request_per_condition_episode_and_horizon_across_ticks_and_restarts():
    first = _plan([_cond("accuracy/1w", ACCURACY, True, D, "1w")])
    assert [(r.horizon, r.run_key) for r in first.requests] == [
        ("1w", "retrain:accuracy/1w:1w:2024-03-04")
    ]
    # Still firing the next days: same episode, nothing new (the cursor is plain JSON).
    cursor = first.cursor
    for day in (D, D + dt.timedelta(days=1), D + dt.timedelta(days=2)):
        again = _plan(
            [_cond("accuracy/1w", ACCURACY, True, day, "1w")],
            json.loads(json.dumps(cursor)) and cursor,
        )
        assert again.requests == []
        cursor = again.cursor
    # Not a retraining kind, or not firing: nothing.
    assert _plan([_cond("drift/1w", DRIFT, True, D, "1w")]).requests == []
    assert _plan([_cond("accuracy/1m", ACCURACY, False, D, "1m")]).requests == []


def test_a_new_episode_after_the_cooldown_retrains_again_and_not_before():
    first = _plan([_cond("accuracy/1w", ACCURACY, True, D, "1w")])
    cleared = _plan(
        [_cond("accuracy/1w", ACCURACY, False, D + dt.timedelta(days=1), "1w")], first.cursor
    )
    soon = D + dt.timedelta(days=3)  # 3 business days later: cooling down
    deferred = _plan([_cond("accuracy/1w", ACCURACY, True, soon, "1w")], cleared.cursor)
    assert deferred.requests == [] and "cooling down" in deferred.deferred[0]
    later = D + dt.timedelta(days=21)
    fresh = _plan([_cond("accuracy/1w", ACCURACY, True, later, "1w")], deferred.cursor)
    # The episode that started during the cooldown is requested once the cooldown is over.
    assert [r.run_key for r in fresh.requests] == ["retrain:accuracy/1w:1w:2024-03-07"]


def test_a_drift_only_or_correlation_break_only_condition_requests_no_retrain():
    """Issue 20 section 4: drift and correlation breaks inform; only accuracy or coverage
    evidence retrains. A firing drift or break alone requests nothing, with any settings."""
    informing = [
        _cond("drift/1w", DRIFT, True, D, "1w"),
        _cond("drift/3m", DRIFT, True, D, "3m"),
        _cond("correlation_break/soy_crude", CORRELATION_BREAK, True, D, partner="WTI"),
    ]
    assert _plan(informing).requests == []
    # The same day with coverage evidence on 3m: that horizon alone is retrained.
    with_evidence = [*informing, _cond("coverage/3m", COVERAGE, True, D, "3m")]
    assert [r.horizon for r in _plan(with_evidence).requests] == ["3m"]
    # Drift cannot be configured back into the retraining kinds.
    with pytest.raises(ValueError, match="cannot request a retrain"):
        plan_retraining(
            informing, None, horizons=H, kinds=("accuracy", "drift"), cooldown_business_days=10
        )
    with pytest.raises(ValueError, match="cannot request a retrain"):
        RetrainingSettings(kinds=("correlation_break",))
    assert RetrainingSettings().kinds == ("accuracy", "coverage")


def test_no_retrain_when_the_served_version_already_saw_the_cause():
    began = _cond("accuracy/1w", ACCURACY, True, D, "1w")
    plan = _plan(
        [began, _cond("accuracy/1m", ACCURACY, True, D, "1m")],
        trained_through={"1w": dt.date(2024, 3, 4), "1m": dt.date(2024, 2, 9)},
    )
    # 1w was trained through the day the condition began (nothing new to learn); 1m before it.
    assert [r.horizon for r in plan.requests] == ["1m"]
    assert "nothing new to learn" in plan.deferred[0]


def test_a_run_already_launched_for_the_key_is_not_requested_again():
    plan = _plan(
        [_cond("coverage/3m", COVERAGE, True, D, "3m")],
        run_exists=lambda key: key == "retrain:coverage/3m:3m:2024-03-04",
    )
    assert plan.requests == []


@pytest.fixture
def ops_resources(tmp_path):
    return {
        "operations": OperationsResource(database=str(tmp_path / "operations.duckdb")),
        "forecast_store": ForecastStoreResource(database=str(tmp_path / "forecasts.duckdb")),
        "mlflow": MlflowResource(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            artifact_root=str(tmp_path / "mlartifacts"),
        ),
    }


def _sensor(name):
    return {s.name: s for s in build_sensors(retrain_job, ALL_CHECKS)}[name]


def test_the_retraining_sensor_requests_the_partition_once_with_a_run_key(ops_resources):
    ConditionLog(ops_resources["operations"].database).record(
        [_cond("accuracy/1m", ACCURACY, True, D, "1m", rel_mae=1.4)], "run-1"
    )
    instance = dg.DagsterInstance.ephemeral()
    sensor = _sensor("retraining_sensor")
    result = sensor(dg.build_sensor_context(instance=instance, resources=ops_resources))
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        ("1m", "retrain:accuracy/1m:1m:2024-03-04")
    ]
    assert result.run_requests[0].tags["cbi/condition"] == "accuracy/1m"
    audit = ops_resources["operations"].audit().rows()
    assert audit["action"].to_list() == ["retrain_requested"] and audit["horizon"][0] == "1m"
    # The next tick (and a restarted daemon reading the stored cursor) requests nothing.
    again = sensor(
        dg.build_sensor_context(instance=instance, cursor=result.cursor, resources=ops_resources)
    )
    assert not again.run_requests
    assert ops_resources["operations"].audit().rows().height == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_alert_sensor_mails_once_when_firing_and_once_when_resolved(tmp_path):
    from cbi_platform.operations.mailbox import LocalMailbox

    box = LocalMailbox()
    host, port = box.start()
    try:
        resources = {
            "operations": OperationsResource(
                database=str(tmp_path / "operations.duckdb"),
                smtp_host=host,
                smtp_port=port,
                smtp_security="none",
                smtp_sender="cbi@localhost",
                smtp_recipients="buyer@localhost",
                dagster_url="http://dagster.local",
            )
        }
        log = ConditionLog(resources["operations"].database)
        instance = dg.DagsterInstance.ephemeral()
        sensor = _sensor("alert_sensor")

        def tick():
            return sensor(dg.build_sensor_context(instance=instance, resources=resources))

        log.record([_cond("accuracy/1w", ACCURACY, True, D, "1w", rel_mae=1.31)], "r1")
        assert "fired accuracy/1w" in tick().skip_message
        tick()
        log.record([_cond("accuracy/1w", ACCURACY, True, D + dt.timedelta(days=1), "1w")], "r2")
        tick()
        assert len(box.messages) == 1
        assert "FIRING" in box.messages[0]["Subject"] and "1.31" in box.messages[0].get_payload()
        log.record([_cond("accuracy/1w", ACCURACY, False, D + dt.timedelta(days=2), "1w")], "r3")
        assert "resolved accuracy/1w" in tick().skip_message
        tick()
        assert [m["Subject"].split()[2] for m in box.messages] == ["FIRING", "RESOLVED"]
    finally:
        box.stop()


def test_a_planted_degradation_binds_to_the_champion_and_can_alternate(tmp_path):
    from cbi_platform.operations.refresh import planted_bias

    perturb = planted_bias("1w:pm0.05:2024-03-04:2024-03-06", tmp_path)
    assert perturb("1w", "1", dt.date(2024, 3, 1), 0.01) == 0.01  # before FROM
    shifted = [perturb("1w", "1", D + dt.timedelta(days=i), 0.0) for i in range(3)]
    assert sorted({round(abs(x), 9) for x in shifted}) == [0.05] and len(set(shifted)) == 2
    assert perturb("1w", "2", D, 0.0) == 0.0  # a retrained version does not inherit it
    assert perturb("1m", "1", D, 0.0) == 0.0 and perturb("1w", "1", dt.date(2024, 3, 7), 0) == 0
    with pytest.raises(ValueError, match="HORIZON:LOGRET:FROM"):
        planted_bias("1w:0.05", tmp_path)
