"""New days to ingest: the simulator's live mode, appended file rows, and the replay wrapper."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cbi_platform.market.replay import published_by
from cbi_platform.market.schema import MarketDataError
from cbi_platform.market.sources import SourceConfig, load_market, reference_date, simulator_end


def test_live_simulator_ends_today_and_a_new_day_never_changes_earlier_days():
    config = SourceConfig(kind="simulated", simulator_live=True)
    assert simulator_end(config) == dt.date.today() == reference_date(config)
    start = dt.date(2019, 1, 1)  # a short window keeps the test fast; same streams as live
    monday = dt.date(2026, 11, 30)
    today = load_market(SourceConfig(simulator_end=monday)).prices
    tomorrow = load_market(SourceConfig(simulator_end=monday + dt.timedelta(days=1))).prices
    new = tomorrow.filter(pl.col("date") > monday)
    assert new.height > 0 and new["date"].unique().to_list() == [monday + dt.timedelta(days=1)]
    kept = tomorrow.filter(pl.col("published_at") <= monday)
    assert_frame_equal(kept.filter(pl.col("date") >= start), today.filter(pl.col("date") >= start))


def test_the_replay_wrapper_withholds_everything_published_after_the_day():
    bundle = load_market(SourceConfig(simulator_end=dt.date(2020, 6, 30)))
    day = dt.date(2020, 3, 18)  # a Wednesday: last week's COT (as of Tuesday) is not out yet
    seen = published_by(bundle, day)
    assert seen.prices["published_at"].max() <= day and seen.as_of == day
    cot = seen.prices.filter(pl.col("symbol") == "COT_ZL")
    assert cot["date"].max() < day - dt.timedelta(days=7)  # Tue 10th is published Mon 16th
    assert seen.news["published_at"].max() <= day
    # The same as a source configured to replay through that day.
    replayed = load_market(SourceConfig(simulator_end=dt.date(2020, 6, 30), replay_through=day))
    assert_frame_equal(replayed.prices, seen.prices)
    assert reference_date(SourceConfig(replay_through=day)) == day
    with pytest.raises(MarketDataError, match="no ZL price was published by 1990-01-01"):
        published_by(bundle, dt.date(1990, 1, 1))


def test_the_files_source_picks_up_appended_rows(small_manifest):
    config = SourceConfig(kind="files", manifest=str(small_manifest))
    before = load_market(config).prices
    zl = small_manifest.parent / "zl.csv"
    last = before.filter(pl.col("symbol") == "ZL")["date"].max()
    new_day = last + dt.timedelta(days=3 if last.weekday() == 4 else 1)
    with zl.open("a") as handle:
        handle.write(f"{new_day},41.5\n")
    after = load_market(config).prices.filter(pl.col("symbol") == "ZL")
    assert after["date"].max() == new_day and after["value"][-1] == 41.5
