"""The warehouse IO manager: every connection under the warehouse lock, every store one
transaction, and no store from a run the instance says is over (failed, cancelled)."""

import subprocess
import sys
import threading
import time

import dagster as dg
import duckdb
import polars as pl
import pytest

from cbi_platform.defs.resources import WarehouseIOManager
from cbi_platform.storage import (
    DEAD_RUN_STATUSES,
    fenced_write_reason,
    read_connection,
    write_lock,
)


@pytest.mark.parametrize("status", sorted(DEAD_RUN_STATUSES))
def test_a_dead_run_is_refused(status):
    reason = fenced_write_reason("r1", status)
    assert reason and "r1" in reason and status in reason


@pytest.mark.parametrize("status", [None, "QUEUED", "STARTING", "STARTED", "SUCCESS"])
def test_a_live_or_unknown_run_writes(status):
    assert fenced_write_reason("r1", status) is None


def _value(db) -> list:
    with read_connection(db) as con:
        return con.sql("select value from cbi.prices order by value").fetchall()


def _prices(value, die=None):
    """An asset writing one row `value`; `die` marks its own run over before it returns (the
    instance's verdict on a run whose worker was lost while this step went on)."""

    @dg.asset(name="prices")
    def prices(context: dg.AssetExecutionContext) -> pl.DataFrame:
        if die is not None:
            die(context.instance, context.dagster_run)
        return pl.DataFrame({"value": [value]})

    return prices


@pytest.mark.parametrize(
    "die",
    [
        lambda instance, run: instance.report_run_failed(run),
        lambda instance, run: instance.report_run_canceling(run),
        lambda instance, run: instance.report_run_canceled(run),
    ],
    ids=["failed", "canceling", "canceled"],
)
def test_a_run_marked_over_writes_nothing(tmp_path, die):
    db = tmp_path / "warehouse.duckdb"
    io = WarehouseIOManager(database=str(db), schema="cbi")
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([_prices(1)], resources={"io_manager": io}, instance=instance).success
    result = dg.materialize(
        [_prices(2, die)], resources={"io_manager": io}, instance=instance, raise_on_error=False
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    causes = [error, *([error.cause] if error.cause else [])]
    assert any(c.cls_name == "FencedWriteError" for c in causes), error.to_string()
    assert "writes no results" in error.to_string()
    assert _value(db) == [(1,)]  # the earlier result stands, nothing deleted or half-written


def test_a_store_that_fails_halfway_leaves_the_table_as_it_was(tmp_path):
    """Delete-then-insert is one transaction: an insert that fails rolls the delete back."""
    db = tmp_path / "warehouse.duckdb"
    io = WarehouseIOManager(database=str(db), schema="cbi")

    @dg.asset(name="prices")
    def bad() -> pl.DataFrame:
        return pl.DataFrame({"value": ["not a number"]})  # the table's column is an integer

    assert dg.materialize([_prices(1)], resources={"io_manager": io}).success
    assert not dg.materialize([bad], resources={"io_manager": io}, raise_on_error=False).success
    assert _value(db) == [(1,)]


def test_loads_and_stores_wait_for_the_lock_and_leave_the_file_free(tmp_path):
    """A holder of the lock (another process's store, a reader) makes the IO manager wait
    instead of failing on DuckDB's own lock; after the run no connection is left open."""
    db = tmp_path / "warehouse.duckdb"
    io = WarehouseIOManager(database=str(db), schema="cbi")

    @dg.asset(name="doubled")
    def doubled(prices: pl.DataFrame) -> pl.DataFrame:
        return prices.with_columns(pl.col("value") * 2)

    held = threading.Event()

    def hold():
        with write_lock(db):
            held.set()
            time.sleep(1.0)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    started = time.perf_counter()
    assert dg.materialize([_prices(3), doubled], resources={"io_manager": io}).success
    waited = time.perf_counter() - started
    holder.join()
    assert waited >= 0.9
    # Another process can open the file read-write at once: nothing holds it open.
    code = f"import duckdb; duckdb.connect({str(db)!r}).close()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.sql("select value from cbi.doubled").fetchall() == [(6,)]
