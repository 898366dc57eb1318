"""The warehouse keeps partitions of one table whose columns differ (a horizon's own features):
new columns are added, rows are inserted by name, and `horizon_frame` hands each horizon only
the features it has."""

import dagster as dg
import duckdb
import polars as pl

from cbi_platform.defs.resources import WarehouseIOManager
from cbi_platform.features.contract import feature_columns, horizon_frame

PARTS = dg.StaticPartitionsDefinition(["1w", "1m"])


@dg.asset(partitions_def=PARTS, metadata={"partition_expr": "horizon"})
def features_like(context: dg.AssetExecutionContext) -> pl.DataFrame:
    h = context.partition_key
    frame = pl.DataFrame({"horizon": [h, h], "date": [1, 2], "f_a": [1.0, 2.0]})
    if h == "1w":  # only 1w has the extra feature, as with news sentiment
        frame = frame.with_columns(f_news=pl.Series([0.5, -0.5]))
    return frame


@dg.asset(partitions_def=PARTS, metadata={"partition_expr": "horizon"})
def reader(context: dg.AssetExecutionContext, features_like: pl.DataFrame) -> pl.DataFrame:
    return horizon_frame(features_like, context.partition_key)


def test_partitions_with_different_columns_share_a_table(tmp_path):
    db = tmp_path / "w.duckdb"
    io = WarehouseIOManager(database=str(db), schema="cbi")
    for key in ("1w", "1m", "1w"):  # 1w first (more columns), then 1m, then 1w again
        result = dg.materialize(
            [features_like, reader], partition_key=key, resources={"io_manager": io}
        )
        assert result.success
        got = result.output_for_node("reader")
        expected = ["f_a", "f_news"] if key == "1w" else ["f_a"]
        assert feature_columns(got) == expected, key
    with duckdb.connect(str(db), read_only=True) as con:
        table = con.sql("select * from cbi.features_like order by horizon, date").pl()
    assert table.height == 4  # the rewritten 1w partition replaced its rows, nothing doubled
    assert table.filter(pl.col("horizon") == "1m")["f_news"].null_count() == 2
    assert table.filter(pl.col("horizon") == "1w")["f_news"].to_list() == [0.5, -0.5]


def test_horizon_frame_keeps_a_feature_with_some_values():
    frame = pl.DataFrame(
        {"horizon": ["1m", "1m"], "f_a": [None, 1.0], "f_b": [None, None], "price": [None, None]}
    )
    out = horizon_frame(frame, "1m")
    assert out.columns == ["horizon", "f_a", "price"]  # only all-null feature columns go
