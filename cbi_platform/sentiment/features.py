"""Daily news-sentiment features from scored articles, point in time.

One row per business day (Monday-Friday) from the first article's day to the last (or `end`):
the row for day t uses only articles whose `published_at` is <= t, and is itself published at
t (`published_at = date`), so `features.build.asof_join` joins it like any daily series. An
article stamped on a weekend counts from the next Monday.

- `f_news_count`: articles in the trailing `window` business days (t included); 0 when none.
- `f_news_sent_mean`: their mean score; **null when there are none** (no news is not neutral
  news; the count says "none", and models impute or split on the null).
- `f_news_sent_disp`: their standard deviation (ddof 1); null with fewer than 2 articles.
- `f_news_sent_surprise`: the mean minus the mean score of the articles in the trailing
  `surprise_window` business days (article-weighted); null when either is null.
The first `window - 1` (resp. `surprise_window - 1`) days have no full window and are null.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

NEWS_SERIES = "NEWS_SENTIMENT"  # the name notices and staleness rules use for this series
SENTIMENT_WINDOW_DAYS = 5
SURPRISE_WINDOW_DAYS = 63
SCORE = "sentiment_score"
F_MEAN = "f_news_sent_mean"
F_DISP = "f_news_sent_disp"
F_COUNT = "f_news_count"
F_SURPRISE = "f_news_sent_surprise"
SENTIMENT_FEATURES = (F_MEAN, F_DISP, F_COUNT, F_SURPRISE)
DAILY_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "published_at": pl.Date(),
    F_MEAN: pl.Float64(),
    F_DISP: pl.Float64(),
    F_COUNT: pl.Int64(),
    F_SURPRISE: pl.Float64(),
}


def news_day(published_at: pl.Expr) -> pl.Expr:
    """The business day an article first counts on: its own date, a weekend rolled to Monday."""
    return published_at.cast(pl.Date).dt.add_business_days(0, roll="forward")


def daily_sentiment(
    scored: pl.DataFrame,
    *,
    window: int = SENTIMENT_WINDOW_DAYS,
    surprise_window: int = SURPRISE_WINDOW_DAYS,
    end: dt.date | None = None,
    score_column: str = SCORE,
) -> pl.DataFrame:
    """Daily features (DAILY_SCHEMA) from scored articles (`published_at`, `score_column`)."""
    if window < 1 or surprise_window < window:
        raise ValueError(f"need 1 <= window <= surprise_window, got {window}, {surprise_window}")
    rows = scored.select(
        news_day(pl.col("published_at")).alias("day"), pl.col(score_column).cast(pl.Float64)
    ).filter(pl.col("day").is_not_null() & pl.col(score_column).is_finite())
    if rows.height == 0:
        return pl.DataFrame(schema=DAILY_SCHEMA)
    first, last = rows["day"].min(), rows["day"].max()
    if end is not None and end > last:
        last = end
    calendar = pl.DataFrame({"date": pl.date_range(first, last, "1d", eager=True)}).filter(
        pl.col("date").dt.weekday() <= 5
    )
    per_day = rows.group_by("day").agg(
        n=pl.len().cast(pl.Float64),
        s=pl.col(score_column).sum(),
        q=(pl.col(score_column) ** 2).sum(),
    )
    daily = (
        calendar.join(per_day, left_on="date", right_on="day", how="left")
        .sort("date")
        .with_columns(pl.col("n", "s", "q").fill_null(0.0))
    )

    def trailing(column: str, k: int) -> pl.Expr:
        # Each window summed afresh (no running sum): a row's value depends on its own k days
        # only, exactly, wherever the calendar starts. Null until k days exist.
        total = pl.sum_horizontal(pl.col(column).shift(j) for j in range(k))
        return pl.when(pl.int_range(pl.len()) >= k - 1).then(total)

    n, s, q = trailing("n", window), trailing("s", window), trailing("q", window)
    n_long, s_long = trailing("n", surprise_window), trailing("s", surprise_window)
    mean = pl.when(n > 0).then(s / n)
    variance = pl.when(n >= 2).then(((q - s * s / n) / (n - 1)).clip(lower_bound=0.0))
    long_mean = pl.when(n_long > 0).then(s_long / n_long)
    return daily.select(
        pl.col("date"),
        pl.col("date").alias("published_at"),
        mean.alias(F_MEAN),
        variance.sqrt().alias(F_DISP),
        n.round(0).cast(pl.Int64).alias(F_COUNT),
        (mean - long_mean).alias(F_SURPRISE),
    ).cast(DAILY_SCHEMA)
