"""Regime assets: the hindsight calendar and per-regime datasets with sample weights."""

import dagster as dg
import polars as pl

from cbi_platform.defs.partitions import PARTITION_EXPR, horizon_backfill, horizon_partitions
from cbi_platform.defs.resources import PlatformHome
from cbi_platform.regimes.calendar import DEFAULT_CALENDAR_PATH, load_regime_calendar
from cbi_platform.regimes.datasets import write_regime_datasets
from cbi_platform.reporting import markdown_table


@dg.asset(
    group_name="regimes",
    kinds={"polars", "duckdb", "yaml"},
    description="The regime calendar (hindsight; sample weights and exports only).",
)
def regime_calendar() -> dg.Output[pl.DataFrame]:
    calendar = load_regime_calendar()
    table = pl.DataFrame(
        [
            {"regime": w.name, "start": w.start, "end": w.end, "weight": w.weight}
            for w in calendar.windows
        ]
        + [{"regime": calendar.default_name, "start": None, "end": None, "weight": calendar.default_weight}],
        schema={"regime": pl.Utf8, "start": pl.Date, "end": pl.Date, "weight": pl.Float64},
    )
    return dg.Output(
        table,
        metadata={
            "dagster/row_count": table.height,
            "source_file": str(DEFAULT_CALENDAR_PATH),
            "calendar": dg.MetadataValue.md(markdown_table(table)),
        },
    )


@dg.asset(
    group_name="regimes",
    kinds={"polars", "parquet"},
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    metadata=PARTITION_EXPR,
    deps=[regime_calendar],
    description="One Parquet per calendar regime of the horizon's features, with regime weights.",
)
def regime_datasets(
    context: dg.AssetExecutionContext, features: pl.DataFrame, home: PlatformHome
) -> dg.Output[pl.DataFrame]:
    calendar = load_regime_calendar()
    summaries = []
    for horizon in context.partition_keys:
        frame = features.filter(pl.col("horizon") == horizon)
        summary = write_regime_datasets(frame, calendar, home.folder("regime_datasets", horizon))
        summaries.append(summary.with_columns(horizon=pl.lit(horizon)))
    table = pl.concat(summaries)
    return dg.Output(
        table,
        metadata={
            "dagster/row_count": table.height,
            "datasets": dg.MetadataValue.md(markdown_table(table)),
        },
    )
