"""The walk-forward's past target zones, published for the buyer's page (issue 22 §3).

A fresh home has served no forecast that has matured, so the page's "what past forecasts said"
chart shows the walk-forward test's zones instead, labelled as such. They live in the warehouse
(`target_zones`), which the API never opens; the `forecasts` asset publishes the served model's
(the ensemble's) past zones that have an outcome as one Parquet file per horizon, replaced
atomically, the way `storage.publish_snapshot` hands readers a snapshot.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from cbi_platform.settings import HORIZONS
from cbi_platform.storage import write_parquet_atomic

FOLDER = ("published", "walk_forward_zones")
COLUMNS = ("horizon", "origin", "target_date", "role", "price", "p10", "p30", "p50", "p70", "p90")
ENSEMBLE = "ensemble"


def zones_path(home: str | Path, horizon: str) -> Path:
    """Where the walk-forward zones of `horizon` are published under `home`."""
    if horizon not in HORIZONS:
        raise ValueError(f"unknown horizon {horizon!r}; one of {list(HORIZONS)}")
    return Path(home).joinpath(*FOLDER, f"{horizon}.parquet")


def past_walk_forward_zones(zones: pl.DataFrame, horizon: str) -> pl.DataFrame:
    """The ensemble's walk-forward zones of `horizon` with a known outcome (the live row, whose
    outcome is unknown, is left out), oldest origin first."""
    frame = zones.filter(pl.col("actual").is_not_null() & pl.col("p10").is_not_null())
    if "model" in frame.columns:
        frame = frame.filter(pl.col("model") == ENSEMBLE)
    if "horizon" in frame.columns:
        frame = frame.filter(pl.col("horizon") == horizon)
    if "role" not in frame.columns:
        frame = frame.with_columns(role=pl.lit(None, dtype=pl.Utf8))
    return frame.with_columns(horizon=pl.lit(horizon)).select(*COLUMNS, "actual").sort("origin")


def publish_walk_forward_zones(home: str | Path, horizon: str, zones: pl.DataFrame) -> Path:
    """Write `past_walk_forward_zones(zones, horizon)` atomically; returns the path."""
    return write_parquet_atomic(past_walk_forward_zones(zones, horizon), zones_path(home, horizon))


def parse_walk_forward_zones(data: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data))
