"""Mirror the platform's own results (forecast history, operations logs, validation) to a
warehouse, after the local store wrote them.

The local DuckDB stores stay primary: the API and the sensors read their snapshots, and a sink
never changes what they hold. After a store's write succeeded it hands the rows it wrote (as
stored) to its sink with the table's key. `NullSink` (the default) does nothing.
`BigQuerySink` keeps each remote table equal, row for row, to what was sent:

- Idempotent: rows are loaded into a short-lived staging table and `MERGE`d into the target on
  the key (a matched key is updated, a new key inserted), so re-sending rows never duplicates
  them. Every row also carries `home_id` (a UUID kept in the home folder) as the first key
  column, so two homes writing one dataset (a wiped and recreated home whose `seq` restarts at
  1, say) never overwrite each other's rows.
- No loss: the rows are first spooled to a Parquet file under the home
  (`results_sink/pending/<table>/`); a successful MERGE deletes the spooled files it sent. A
  failure is logged (naming the table) and the files stay: the next write (of any table) sends
  them. A write never raises because BigQuery refused or was unreachable.
- Safe SQL: names cannot be query parameters, so every project, dataset, table and column name
  is checked against a strict pattern and back-quoted; the SQL holds no values (one query
  parameter, @home_id, scopes the deletions of a whole-table mirror to this home).

Known limit: a process that dies between its local write and the spooling (microseconds) leaves
those rows unmirrored until they are written again; two processes writing the same key within
that window may mirror the earlier of their two versions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from cbi_platform.storage import StoreBusyError, read_snapshot, write_lock

log = logging.getLogger(__name__)

HOME_ID_COLUMN = "home_id"
DEFAULT_RESULTS_DATASET = "cbi_results"
SPOOL_META = "table.json"  # the key (and completeness) of a table's spooled rows
KEY_FORECAST = ("as_of", "horizon", "model_version")

_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_RESERVED_COLUMN_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_PROJECT_ID = re.compile(r"^[a-z0-9][a-z0-9.:\-]{0,127}$")  # "my-proj", "example.com:my-proj"
_LOCATION = re.compile(r"^[A-Za-z0-9\-]{1,64}$")
_HOME_ID = re.compile(r"^[0-9a-f]{32}$")


class ResultsSinkError(RuntimeError):
    """The warehouse refused (or could not be reached for) a table's rows."""


class ResultsSink(Protocol):
    """Where a store's written rows are mirrored. `write` is idempotent on `key`."""

    def write(
        self, table: str, rows: pl.DataFrame, key: Sequence[str], *, complete: bool = False
    ) -> None:
        """Mirror `rows` into `table`. `complete`: `rows` is the table's whole content, so
        remote rows whose key is absent from it are deleted (e.g. the open alerts)."""
        ...


class NullSink:
    """Local only: nothing is mirrored (the default)."""

    def write(
        self, table: str, rows: pl.DataFrame, key: Sequence[str], *, complete: bool = False
    ) -> None:
        return None

    def __repr__(self) -> str:
        return "NullSink()"


# -- identifiers -----------------------------------------------------------------------------
def check_table_name(name: str) -> str:
    if not isinstance(name, str) or not _TABLE_NAME.match(name):
        raise ValueError(
            f"results table name {name!r} refused: lower-case letters, digits and '_' only, "
            "starting with a letter (at most 63 characters)"
        )
    return name


def check_column_name(table: str, name: str) -> str:
    if (
        not isinstance(name, str)
        or not _COLUMN_NAME.match(name)
        or name.lower().startswith(_RESERVED_COLUMN_PREFIXES)
    ):
        raise ValueError(
            f"results table {table}: column name {name!r} refused: letters, digits and '_' "
            "only, not starting with a digit or a prefix BigQuery reserves"
        )
    return name


def _check(pattern: re.Pattern[str], what: str, value: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"BigQuery {what} {value!r} refused: it does not match {pattern.pattern}")
    return value


def _quote(*parts: str) -> str:
    """`a`.`b`.`c`: each part was validated, and none can hold a back-quote."""
    return ".".join(f"`{part}`" for part in parts)


