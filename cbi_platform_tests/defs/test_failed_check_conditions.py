"""A failed blocking check becomes an alert condition dated by the platform's day."""

import datetime as dt

import dagster as dg

from cbi_platform.clock import write_clock_file
from cbi_platform.defs.operations.sensors import failed_check_conditions


@dg.asset
def table() -> int:
    return 1


@dg.asset_check(asset=table, blocking=True)
def table_is_wrong() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="planted failure")


def _conditions(instance):
    result = dg.materialize([table, table_is_wrong], instance=instance, raise_on_error=False)
    assert not result.success  # the blocking check stops the run
    keys = [dg.AssetCheckKey(table.key, "table_is_wrong")]
    return failed_check_conditions(instance, keys, "http://dagster")


def test_a_failed_check_is_dated_by_the_simulated_day_under_a_simulated_clock(
    tmp_path, monkeypatch
):
    clock_file = tmp_path / "clock"
    write_clock_file(clock_file, dt.date(2025, 7, 14))
    monkeypatch.setenv("CBI_CLOCK_FILE", str(clock_file))
    with dg.instance_for_test() as instance:
        (condition,) = _conditions(instance)
    assert condition.firing and condition.as_of == dt.date(2025, 7, 14)
    assert condition.key == "failed_check/table/table_is_wrong"


def test_a_failed_check_is_dated_by_its_evaluation_in_real_time(monkeypatch):
    monkeypatch.delenv("CBI_CLOCK_FILE", raising=False)
    with dg.instance_for_test() as instance:
        (condition,) = _conditions(instance)
    assert condition.firing and condition.as_of == dt.date.today()
