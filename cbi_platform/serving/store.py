"""The append-only forecast history, keyed by (as_of, horizon, model_version), in DuckDB.

Every forecast ever issued stays, so monitoring can score each one when its target date
arrives. Re-issuing the same key is a no-op, never an overwrite. `model_version` is the version
whose numbers the row holds; `role` says whether the buyer was served it ("served") or it was
logged beside the champion in shadow mode ("shadow"; never served). Several processes share the
file (see `cbi_platform.storage`): the writer holds the cross-process write lock for a short
connection and publishes a Parquet snapshot; readers read the snapshot, never the DuckDB file.
The writer migrates an older table by adding the columns it lacks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl

from cbi_platform.results_sink import NullSink, ResultsSink
from cbi_platform.serving.record import Column, record_columns
from cbi_platform.storage import publish_snapshot, read_snapshot, write_connection

TABLE = "cbi.forecast_history"
KEY = ("as_of", "horizon", "model_version")
# The history's columns: every field of the forecast record, then the row's role in the history
# (not part of the forecast: the writer sets it). A column's type comes from the record.
ROLE = Column(
    name="role",
    python_type=str | None,
    duckdb_type="VARCHAR",
    polars_type=pl.Utf8(),
    doc='"served" (null in older rows) or "shadow"',
    added=True,
    json=False,
    api=None,
    always=False,
)
COLUMNS: tuple[Column, ...] = (*record_columns(), ROLE)
_FIRST_RELEASE = ",\n    ".join(f"{c.name} {c.duckdb_type}" for c in COLUMNS if not c.added)
DDL = f"""
CREATE SCHEMA IF NOT EXISTS cbi;
CREATE TABLE IF NOT EXISTS {TABLE} (
    {_FIRST_RELEASE},
    PRIMARY KEY ({", ".join(KEY)})
);
"""
# Columns added after the first release: (name, type). The writer adds missing ones in place.
ADDED_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (c.name, c.duckdb_type) for c in COLUMNS if c.added
)
SERVED, SHADOW = "served", "shadow"
JSON_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.json)


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Create the table, or add the columns an older table lacks (idempotent)."""
    con.execute(DDL)
    for name, kind in ADDED_COLUMNS:
        con.execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {name} {kind}")


class ForecastStore:
    def __init__(self, database: str | Path, sink: ResultsSink | None = None):
        self.database = str(database)
        self.sink = sink or NullSink()  # mirrors the appended rows (after the local write)

    def append(self, rows: Sequence[dict]) -> int:
        """Insert new keys; existing keys are kept as issued. Returns the rows inserted."""
        if not rows:
            return 0
        known = set(KEY)
        missing = [k for k in sorted(known) if any(r.get(k) is None for r in rows)]
        if missing:
            raise ValueError(f"forecast rows need {sorted(known)}; missing or null: {missing}")
        frame = pl.DataFrame(
            [{k: (json.dumps(v) if k in JSON_COLUMNS else v) for k, v in r.items()} for r in rows],
            infer_schema_length=None,
        )
        with write_connection(self.database) as con:
            migrate(con)
            table_columns = {c[0] for c in con.execute(f"DESCRIBE {TABLE}").fetchall()}
            unknown = [c for c in frame.columns if c not in table_columns]
            if unknown:
                raise ValueError(f"forecast rows carry column(s) the history lacks: {unknown}")
            before = con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
            con.register("incoming", frame.to_arrow())
            columns = ", ".join(frame.columns)
            con.execute(
                f"INSERT INTO {TABLE} ({columns}) SELECT {columns} FROM incoming "
                "ON CONFLICT DO NOTHING"
            )
            after = con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
            publish_snapshot(con, self.database, TABLE)
            on_key = "t.as_of = CAST(i.as_of AS DATE) AND " + " AND ".join(
                f"t.{k} = CAST(i.{k} AS VARCHAR)" for k in KEY[1:]
            )
            stored = con.sql(  # the appended keys as stored (an existing key keeps its values)
                f"SELECT * FROM {TABLE} t WHERE EXISTS (SELECT 1 FROM incoming i WHERE {on_key})"
            ).pl()
        self.sink.write(TABLE.split(".")[-1], stored, list(KEY))
        return after - before

    def history(self, role: str | None = None) -> pl.DataFrame:
        """Every issued forecast (`role`: only "served" or only "shadow" rows), from the last
        published snapshot: no DuckDB connection, so a reader never blocks the writer."""
        frame = read_snapshot(self.database, TABLE)
        if frame is None:
            if not Path(self.database).exists():
                return pl.DataFrame()
            with write_connection(self.database) as con:  # a history written before snapshots
                migrate(con)
                publish_snapshot(con, self.database, TABLE)
            frame = read_snapshot(self.database, TABLE)
            assert frame is not None
        frame = frame.sort("as_of", "horizon")
        # A history written before a migration reads with the newer columns as nulls.
        absent = [name for name, _ in ADDED_COLUMNS if name not in frame.columns]
        frame = frame.with_columns(pl.lit(None).alias(name) for name in absent)
        frame = frame.with_columns(pl.col("role").fill_null(SERVED))
        return frame if role is None else frame.filter(pl.col("role") == role)

    def latest(self) -> pl.DataFrame:
        """The newest forecast per horizon (latest as_of, then latest creation), JSON decoded."""
        hist = self.history(SERVED)
        if hist.height == 0:
            return hist
        latest = hist.sort(["as_of", "created_at"]).group_by("horizon", maintain_order=True).last()
        return latest.with_columns(
            pl.Series(
                name,
                [json.loads(v) if v is not None else None for v in latest[name].to_list()],
                dtype=pl.Object,
            )
            for name in JSON_COLUMNS
        )
