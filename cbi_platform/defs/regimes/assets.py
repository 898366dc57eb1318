"""Regime assets: the hindsight calendar and per-regime datasets with sample weights."""

import dagster as dg
import polars as pl

from cbi_platform.defs.partitions import PARTITION_EXPR, horizon_backfill, horizon_partitions
from cbi_platform.defs.resources import MarketSourceResource, PlatformHome, ProtocolResource
from cbi_platform.features.contract import horizon_frame
from cbi_platform.regimes.calendar import DEFAULT_CALENDAR_PATH, load_regime_calendar
from cbi_platform.regimes.datasets import write_regime_datasets
from cbi_platform.regimes.detected import (
    label_regimes,
    regime_outlook,
    walk_forward_regime_scores,
)
from cbi_platform.reporting import markdown_table


@dg.asset(
    group_name="regimes",
    kinds={"polars", "duckdb", "yaml"},
    description="The regime calendar: windows with known_from and source (hindsight as "
    "written; training weights read it point in time).",
)
def regime_calendar() -> dg.Output[pl.DataFrame]:
    calendar = load_regime_calendar()
    table = pl.DataFrame(
        [
            {
                "regime": w.name,
                "start": w.start,
                "end": w.end,
                "weight": w.weight,
                "known_from": w.known_from,
                "source": w.source,
            }
            for w in calendar.windows
        ]
        + [
            {
                "regime": calendar.default_name,
                "start": None,
                "end": None,
                "weight": calendar.default_weight,
                "known_from": None,
                "source": None,
            }
        ],
        schema={
            "regime": pl.Utf8,
            "start": pl.Date,
            "end": pl.Date,
            "weight": pl.Float64,
            "known_from": pl.Date,
            "source": pl.Utf8,
        },
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
    description="One Parquet per calendar regime of the horizon's features, with regime weights "
    "(HINDSIGHT exports: training weights are read point in time instead).",
)
def regime_datasets(
    context: dg.AssetExecutionContext, features: pl.DataFrame, home: PlatformHome
) -> dg.Output[pl.DataFrame]:
    calendar = load_regime_calendar()
    summaries = []
    for horizon in context.partition_keys:
        frame = horizon_frame(features, horizon)
        summary = write_regime_datasets(frame, calendar, home.folder("regime_datasets", horizon))
        summaries.append(summary.with_columns(horizon=pl.lit(horizon)))
    table = pl.concat(summaries)
    return dg.Output(
        table,
        metadata={
            "dagster/row_count": table.height,
            "hindsight": dg.MetadataValue.md(
                "These exports label every row with the calendar as written today (hindsight). "
                "Models never train on these labels: walk-forward weights read the calendar "
                "point in time (a window counts from its `known_from`, clipped to the origin)."
            ),
            "datasets": dg.MetadataValue.md(markdown_table(table)),
        },
    )


@dg.asset(
    group_name="regimes",
    kinds={"lightgbm", "polars", "duckdb"},
    description="Detected regime per date (crisis/bull/bear/normal) from trailing data only, "
    "with the classifier's out-of-sample scores and next-month outlook.",
)
def detected_regimes(
    context: dg.AssetExecutionContext,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    protocol: ProtocolResource,
) -> dg.Output[pl.DataFrame]:
    target = market_source.target_prices(market_prices)
    dates, prices = target["date"], target["value"].to_numpy()
    labels = label_regimes(dates, prices)
    scores, _ = walk_forward_regime_scores(
        dates, prices, labels["regime"], n_folds=protocol.regime_folds
    )
    outlook = regime_outlook(dates, prices, labels["regime"])
    score_table = pl.DataFrame([s.__dict__ for s in scores]) if scores else pl.DataFrame()
    counts = labels.group_by("regime").len().sort("regime")
    current = labels["regime"][-1]
    context.log.info(f"current regime {current}; next-month outlook {outlook}")
    return dg.Output(
        labels,
        metadata={
            "dagster/row_count": labels.height,
            "current_regime": str(current),
            "next_month_outlook": dg.MetadataValue.json(outlook),
            "classifier_out_of_sample": dg.MetadataValue.md(markdown_table(score_table)),
            "label_counts": dg.MetadataValue.md(markdown_table(counts)),
        },
    )
