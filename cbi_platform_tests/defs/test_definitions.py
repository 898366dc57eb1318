"""The Definitions load, and every asset has the partitions, policies and checks it should."""

import dagster as dg
import pytest

from cbi_platform.defs.partitions import HORIZON_KEYS
from cbi_platform.defs.pipeline import ALL_ASSETS, ALL_CHECKS, HORIZON


def _graph():
    from cbi_platform.definitions import defs

    dg.Definitions.validate_loadable(defs)
    return defs, defs.resolve_asset_graph()


def test_definitions_load_with_expected_assets():
    defs, graph = _graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {
        "raw_market_prices",
        "news_articles",
        "market_prices",
        "features",
        "regime_calendar",
        "regime_datasets",
    } <= keys
    assert defs.resolve_job_def("horizon_job") is not None


def test_horizon_assets_are_partitioned_with_backfill_policy_and_partition_expr():
    _, graph = _graph()
    keys = HORIZON.resolve(graph)
    assert len(keys) >= 17
    for key in keys:
        node = graph.get(key)
        assert node.partitions_def is not None, key
        assert list(node.partitions_def.get_partition_keys()) == list(HORIZON_KEYS)
        assert node.metadata.get("partition_expr") == "horizon", key
        assert node.backfill_policy is not None, key


def test_gates_are_blocking_and_every_asset_reports_a_group():
    checks = {}
    for check in ALL_CHECKS:
        for spec in check.check_specs:
            checks[spec.name] = spec
    for name in (
        "market_prices_schema",
        "market_prices_duplicate_dates",
        "market_prices_target_positive",
        "features_leakage_truncation",
        "features_leakage_forward_shift",
        "features_leakage_target_correlation",
        "features_leakage_asof",
        "detected_regimes_truncation",
    ):
        assert checks[name].blocking, name
    assert not checks["market_prices_staleness"].blocking
    for asset in ALL_ASSETS:
        for spec in asset.specs:
            assert spec.group_name and spec.group_name != "default", spec.key


def test_resources_switch_warehouse_by_configuration():
    from dagster_duckdb_polars import DuckDBPolarsIOManager
    from dagster_polars import PolarsBigQueryIOManager

    from cbi_platform.defs.resources import build_resources

    local = build_resources({"CBI_HOME": "/tmp/cbi-test-home"})
    prod = build_resources(
        {"CBI_WAREHOUSE": "bigquery", "CBI_GCP_PROJECT": "p", "CBI_BQ_DATASET": "d"}
    )
    assert isinstance(local["io_manager"], DuckDBPolarsIOManager)
    assert isinstance(prod["io_manager"], PolarsBigQueryIOManager)
    assert local["market_source"].kind == "simulated"
    assert isinstance(dg.Definitions(resources=prod), dg.Definitions)


def test_the_daily_loop_is_scheduled_and_watched_by_sensors():
    defs, graph = _graph()
    schedule = defs.resolve_schedule_def("daily_refresh_schedule")
    assert schedule.job_name == "daily_refresh_job"
    assert schedule.execution_timezone == "America/Chicago"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    sensors = {s.name: s for s in defs.sensors}
    assert {"alert_sensor", "retraining_sensor", "failed_run_alert_sensor"} <= set(sensors)
    assert sensors["retraining_sensor"].job_name == "retrain_job"
    refresh = defs.resolve_job_def("daily_refresh_job")
    nodes = {n.name for n in refresh.graph.nodes}
    # The refresh never retrains: no walk-forward step in it.
    assert "member_models" not in nodes and "live_forecasts" in nodes
    checks = {spec.name: spec for c in ALL_CHECKS for spec in c.check_specs}
    assert checks["live_features_leakage"].blocking
    assert not checks["correlation_break"].blocking


def test_deployment_settings_from_the_environment_are_checked() -> None:
    """CBI_HORIZONS and CBI_PROTOCOL_OVERRIDES reach the resources; a typo is a clear error."""
    from cbi_platform.defs.resources import build_resources

    env = {
        "CBI_HOME": "/tmp/cbi-test-env-settings",
        "CBI_HORIZONS": "1w, 1m",
        "CBI_PROTOCOL_OVERRIDES": '{"span": 110, "model_kinds": ["benchmark"]}',
    }
    resources = build_resources(env)
    assert resources["operations"].horizons == ["1w", "1m"]
    assert resources["protocol"].span == 110
    assert resources["protocol"].model_kinds == ["benchmark"]
    with pytest.raises(ValueError, match="CBI_HORIZONS='2w'"):
        build_resources({**env, "CBI_HORIZONS": "2w"})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['spam'\]"):
        build_resources({**env, "CBI_PROTOCOL_OVERRIDES": '{"spam": 1}'})
    with pytest.raises(ValueError, match="not JSON"):
        build_resources({**env, "CBI_PROTOCOL_OVERRIDES": "span=110"})


def test_operations_sensors_tick_often_under_the_simulated_clock(monkeypatch, tmp_path) -> None:
    from cbi_platform import clock
    from cbi_platform.defs.operations.sensors import build_sensors
    from cbi_platform.defs.pipeline import retrain_job

    timed = ("alert_sensor", "alert_digest_sensor", "retraining_sensor")
    monkeypatch.delenv(clock.CLOCK_ENV, raising=False)
    monkeypatch.delenv(clock.SENSOR_INTERVAL_ENV, raising=False)
    real = {s.name: s.minimum_interval_seconds for s in build_sensors(retrain_job, ALL_CHECKS)}
    assert [real[n] for n in timed] == [60, 600, 60]
    monkeypatch.setenv(clock.CLOCK_ENV, str(tmp_path / "clock"))
    soak = {s.name: s.minimum_interval_seconds for s in build_sensors(retrain_job, ALL_CHECKS)}
    assert [soak[n] for n in timed] == [5, 5, 5]
