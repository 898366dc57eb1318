"""The `bigquery` source: the canonical tables read from BigQuery with parameterized queries.

The client is a `google.cloud.bigquery.Client` (from dagster-gcp's `BigQueryResource` in
Dagster); only `client.query(...).to_arrow()` is used, which is the boundary tests fake.
"""

from __future__ import annotations

import datetime as dt
import re

import polars as pl
from google.cloud import bigquery

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
    end = end or dt.date.today()
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