def merge_sql(
    target: tuple[str, str, str],
    staging: tuple[str, str, str],
    columns: Sequence[str],
    key: Sequence[str],
    *,
    complete: bool = False,
) -> str:
    """The MERGE of `staging` into `target` on `key`: validated names, no values (with
    `complete`, one parameter, @home_id, limits the deletion to this home's rows)."""
    on = " AND ".join(f"T.{_quote(k)} = S.{_quote(k)}" for k in key)
    values = [c for c in columns if c not in key]
    clauses = []
    if values:
        assignments = ", ".join(f"{_quote(c)} = S.{_quote(c)}" for c in values)
        clauses.append(f"WHEN MATCHED THEN UPDATE SET {assignments}")
    names = ", ".join(_quote(c) for c in columns)
    inserted = ", ".join(f"S.{_quote(c)}" for c in columns)
    clauses.append(f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({inserted})")
    if complete:  # only this home's rows: the @home_id parameter
        clauses.append(
            f"WHEN NOT MATCHED BY SOURCE AND T.{_quote(HOME_ID_COLUMN)} = @home_id THEN DELETE"
        )
    return f"MERGE INTO {_quote(*target)} T USING {_quote(*staging)} S ON {on} " + " ".join(clauses)


# -- types -----------------------------------------------------------------------------------
_UTC_TIMESTAMP = pl.Datetime("us", "UTC")
# BigQuery's types (both spellings the API uses) -> the polars type a column is cast to.
_POLARS_OF = {
    "BOOL": pl.Boolean(),
    "BOOLEAN": pl.Boolean(),
    "INT64": pl.Int64(),
    "INTEGER": pl.Int64(),
    "FLOAT64": pl.Float64(),
    "FLOAT": pl.Float64(),
    "STRING": pl.String(),
    "DATE": pl.Date(),
    "TIMESTAMP": _UTC_TIMESTAMP,
    "TIME": pl.Time(),
}


def bigquery_type(table: str, column: str, dtype: pl.DataType) -> str:
    """The BigQuery type a polars column is stored as (naive datetimes are taken as UTC)."""
    if dtype == pl.Boolean:
        return "BOOL"
    if dtype.is_integer():
        return "INT64"
    if dtype.is_float():
        return "FLOAT64"
    if dtype in (pl.String, pl.Null) or isinstance(dtype, pl.Categorical | pl.Enum):
        return "STRING"
    if dtype == pl.Date:
        return "DATE"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP"
    if dtype == pl.Time:
        return "TIME"
    raise ResultsSinkError(
        f"results table {table}: column {column} has polars type {dtype}, which is not mirrored "
        "(store it as text, e.g. JSON)"
    )


def conform(table: str, rows: pl.DataFrame, types: dict[str, str]) -> pl.DataFrame:
    """`rows` cast to the BigQuery `types` of its columns (timestamps to UTC)."""
    out = []
    for name in rows.columns:
        column = rows[name]
        target = _POLARS_OF.get(types[name].upper())
        if target is None:
            raise ResultsSinkError(
                f"results table {table}: column {name} is {types[name]} in BigQuery, a type "
                "this sink does not write"
            )
        if target == _UTC_TIMESTAMP and isinstance(column.dtype, pl.Datetime):
            column = (
                column.dt.replace_time_zone("UTC")
                if column.dtype.time_zone is None
                else column.dt.convert_time_zone("UTC")
            )
        try:
            out.append(column.cast(target, strict=True))
        except Exception as exc:
            raise ResultsSinkError(
                f"results table {table}: column {name} ({column.dtype}) cannot be stored in "
                f"the BigQuery column of type {types[name]}: {exc}"
            ) from exc
    return pl.DataFrame(out)


# -- the BigQuery sink -----------------------------------------------------------------------
def home_id(state_dir: Path) -> str:
    """This home's id (created once; atomic across processes)."""
    path = state_dir / "home_id"
    with contextlib.suppress(FileNotFoundError):
        return _checked_home_id(path)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".home_id.{os.getpid()}.{uuid.uuid4().hex}"
    tmp.write_text(uuid.uuid4().hex + "\n")
    try:
        os.link(tmp, path)  # fails if another process made it first: theirs is kept
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _checked_home_id(path)


def _checked_home_id(path: Path) -> str:
    value = path.read_text().strip()
    if not _HOME_ID.match(value):
        raise ValueError(f"{path}: not a home id (32 hex digits); remove it to make a new one")
    return value


class BigQuerySink:
    """Mirrors into `project.dataset` with the `google.cloud.bigquery` client (see the module
    docstring). `state_dir` (under the home) holds the spool of rows not yet mirrored and the
    home's id. `client` is made on first use unless given (tests give a fake)."""

    def __init__(
        self,
        project: str,
        dataset: str,
        state_dir: str | Path,
        *,
        location: str | None = None,
        client: Any = None,
        timeout_s: float = 30.0,
        lock_timeout_s: float = 10.0,
    ) -> None:
        self.project = _check(_PROJECT_ID, "project", project)
        self.dataset = _check(_DATASET_NAME, "dataset", dataset)
        self.location = _check(_LOCATION, "location", location) if location else None
        self.state_dir = Path(state_dir)
        self.timeout_s = timeout_s
        self.lock_timeout_s = lock_timeout_s
        self._client = client
        self._dataset_ready = False
        self._types: dict[str, dict[str, str]] = {}  # table -> column -> BigQuery type

    def __repr__(self) -> str:
        return f"BigQuerySink({self.project}.{self.dataset})"

    # -- public ---------------------------------------------------------------------------
    def write(
        self, table: str, rows: pl.DataFrame, key: Sequence[str], *, complete: bool = False
    ) -> None:
        """Spool `rows`, then send everything spooled for `table`; a failure is logged and the
        rows wait for the next write. Bad names or keys raise (a programming error)."""
        check_table_name(table)
        key = list(key)
        if not key:
            raise ValueError(f"results table {table}: a key is required (the MERGE joins on it)")
        for name in [*key, *rows.columns]:
            check_column_name(table, name)
        if HOME_ID_COLUMN in rows.columns:
            raise ValueError(f"results table {table}: {HOME_ID_COLUMN} is the sink's column")
        missing = [k for k in key if k not in rows.columns]
        if missing:
            raise ValueError(f"results table {table}: key column(s) {missing} not in the rows")
        nulls = [k for k in key if rows[k].null_count()]
        if nulls:
            raise ValueError(f"results table {table}: null values in key column(s) {nulls}")
        for name, dtype in rows.schema.items():
            bigquery_type(table, name, dtype)
        if rows.height == 0 and not complete:
            return
        self._spool(table, rows, key, complete)
        # This table first, then any other table's backlog; stop at the first failure (the
        # warehouse is likely down: the rest waits for the next write).
        for name in [table, *(t for t in self.backlog() if t != table)]:
            try:
                self.flush(name)
            except (ResultsSinkError, StoreBusyError) as exc:
                log.warning(
                    "%s; kept for the next write (%d rows pending)", exc, self.pending(name)
                )
                return

    def backlog(self) -> list[str]:
        """The tables with rows spooled and not yet mirrored."""
        root = self.state_dir / "pending"
        if not root.exists():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and self._spooled(p.name))

    def pending(self, table: str) -> int:
        """Rows spooled for `table` and not yet mirrored."""
        count = 0
        for path in self._spooled(table):
            with contextlib.suppress(OSError):  # sent (and removed) meanwhile by another process
                count += pl.scan_parquet(path).select(pl.len()).collect().item()
        return count

    def flush(self, table: str) -> int:
        """Send what is spooled for `table` (raises `ResultsSinkError` when BigQuery refuses,
        `StoreBusyError` when another process is sending it); returns the rows sent."""
        check_table_name(table)
        folder = self._spool_dir(table)
        with write_lock(folder, timeout=self.lock_timeout_s):
            files = self._spooled(table)
            if not files:
                return 0
            meta = json.loads((folder / SPOOL_META).read_text())
            key, complete = [check_column_name(table, k) for k in meta["key"]], meta["complete"]
            if complete:  # the newest spooled file is the whole table
                batch = pl.read_parquet(files[-1])
            else:
                batch = pl.concat([pl.read_parquet(p) for p in files], how="diagonal_relaxed")
            batch = batch.unique(subset=list(key), keep="last", maintain_order=True)
            batch = batch.select(pl.lit(home_id(self.state_dir)).alias(HOME_ID_COLUMN), pl.all())
            try:
                self._send(table, batch, [HOME_ID_COLUMN, *key], complete)
            except ResultsSinkError:
                raise
            except Exception as exc:  # google.api_core errors, network, credentials
                raise ResultsSinkError(
                    f"BigQuery refused the rows for {self.project}.{self.dataset}.{table} "
                    f"({batch.height} rows): {type(exc).__name__}: {exc}"
                ) from exc
            for path in files:
                path.unlink(missing_ok=True)
        return batch.height

    # -- spool ----------------------------------------------------------------------------
    def _spool_dir(self, table: str) -> Path:
        return self.state_dir / "pending" / table

    def _spooled(self, table: str) -> list[Path]:
        folder = self._spool_dir(table)
        return sorted(folder.glob("*.parquet")) if folder.exists() else []

    def _spool(self, table: str, rows: pl.DataFrame, key: list[str], complete: bool) -> Path:
        """Write `rows` (and the table's key) under the spool folder, atomically."""
        folder = self._spool_dir(table)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        meta = folder / f".{stamp}.json.tmp"
        meta.write_text(json.dumps({"key": key, "complete": complete}))
        os.replace(meta, folder / SPOOL_META)
        tmp = folder / f".{stamp}.parquet.tmp"
        rows.write_parquet(tmp)
        os.replace(tmp, folder / f"{stamp}.parquet")
        return folder / f"{stamp}.parquet"

    # -- BigQuery -------------------------------------------------------------------------
    def client(self):
        if self._client is None:
            from google.cloud import bigquery  # heavy: delayed

            self._client = bigquery.Client(project=self.project, location=self.location)
        return self._client

    def _retry(self):
        from google.cloud import bigquery  # heavy: delayed

        return bigquery.DEFAULT_RETRY.with_timeout(self.timeout_s)

    def _ensure_table(self, table: str, rows: pl.DataFrame) -> dict[str, str]:
        """Create the dataset and the table when missing (explicit schema from the rows); add
        the columns the table lacks. Returns the table's column types."""
        from google.cloud import bigquery  # heavy: delayed

        client = self.client()
        if not self._dataset_ready:
            dataset = bigquery.Dataset(bigquery.DatasetReference(self.project, self.dataset))
            if self.location:
                dataset.location = self.location
            client.create_dataset(
                dataset, exists_ok=True, retry=self._retry(), timeout=self.timeout_s
            )
            self._dataset_ready = True
        wanted = {name: bigquery_type(table, name, dtype) for name, dtype in rows.schema.items()}
        known = self._types.get(table)
        if known is not None and set(wanted) <= set(known):
            return known
        ref = f"{self.project}.{self.dataset}.{table}"
        remote = client.create_table(
            bigquery.Table(ref, schema=[bigquery.SchemaField(n, t) for n, t in wanted.items()]),
            exists_ok=True,
            retry=self._retry(),
            timeout=self.timeout_s,
        )
        types = {field.name: field.field_type for field in remote.schema}
        lacking = [n for n in wanted if n not in types]
        if lacking:
            remote.schema = [
                *remote.schema,
                *(bigquery.SchemaField(n, wanted[n], mode="NULLABLE") for n in lacking),
            ]
            remote = client.update_table(
                remote, ["schema"], retry=self._retry(), timeout=self.timeout_s
            )
            types = {field.name: field.field_type for field in remote.schema}
        self._types[table] = types
        return types

    def _send(self, table: str, batch: pl.DataFrame, key: list[str], complete: bool) -> None:
        from google.cloud import bigquery  # heavy: delayed

        client = self.client()
        types = self._ensure_table(table, batch)
        batch = conform(table, batch, types)
        schema = [bigquery.SchemaField(n, types[n]) for n in batch.columns]
        staging_name = f"_staging_{table}_{uuid.uuid4().hex}"
        staging = bigquery.Table(f"{self.project}.{self.dataset}.{staging_name}", schema=schema)
        staging.expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # litter expires
        client.create_table(staging, retry=self._retry(), timeout=self.timeout_s)
        try:
            if batch.height:
                data = io.BytesIO()
                batch.write_parquet(data, compression="snappy")
                data.seek(0)
                job = client.load_table_from_file(
                    data,
                    staging.reference,
                    job_config=bigquery.LoadJobConfig(
                        source_format=bigquery.SourceFormat.PARQUET,
                        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
                        schema=schema,
                    ),
                    timeout=self.timeout_s,
                )
                job.result(timeout=self.timeout_s)
            sql = merge_sql(
                (self.project, self.dataset, table),
                (self.project, self.dataset, staging_name),
                batch.columns,
                key,
                complete=complete,
            )
            config = None
            if complete:
                config = bigquery.QueryJobConfig(
                    query_parameters=[
                        bigquery.ScalarQueryParameter("home_id", "STRING", home_id(self.state_dir))
                    ]
                )
            client.query(
                sql, job_config=config, retry=self._retry(), timeout=self.timeout_s
            ).result(timeout=self.timeout_s)
        finally:
            with contextlib.suppress(Exception):  # it expires anyway
                client.delete_table(
                    staging.reference, not_found_ok=True, retry=self._retry(), timeout=10
                )


