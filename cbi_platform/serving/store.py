"""The append-only forecast history, keyed by (as_of, horizon, model_version), in DuckDB.

Every forecast ever issued stays, so monitoring can score each one when its target date
arrives. Re-issuing the same key is a no-op, never an overwrite.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl

DDL = """
CREATE SCHEMA IF NOT EXISTS cbi;
CREATE TABLE IF NOT EXISTS cbi.forecast_history (
    as_of DATE, horizon VARCHAR, model_version VARCHAR, target_date DATE,
    price DOUBLE, forecast DOUBLE, p10 DOUBLE, p30 DOUBLE, p50 DOUBLE, p70 DOUBLE, p90 DOUBLE,
    lo90 DOUBLE, hi90 DOUBLE, band_lo DOUBLE, band_hi DOUBLE, band_probability DOUBLE,
    statement VARCHAR, regime VARCHAR, regime_outlook VARCHAR, drivers VARCHAR,
    volatility DOUBLE, combiner VARCHAR, shrink_weight DOUBLE, data_last_date DATE,
    data_reference_date DATE, data_business_days_behind INTEGER, created_at TIMESTAMP,
    PRIMARY KEY (as_of, horizon, model_version)
);
"""


class ForecastStore:
    def __init__(self, database: str | Path):
        self.database = str(database)

    def _connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(self.database, read_only=read_only)
        if not read_only:
            con.execute(DDL)
        return con

    def append(self, rows: Sequence[dict]) -> int:
        """Insert new keys; existing keys are kept as issued. Returns the rows inserted."""
        if not rows:
            return 0
        frame = pl.DataFrame([{**r, "drivers": json.dumps(list(r["drivers"]))} for r in rows])
        with self._connect() as con:
            before = con.execute("SELECT count(*) FROM cbi.forecast_history").fetchone()[0]
            con.register("incoming", frame.to_arrow())
            columns = ", ".join(frame.columns)
            con.execute(
                f"INSERT INTO cbi.forecast_history ({columns}) SELECT {columns} FROM incoming "
                "ON CONFLICT DO NOTHING"
            )
            after = con.execute("SELECT count(*) FROM cbi.forecast_history").fetchone()[0]
        return after - before

    def history(self) -> pl.DataFrame:
        if not Path(self.database).exists():
            return pl.DataFrame()
        with self._connect() as con:
            return con.sql("SELECT * FROM cbi.forecast_history ORDER BY as_of, horizon").pl()

    def latest(self) -> pl.DataFrame:
        """The newest forecast per horizon (latest as_of, then latest creation)."""
        hist = self.history()
        if hist.height == 0:
            return hist
        return (
            hist.sort(["as_of", "created_at"])
            .group_by("horizon", maintain_order=True)
            .last()
            .with_columns(pl.col("drivers").str.json_decode(pl.List(pl.Utf8)))
        )
