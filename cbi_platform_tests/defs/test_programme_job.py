"""The buyer's programme backtest as a Dagster run: the sensor turns queued rows into run
requests (none for cached ones), the job runs in process on a small home and writes a ready
result that reproduces the platform's own procurement_backtest asset for the default
programme, a failure is written as failed, and the job has a lane of its own."""

from __future__ import annotations

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

from cbi_platform.accounts import programmes as pg
from cbi_platform.accounts.store import AccountStore
from cbi_platform.defs.pipeline import ALL_ASSETS, BACKTEST, LANE
from cbi_platform.defs.procurement.programme import (
    BUYER_LANE,
    programme_backtest_job,
    programme_backtest_sensor,
    run_config,
)
from cbi_platform.defs.resources import build_resources
from cbi_platform_tests.accounts.programme_home import write_warehouse
from cbi_platform_tests.api.conftest import build_home
from cbi_platform_tests.defs.test_run_lanes import ROOT

AS_OF = "2025-03-28"  # the api home's last served day


@pytest.fixture
def home(tmp_path):
    built = build_home(tmp_path / "home")
    assert str(built.last_day) == AS_OF
    write_warehouse(built.path)
    return built.path


def _resources(home):
    resources = build_resources({"CBI_HOME": str(home), "CBI_SOURCE": "simulated"})
    return {k: resources[k] for k in ("home", "market_source", "forecast_store", "io_manager")}


def _sensor(home, instance=None):
    context = dg.build_sensor_context(
        resources={"home": _resources(home)["home"]},
        instance=instance or dg.DagsterInstance.ephemeral(),
    )
    return programme_backtest_sensor(context)


def _execute(home, request, instance=None):
    return programme_backtest_job.execute_in_process(
        run_config=request.run_config,
        resources=_resources(home),
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_the_sensor_asks_one_run_per_queued_programme_and_none_for_cached(home):
    # a home without an accounts store: skipped, and no store created by the tick
    skipped = _sensor(home)
    assert isinstance(skipped, dg.SkipReason) and "no accounts store yet" in skipped.skip_message
    assert not (home / "accounts.sqlite3").exists()
    store = AccountStore.for_home(home, env={})
    store.migrate()
    assert _sensor(home).run_requests == []
    default = pg.default_programme()
    other = pg.validate_programme({**default.as_json(), "total_lb": None, "window_days": 63})
    pg.request_backtest(store, default, AS_OF)
    pg.request_backtest(store, default, AS_OF)  # twice: still one row, one request
    pg.request_backtest(store, other, AS_OF)
    requests = _sensor(home).run_requests
    queued = pg.queued_backtests(store)
    assert [r.run_key for r in requests] == [q.run_key for q in queued]
    assert len(requests) == 2
    by_hash = {q.programme_hash: q for q in queued}
    for request in requests:
        config = request.run_config["ops"]["programme_backtest"]["config"]
        q = by_hash[config["programme_hash"]]
        assert request.run_config == run_config(q)
        assert config["as_of"] == AS_OF and config["window_days"] == q.programme.window_days
        assert request.run_key.startswith(f"programme-{q.programme_hash[:16]}-{AS_OF}-")
        assert request.tags["cbi/programme"] == q.programme_hash[:16]
    # once ready (cached), nothing is asked for it again
    pg.mark_ready(store, pg.programme_hash(default), {"windows": 1}, AS_OF)
    pg.mark_ready(store, pg.programme_hash(other), {"windows": 1}, AS_OF)
    assert _sensor(home).run_requests == []


def test_the_job_writes_a_ready_result_that_reproduces_the_platforms_backtest(home):
    store = AccountStore.for_home(home, env={})
    default = pg.default_programme()
    pg.request_backtest(store, default, AS_OF)
    [request] = _sensor(home).run_requests
    run = _execute(home, request)
    assert run.success
    status = pg.backtest_status(store, default, AS_OF)
    assert status["status"] == "ready" and status["run_id"] == run.run_id
    assert not status["outdated"]
    result = status["result"]
    assert result["as_of"] == AS_OF and result["recommended_policy"] == "even"
    # the platform's own asset on the same warehouse: the same windows and even-buying costs
    materialized = dg.materialize(
        ALL_ASSETS,
        selection=BACKTEST,
        resources=build_resources({"CBI_HOME": str(home), "CBI_SOURCE": "simulated"}),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert materialized.success
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        windows = con.sql("select * from cbi.procurement_backtest").pl()
    even = windows.filter(pl.col("policy") == "even")["cost_cents"]
    assert result["windows"] == even.len()
    assert result["record"]["even"]["mean_cents"] == pytest.approx(even.mean(), rel=1e-12)
    assert result["record"]["even"]["p10_cents"] == pytest.approx(even.quantile(0.1, "linear"))
    assert result["record"]["even"]["p90_cents"] == pytest.approx(even.quantile(0.9, "linear"))
    coming = result["coming_window"]["even"]
    assert coming["p10_cents"] <= coming["p50_cents"] <= coming["p90_cents"]
    assert _sensor(home).run_requests == []  # ready: cached


def test_a_home_without_decision_forecasts_fails_with_the_message(home):
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute("drop table cbi.decision_forecasts")
    store = AccountStore.for_home(home, env={})
    default = pg.default_programme()
    pg.request_backtest(store, default, AS_OF)
    [request] = _sensor(home).run_requests
    run = _execute(home, request)
    assert not run.success
    status = pg.backtest_status(store, default, AS_OF)
    assert status["status"] == "failed" and status["run_id"] == run.run_id
    assert "has no decision_forecasts" in status["error"]
    assert "make run" in status["error"]
    again, queued = pg.request_backtest(store, default, AS_OF)  # may be asked for again
    assert queued and [r.run_key for r in _sensor(home).run_requests] != [request.run_key]


def test_a_running_backtest_whose_run_died_is_marked_failed(home):
    store = AccountStore.for_home(home, env={})
    default = pg.default_programme()
    pg.request_backtest(store, default, AS_OF)
    instance = dg.DagsterInstance.ephemeral()
    [queued] = pg.queued_backtests(store)
    dead = instance.create_run_for_job(programme_backtest_job, run_config=run_config(queued))
    instance.report_run_failed(dead)
    pg.mark_running(store, pg.programme_hash(default), dead.run_id)
    _sensor(home, instance)
    status = pg.backtest_status(store, default, AS_OF)
    assert status["status"] == "failed" and dead.run_id in status["error"]


def _lanes(config: dict) -> dict[str, int]:
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    return {e["value"]: e["limit"] for e in limits if e["key"] == LANE}


def test_the_job_runs_in_the_buyer_lane_of_one(tmp_path):
    from cbi_platform.definitions import defs
    from cbi_platform.stack.config import dagster_yaml_text
    from cbi_platform.stack.config import load_config as load_stack_config

    assert BUYER_LANE == {LANE: "buyer"}
    assert programme_backtest_job.tags[LANE] == "buyer"
    assert _lanes(yaml.safe_load((ROOT / "dagster.yaml").read_text()))["buyer"] == 1
    # the production stack's generated instance config carries the lane too
    stack = load_stack_config(tmp_path / "stack", env={"CBI_HOME": str(tmp_path / "home")})
    assert _lanes(yaml.safe_load(dagster_yaml_text(stack)))["buyer"] == 1

    assert defs.resolve_job_def("programme_backtest_job").run_tags[LANE] == "buyer"
    assert defs.resolve_sensor_def("programme_backtest_sensor").job_name == (
        "programme_backtest_job"
    )
