"""A stand-in for `google.cloud.bigquery.Client` at its boundary, for the results sink's tests.

It keeps datasets and tables (the real `bigquery.Table` objects with their schema, the rows as
polars frames), reads load jobs from the Parquet file the sink uploads, and runs the sink's
MERGE statements in DuckDB on those rows, so idempotence is checked by executing the SQL on
the key, not by reading it. `fail` makes every call raise (a warehouse that is down).
"""

from __future__ import annotations

import re
from typing import Any

import duckdb
import polars as pl
from google.api_core import exceptions
from google.cloud import bigquery

from cbi_platform.results_sink import _POLARS_OF

_THREE_PART = re.compile(r"`([^`]+)`\.`([^`]+)`\.`([^`]+)`")


def table_id(ref: Any) -> str:
    if isinstance(ref, bigquery.Table):
        ref = ref.reference
    if isinstance(ref, bigquery.TableReference):
        return f"{ref.project}.{ref.dataset_id}.{ref.table_id}"
    return str(ref)


def _empty(schema: list[bigquery.SchemaField]) -> pl.DataFrame:
    return pl.DataFrame(schema={f.name: _POLARS_OF[f.field_type.upper()] for f in schema})


class _Job:
    def result(self, timeout: float | None = None, **kwargs: Any) -> _Job:
        return self


class FakeBigQuery:
    def __init__(self, project: str = "proj") -> None:
        self.project = project
        self.datasets: dict[str, bigquery.Dataset] = {}
        self.tables: dict[str, bigquery.Table] = {}
        self.rows: dict[str, pl.DataFrame] = {}
        self.calls: list[tuple[str, Any]] = []
        self.queries: list[tuple[str, Any]] = []
        self.loaded: list[tuple[str, pl.DataFrame]] = []
        self.fail: Exception | None = None

    def _call(self, name: str, what: Any) -> None:
        self.calls.append((name, what))
        if self.fail is not None:
            raise self.fail

    # -- datasets and tables --------------------------------------------------------------
    def create_dataset(self, dataset: bigquery.Dataset, exists_ok: bool = False, **kwargs: Any):
        self._call("create_dataset", dataset.dataset_id)
        name = f"{dataset.project}.{dataset.dataset_id}"
        if name in self.datasets and not exists_ok:
            raise exceptions.Conflict(f"dataset {name} exists")
        return self.datasets.setdefault(name, dataset)

    def create_table(self, table: bigquery.Table, exists_ok: bool = False, **kwargs: Any):
        name = table_id(table)
        self._call("create_table", name)
        if name.rsplit(".", 1)[0] not in self.datasets:
            raise exceptions.NotFound(f"dataset of {name}")
        if name in self.tables:
            if exists_ok:
                return self.tables[name]
            raise exceptions.Conflict(f"table {name} exists")
        self.tables[name] = table
        self.rows[name] = _empty(table.schema)
        return table

    def get_table(self, ref: Any, **kwargs: Any) -> bigquery.Table:
        name = table_id(ref)
        self._call("get_table", name)
        if name not in self.tables:
            raise exceptions.NotFound(name)
        return self.tables[name]

    def update_table(self, table: bigquery.Table, fields: list[str], **kwargs: Any):
        name = table_id(table)
        self._call("update_table", (name, fields))
        self.tables[name] = table
        added = [f for f in table.schema if f.name not in self.rows[name].columns]
        self.rows[name] = self.rows[name].with_columns(
            pl.lit(None, dtype=_POLARS_OF[f.field_type.upper()]).alias(f.name) for f in added
        )
        return table

    def delete_table(self, ref: Any, not_found_ok: bool = False, **kwargs: Any) -> None:
        name = table_id(ref)
        self._call("delete_table", name)
        if name not in self.tables and not not_found_ok:
            raise exceptions.NotFound(name)
        self.tables.pop(name, None)
        self.rows.pop(name, None)

    # -- jobs -----------------------------------------------------------------------------
    def load_table_from_file(self, file_obj, destination, job_config=None, **kwargs: Any):
        name = table_id(destination)
        self._call("load_table_from_file", name)
        if name not in self.tables:
            raise exceptions.NotFound(name)
        assert job_config.source_format == bigquery.SourceFormat.PARQUET
        data = pl.read_parquet(file_obj)
        declared = [f.name for f in self.tables[name].schema]
        if data.columns != declared:
            raise exceptions.BadRequest(f"{name}: columns {data.columns} != schema {declared}")
        self.loaded.append((name, data))
        self.rows[name] = pl.concat([self.rows[name], data], how="vertical")
        return _Job()

    def query(self, sql: str, job_config=None, **kwargs: Any) -> _Job:
        self._call("query", sql)
        self.queries.append((sql, job_config))
        params = {p.name: p.value for p in (job_config.query_parameters if job_config else [])}
        names: dict[str, str] = {}

        def local(match: re.Match[str]) -> str:
            name = ".".join(match.groups())
            if name not in self.tables:
                raise exceptions.NotFound(name)
            return names.setdefault(name, f"t{len(names)}")

        statement = _THREE_PART.sub(local, sql).replace("`", '"')
        statement = re.sub(r"@(\w+)", r"$\1", statement)
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        for name, alias in names.items():
            frame = self.rows[name]  # noqa: F841  (read by DuckDB)
            con.execute(f"CREATE TABLE {alias} AS SELECT * FROM frame")
        try:
            con.execute(statement, params or None)
        except duckdb.Error as exc:
            raise exceptions.BadRequest(f"{exc} in {sql}") from exc
        for name, alias in names.items():
            result = con.sql(f"SELECT * FROM {alias}").pl()
            self.rows[name] = result.cast(self.rows[name].schema)
        return _Job()

    # -- for assertions ---------------------------------------------------------------------
    def table(self, name: str) -> pl.DataFrame:
        return self.rows[f"{self.project}.cbi_results.{name}"]
