"""The walk-forward's past zones, published for the page: the ensemble's rows with an outcome,
one atomic Parquet file per horizon."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from cbi_platform.serving.walk_forward_zones import (
    parse_walk_forward_zones,
    publish_walk_forward_zones,
    zones_path,
)


def _zones() -> pl.DataFrame:
    day = dt.date(2024, 1, 2)
    base = {"horizon": "1w", "price": 40.0, "p10": 38.0, "p30": 39.5, "p50": 40.0, "p70": 40.5}
    rows = [
        {**base, "model": "ensemble", "role": "scored", "actual": 41.0, "origin": day},
        {**base, "model": "random_walk", "role": "scored", "actual": 41.0, "origin": day},
        {**base, "model": "ensemble", "role": "live", "actual": None, "origin": day},
        {
            **base,
            "model": "ensemble",
            "role": "calibration",
            "actual": 39.0,
            "origin": day - dt.timedelta(days=1),
        },  # fmt: skip
    ]
    frame = pl.DataFrame(rows).with_columns(
        p90=pl.lit(42.0), target_date=pl.col("origin") + pl.duration(days=7)
    )
    return frame


def test_only_the_ensembles_rows_with_an_outcome_are_published_oldest_first(tmp_path):
    path = publish_walk_forward_zones(tmp_path, "1w", _zones())
    assert path == zones_path(tmp_path, "1w") and path.exists()
    frame = parse_walk_forward_zones(path.read_bytes())
    assert frame["actual"].to_list() == [39.0, 41.0]
    assert frame["role"].to_list() == ["calibration", "scored"]
    assert set(frame.columns) >= {"origin", "target_date", "p10", "p30", "p50", "p70", "p90"}
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


def test_an_unknown_horizon_has_no_path(tmp_path):
    with pytest.raises(ValueError, match="unknown horizon"):
        zones_path(tmp_path, "2w")
