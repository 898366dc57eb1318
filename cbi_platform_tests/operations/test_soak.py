"""The soak's day loop: one refresh request per simulated business day."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from cbi_platform import clock
from cbi_platform.operations.soak import SOAK_DAY_TAG, is_business_day, soak_tick

MONDAY = dt.date(2025, 6, 2)


def test_a_business_day_is_requested_once_with_the_day_as_run_key():
    first = soak_tick(MONDAY, None)
    assert first.run_key == "2025-06-02" and first.tags == {SOAK_DAY_TAG: "2025-06-02"}
    assert json.loads(first.cursor) == {"last_requested": "2025-06-02"}
    again = soak_tick(MONDAY, first.cursor)
    assert again.run_key is None and again.cursor == first.cursor
    tuesday = soak_tick(MONDAY + dt.timedelta(days=1), first.cursor)
    assert tuesday.run_key == "2025-06-03"


def test_weekends_and_a_clock_set_back_request_nothing():
    cursor = soak_tick(MONDAY, None).cursor
    saturday = MONDAY + dt.timedelta(days=5)
    assert not is_business_day(saturday)
    assert soak_tick(saturday, cursor).run_key is None
    assert soak_tick(saturday, cursor).cursor == cursor
    assert soak_tick(MONDAY - dt.timedelta(days=3), cursor).run_key is None  # the Friday before


def test_the_sensor_follows_the_clock_file(tmp_path, monkeypatch):
    from cbi_platform.defs.operations.soak import build_soak_sensor
    from cbi_platform.defs.pipeline import daily_refresh_job

    path = tmp_path / "clock"
    clock.write_clock_file(path, MONDAY)
    monkeypatch.setenv(clock.CLOCK_ENV, str(path))
    sensor = build_soak_sensor(daily_refresh_job)
    assert sensor.minimum_interval_seconds <= 5
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance))
        assert [r.run_key for r in result.run_requests] == ["2025-06-02"]
        assert result.run_requests[0].tags[SOAK_DAY_TAG] == "2025-06-02"
        again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert again.run_requests == []
        clock.write_clock_file(path, MONDAY + dt.timedelta(days=1))
        next_day = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert [r.run_key for r in next_day.run_requests] == ["2025-06-03"]
