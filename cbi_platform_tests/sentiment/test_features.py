"""Daily sentiment features are point in time: a row at t reads only articles published by t."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cbi_platform.sentiment.features import (
    DAILY_SCHEMA,
    F_COUNT,
    F_DISP,
    F_MEAN,
    F_SURPRISE,
    daily_sentiment,
)
from cbi_platform_tests.features.conftest import business_days
from cbi_platform_tests.sentiment.conftest import scored_articles

DAYS = business_days(dt.date(2020, 1, 6), 400)


def _scored(rows: list[tuple[dt.date, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"published_at": pl.Date, "sentiment_score": pl.Float64}, orient="row"
    )


def test_hand_example_mean_dispersion_count_and_no_news_days():
    mon, tue, wed = dt.date(2021, 3, 1), dt.date(2021, 3, 2), dt.date(2021, 3, 3)
    sat = dt.date(2021, 3, 6)  # counts from Monday 03-08
    scored = _scored([(mon, 0.5), (mon, -0.1), (wed, 0.2), (sat, -0.6)])
    daily = daily_sentiment(scored, window=3, surprise_window=5, end=dt.date(2021, 3, 16))
    assert daily.schema == pl.Schema(DAILY_SCHEMA)
    rows = {r["date"]: r for r in daily.iter_rows(named=True)}
    assert dt.date(2021, 3, 6) not in rows and dt.date(2021, 3, 16) in rows  # business days
    assert all(r["published_at"] == d for d, r in rows.items())
    assert rows[tue][F_COUNT] is None  # no full 3-day window yet
    wednesday = rows[wed]
    assert wednesday[F_COUNT] == 3
    assert wednesday[F_MEAN] == pytest.approx(0.2)
    assert wednesday[F_DISP] == pytest.approx(np.std([0.5, -0.1, 0.2], ddof=1))
    friday = rows[dt.date(2021, 3, 5)]  # window Wed..Fri: one article
    assert friday[F_COUNT] == 1 and friday[F_MEAN] == pytest.approx(0.2)
    # surprise: 0.2 minus the mean of the 5-day window Mon..Fri (0.5, -0.1, 0.2)
    assert friday[F_DISP] is None and friday[F_SURPRISE] == pytest.approx(0.0)
    monday = rows[dt.date(2021, 3, 8)]  # the Saturday article, window Thu..Mon
    assert monday[F_COUNT] == 1 and monday[F_MEAN] == pytest.approx(-0.6)
    assert monday[F_SURPRISE] == pytest.approx(-0.6 - (0.2 - 0.6) / 2)  # 5 days: Tue..Mon
    quiet = rows[dt.date(2021, 3, 12)]  # no article Wed 10 .. Fri 12: count 0, mean null
    assert quiet[F_COUNT] == 0 and quiet[F_MEAN] is None and quiet[F_SURPRISE] is None


def test_appending_future_articles_leaves_past_rows_unchanged():
    scored = scored_articles(DAYS, seed=3)
    cut = DAYS[250]
    past = daily_sentiment(scored.filter(pl.col("published_at") <= cut))
    full = daily_sentiment(scored)
    assert past.height > 200 and past["date"].max() <= cut
    assert_frame_equal(full.filter(pl.col("date") <= past["date"].max()), past)


@pytest.mark.parametrize("offset", [1, 3, 40])
def test_a_planted_article_after_t_changes_nothing_at_t(offset):
    scored = scored_articles(DAYS, seed=5)
    t = DAYS[200]
    planted = pl.concat([scored, _scored([(DAYS[200 + offset], 0.99)] * 3)])
    before, after = daily_sentiment(scored), daily_sentiment(planted)
    upto = pl.col("date") <= t
    assert_frame_equal(after.filter(upto), before.filter(upto))
    day = pl.col("date") == DAYS[200 + offset]
    assert after.filter(day)[F_COUNT][0] == before.filter(day)[F_COUNT][0] + 3


def test_no_articles_gives_an_empty_frame_with_the_schema():
    empty = daily_sentiment(_scored([]))
    assert empty.height == 0 and empty.schema == pl.Schema(DAILY_SCHEMA)
    with pytest.raises(ValueError, match="window"):
        daily_sentiment(_scored([]), window=10, surprise_window=5)