def build_sink(
    kind: str,
    *,
    project: str | None = None,
    dataset: str = DEFAULT_RESULTS_DATASET,
    location: str | None = None,
    state_dir: str | Path,
) -> ResultsSink:
    """The sink of a configuration: "none" (local only) or "bigquery"."""
    if kind == "none":
        return NullSink()
    if kind == "bigquery":
        if not project:
            raise ValueError("results to BigQuery need a project (CBI_GCP_PROJECT)")
        return BigQuerySink(project, dataset, state_dir, location=location)
    raise ValueError(f"results sink must be none or bigquery, not {kind!r}")


def mirror_validation(
    sink: ResultsSink, scored: pl.DataFrame, summary: pl.DataFrame, validated_as_of: dt.date
) -> None:
    """The validation results: every scored forecast (one per as_of and horizon, updated as it
    is rescored) and the day's summary per horizon (one row per validation day and horizon)."""
    if scored.height:
        sink.write("forecast_validation", scored, ["as_of", "horizon"])
    if summary.height:
        sink.write(
            "validation_summary",
            summary.select(pl.lit(validated_as_of).alias("validated_as_of"), pl.all()),
            ["validated_as_of", "horizon"],
        )


# The stores' tables: (file in the home, local table, key, whole-table mirror).
STORE_TABLES: dict[str, tuple[str, str, tuple[str, ...], bool]] = {
    "forecast_history": ("forecasts.duckdb", "cbi.forecast_history", KEY_FORECAST, False),
    "condition_log": ("operations.duckdb", "ops.condition_log", ("seq",), False),
    "alert_state": ("operations.duckdb", "ops.alert_state", ("key",), True),
    "alert_log": ("operations.duckdb", "ops.alert_log", ("seq",), False),
    "audit": ("operations.duckdb", "ops.audit", ("seq",), False),
    "recommendations": ("operations.duckdb", "ops.recommendations", ("as_of", "policy"), False),
}


def mirror_existing(sink: ResultsSink, home: str | Path) -> dict[str, int]:
    """Send every store's current table (its published snapshot) through `sink`: for a home
    that ran before results were mirrored, or after a crash between a write and its spooling.
    Idempotent (the MERGE), so it is safe to run any time; returns the rows sent per table."""
    sent = {}
    for table, (database, local, key, complete) in STORE_TABLES.items():
        frame = read_snapshot(Path(home) / database, local)
        if frame is None:
            continue
        sink.write(table, frame, list(key), complete=complete)
        sent[table] = frame.height
    return sent
