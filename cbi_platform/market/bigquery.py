"""The `bigquery` source: the canonical tables read from BigQuery with parameterized queries.

The client is a `google.cloud.bigquery.Client` (from dagster-gcp's `BigQueryResource` in
Dagster); only `client.query(...).to_arrow()` is used, which is the boundary tests fake.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import polars as pl
from google.cloud import bigquery

from cbi_platform import clock
from cbi_platform.market.schema import (
    MARKET_PRICES_SCHEMA,
    NEWS_SCHEMA,
    TARGET_SYMBOL,
    MarketBundle,
    MarketDataError,
    conform_news,
    conform_prices,
)

# project.dataset.table; names cannot be query parameters, so they are validated instead.
_TABLE_ID = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+){1,2}$")


def _table(name: str) -> str:
    if not _TABLE_ID.match(name):
        raise MarketDataError(
            f"BigQuery table name {name!r} is not of the form project.dataset.table: "
            "set bigquery_prices_table / bigquery_news_table in the market source config"
        )
    return f"`{name}`"


def prices_query(table: str) -> str:
    columns = ", ".join(MARKET_PRICES_SCHEMA)
    return (
        f"SELECT {columns} FROM {_table(table)} "
        "WHERE date BETWEEN @start_date AND @end_date ORDER BY symbol, date"
    )


def news_query(table: str) -> str:
    columns = ", ".join(NEWS_SCHEMA)
    return (
        f"SELECT {columns} FROM {_table(table)} "
        "WHERE published_at BETWEEN @start_date AND @end_date ORDER BY published_at"
    )


def _params(start: dt.date, end: dt.date) -> bigquery.QueryJobConfig:
    return bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("start_date", "DATE", start),
            bigquery.ScalarQueryParameter("end_date", "DATE", end),
        ]
    )


def load_bigquery_source(
    client,
    prices_table: str,
    news_table: str | None = None,
    start: dt.date = dt.date(2000, 1, 1),
    end: dt.date | None = None,
    target: str = TARGET_SYMBOL,
) -> MarketBundle:
    """Read the canonical tables; the result goes through the same validation as any source.

    The tables hold canonical symbols, so the target is ZL unless the caller says otherwise.
    """
    end = end or clock.today()
    prices = pl.from_arrow(
        client.query(prices_query(prices_table), job_config=_params(start, end)).to_arrow()
    )
    if prices.height == 0:
        raise MarketDataError(
            f"BigQuery table {prices_table} returned no rows between {start} and {end}"
        )
    notices: list[str] = []
    if news_table:
        news = pl.from_arrow(
            client.query(news_query(news_table), job_config=_params(start, end)).to_arrow()
        )
    else:
        news = pl.DataFrame(schema=NEWS_SCHEMA)
        notices.append("no BigQuery news table configured: news features are dropped")
    return MarketBundle(
        prices=conform_prices(prices),
        news=conform_news(news),
        target=target,
        notices=tuple(notices),
        as_of=None,
    )


# Rows of the last days before the cached end are read again: a late correction replaces them.
REVISION_DAYS = 7


def _write_atomic(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


def load_bigquery_incremental(
    client,
    prices_table: str,
    news_table: str | None,
    cache_dir: Path,
    start: dt.date = dt.date(2000, 1, 1),
    end: dt.date | None = None,
    target: str = TARGET_SYMBOL,
) -> MarketBundle:
    """The daily refresh's BigQuery read: only rows after the last loaded date (less a
    `REVISION_DAYS` overlap) are queried; earlier rows come from the local cache of previous
    loads (Parquet in `cache_dir`, replaced atomically). The first load reads everything."""
    prices_cache = cache_dir / "bigquery_prices.parquet"
    if not prices_cache.exists():
        bundle = load_bigquery_source(client, prices_table, news_table, start, end, target)
        _write_atomic(bundle.prices, prices_cache)
        _write_atomic(bundle.news, cache_dir / "bigquery_news.parquet")
        return bundle
    end = end or clock.today()
    cached = pl.read_parquet(prices_cache)
    since = cached["date"].max() - dt.timedelta(days=REVISION_DAYS)
    fresh = pl.from_arrow(
        client.query(prices_query(prices_table), job_config=_params(since, end)).to_arrow()
    )
    prices = conform_prices(
        pl.concat(
            [cached.filter(pl.col("date") < since), conform_prices(fresh)]
            if fresh.height
            else [cached],
            how="vertical_relaxed",
        )
    )
    news_cache = cache_dir / "bigquery_news.parquet"
    news = pl.read_parquet(news_cache) if news_cache.exists() else pl.DataFrame(schema=NEWS_SCHEMA)
    notices = [
        f"BigQuery {prices_table}: read {fresh.height} rows dated {since} or later; "
        f"{prices.height - fresh.height} earlier rows from the local cache"
    ]
    if news_table:
        fresh_news = pl.from_arrow(
            client.query(news_query(news_table), job_config=_params(since, end)).to_arrow()
        )
        news = conform_news(
            pl.concat(
                [news.filter(pl.col("published_at") < since), conform_news(fresh_news)],
                how="vertical_relaxed",
            )
        )
    else:
        notices.append("no BigQuery news table configured: news features are dropped")
    _write_atomic(prices, prices_cache)
    _write_atomic(news, news_cache)
    return MarketBundle(
        prices=prices, news=conform_news(news), target=target, notices=tuple(notices), as_of=None
    )
