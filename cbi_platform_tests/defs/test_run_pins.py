"""Runs of two lanes share the warehouse: a retrain and the daily refresh both rebuild the market
tables. Each run reads one version of them, the one it wrote or first read (its pin), even when
the other lane writes a newer one between its steps."""

import dagster as dg
import polars as pl

from cbi_platform.defs.resources import (
    PIN_SCHEMA,
    RUN_PINNED_TABLES,
    WarehouseIOManager,
    pin_table,
)
from cbi_platform.storage import read_connection, write_connection


def _other_lane_writes(db, value):
    """What a refresh's store does to the shared table while this run is between steps."""
    with write_connection(db) as con:
        con.execute("create schema if not exists cbi")
        con.execute("create or replace table cbi.market_prices as select ? as value", [value])


def _pins(db) -> list[str]:
    with read_connection(db) as con:
        return [
            r[0]
            for r in con.execute(
                "select table_name from information_schema.tables where table_schema = ?",
                [PIN_SCHEMA],
            ).fetchall()
        ]


def _assets(db, seen):
    @dg.asset(name="market_prices")
    def market_prices() -> pl.DataFrame:
        return pl.DataFrame({"value": [1]})

    @dg.asset(deps=[market_prices])
    def middle() -> pl.DataFrame:
        _other_lane_writes(db, 2)  # a refresh lands between this run's steps
        return pl.DataFrame({"x": [0]})

    @dg.asset
    def late(market_prices: pl.DataFrame, middle: pl.DataFrame) -> pl.DataFrame:
        seen.append(market_prices["value"][0])
        return market_prices

    return market_prices, middle, late


def test_a_run_reads_the_market_table_it_wrote_not_the_other_lanes(tmp_path):
    db = str(tmp_path / "w.duckdb")
    seen: list[int] = []
    io = WarehouseIOManager(database=db, schema="cbi")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            list(_assets(db, seen)), resources={"io_manager": io}, instance=instance
        )
        assert result.success
        assert seen == [1], "the late step read the other lane's version, not its run's"
        # The shared table itself holds the newest write (last writer wins), and the pin of the
        # finished run is dropped by the next run's pin.
        with read_connection(db) as con:
            assert con.execute("select value from cbi.market_prices").fetchone()[0] == 2
        assert _pins(db) == [pin_table("market_prices", result.run_id)]
        seen.clear()
        second = dg.materialize(
            list(_assets(db, seen)), resources={"io_manager": io}, instance=instance
        )
        assert seen == [1]
        assert _pins(db) == [pin_table("market_prices", second.run_id)]


def test_a_run_that_only_reads_keeps_the_version_it_first_read(tmp_path):
    db = str(tmp_path / "w.duckdb")
    _other_lane_writes(db, 7)
    seen: list[int] = []

    @dg.asset(name="market_prices")
    def market_prices() -> pl.DataFrame:  # defined, not materialized by this run
        return pl.DataFrame({"value": [0]})

    @dg.asset
    def first(market_prices: pl.DataFrame) -> pl.DataFrame:
        seen.append(market_prices["value"][0])
        _other_lane_writes(db, 8)
        return market_prices

    @dg.asset
    def second(market_prices: pl.DataFrame, first: pl.DataFrame) -> pl.DataFrame:
        seen.append(market_prices["value"][0])
        return first

    io = WarehouseIOManager(database=db, schema="cbi")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [market_prices, first, second],
            selection=[first.key, second.key],
            resources={"io_manager": io},
            instance=instance,
        )
    assert result.success
    assert seen == [7, 7]


def test_the_pinned_tables_are_exactly_what_a_training_run_and_the_refresh_both_write():
    from cbi_platform.definitions import defs
    from cbi_platform.defs import pipeline

    graph = defs.resolve_asset_graph()

    def written(job) -> set:
        return set(job.selection.resolve(graph))

    refresh = written(pipeline.daily_refresh_job)
    shared = set()
    for job in (pipeline.market_data_job, pipeline.retrain_job, pipeline.horizon_job):
        shared |= {k for k in written(job) & refresh if not graph.get(k).partitions_def}
    assert {k.path[-1] for k in shared} == set(RUN_PINNED_TABLES)
