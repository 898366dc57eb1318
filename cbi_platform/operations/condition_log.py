"""Where monitors leave their judgements for the sensors: the condition log (DuckDB, schema ops).

Each monitor asset appends the conditions it judged (firing or not) with the run that judged
them. The alert and retraining sensors read the latest judgement per key from the snapshot, so
a sensor tick never opens the database and never blocks a run that writes it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from cbi_platform.conditions import Condition
from cbi_platform.results_sink import NullSink, ResultsSink
from cbi_platform.storage import publish_snapshot, read_snapshot, write_connection

TABLE = "ops.condition_log"
DDL = f"""
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq BIGINT, key VARCHAR, kind VARCHAR, horizon VARCHAR, firing BOOLEAN, title VARCHAR,
    as_of DATE, evidence VARCHAR, link VARCHAR, run_id VARCHAR, logged_at TIMESTAMP
);
"""


class ConditionLog:
    def __init__(self, database: str | Path, sink: ResultsSink | None = None):
        self.database = Path(database)
        self.sink = sink or NullSink()  # mirrors the recorded rows (after the local write)

    def record(self, conditions: Sequence[Condition], run_id: str | None = None) -> int:
        if not conditions:
            return 0
        with write_connection(self.database) as con:
            con.execute(DDL)
            seq = con.execute(f"SELECT coalesce(max(seq), 0) FROM {TABLE}").fetchone()[0]
            now = dt.datetime.now()
            rows = [
                (
                    seq + i + 1,
                    c.key,
                    c.kind,
                    c.horizon,
                    c.firing,
                    c.title,
                    c.as_of,
                    json.dumps(c.evidence, default=str),
                    c.link,
                    run_id,
                    now,
                )
                for i, c in enumerate(conditions)
            ]
            con.executemany(f"INSERT INTO {TABLE} VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            publish_snapshot(con, self.database, TABLE)
            recorded = con.sql(f"SELECT * FROM {TABLE} WHERE seq > {int(seq)}").pl()
        self.sink.write("condition_log", recorded, ["seq"])
        return len(rows)

    def frame(self) -> pl.DataFrame:
        frame = read_snapshot(self.database, TABLE)
        return frame if frame is not None else pl.DataFrame()

    def latest(self) -> list[Condition]:
        """The newest judgement of every key (latest as_of, then latest logged)."""
        frame = self.frame()
        if frame.height == 0:
            return []
        newest = frame.sort("as_of", "seq").group_by("key", maintain_order=True).last()
        return [
            Condition(
                key=r["key"],
                kind=r["kind"],
                firing=bool(r["firing"]),
                title=r["title"],
                as_of=r["as_of"],
                horizon=r["horizon"],
                evidence=json.loads(r["evidence"]) if r["evidence"] else {},
                link=r["link"],
            )
            for r in newest.sort("seq").iter_rows(named=True)
        ]
