"""A home for the programme tests: the warehouse tables a programme backtest reads
(decision_forecasts, market_prices), written with DuckDB the way the IO manager lays them out
(schema cbi), from the procurement tests' synthetic random-walk prices and forecasts; and
buyers in the accounts store."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from cbi_platform.accounts.store import AccountStore, utc_now
from cbi_platform_tests.procurement.conftest import forecast_frame, make_prices


def write_warehouse(
    home: Path,
    n_days: int = 400,
    seed: int = 11,
    prices: pl.DataFrame | None = None,
    forecasts_from: int = 0,
):
    """ZL closes (`prices`: date, price; default a seeded random walk of `n_days`) and
    random-walk decision forecasts (1w, 1m, 3m, all scored) for every day from row
    `forecasts_from`, as the pipeline's `series_from: scored` leaves them."""
    home.mkdir(parents=True, exist_ok=True)
    prices = make_prices(n_days, seed) if prices is None else prices
    forecasts = forecast_frame(prices, "random_walk", scored_from=0)
    first = prices["date"][forecasts_from]
    forecasts = forecasts.filter(pl.col("date") >= first)
    market_prices = prices.select(  # noqa: F841 (read by name in the SQL below)
        pl.lit("ZL").alias("symbol"),
        "date",
        value="price",
        unit=pl.lit("c/lb"),
        source=pl.lit("test"),
        published_at=pl.col("date"),
    )
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute("create schema if not exists cbi")
        con.execute("create or replace table cbi.market_prices as select * from market_prices")
        con.execute("create or replace table cbi.decision_forecasts as select * from forecasts")
    return forecasts, prices


def add_user(store: AccountStore, email: str, role: str = "buyer") -> int:
    now = utc_now()
    with store.transaction() as tx:
        return tx.insert(
            "INSERT INTO users (email, name, role, password_hash, created_at, "
            "password_changed_at) VALUES (?, ?, ?, ?, ?, ?)",
            (email, email.split("@")[0], role, "not-a-hash", now, now),
        )
