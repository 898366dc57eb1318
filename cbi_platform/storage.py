"""Many processes, one DuckDB file: how the platform's own stores are shared.

Daemon-launched runs, `cbi` and the forecast API touch the stores at once. DuckDB allows one
process to hold a file for writing, and a read-only connection in another process blocks that
writer (and vice versa), so "open it wherever needed" fails with "Could not set lock on file".
The arrangement:

- Writers take `write_connection(database)`: an exclusive advisory lock on `<database>.lock`
  (`fcntl.flock`, released by the OS if the process dies), then a short-lived DuckDB connection.
  A second writer waits on the lock (up to `timeout` seconds, then a clear error) instead of
  failing on DuckDB's own lock.
- Readers never open the DuckDB file. After each write the writer publishes the tables it
  changed as Parquet snapshots (`publish_snapshot`: written to a temporary file in the same
  folder, then `os.replace`, which is atomic), and readers read those (`read_snapshot`): a
  reader sees the table as of the last finished write, never a half-written one, and never
  blocks anyone.

The Dagster warehouse (`warehouse.duckdb`, written by the DuckDB IO manager) takes the same
lock around every connection it opens, to load or to store, so runs may overlap (dagster.yaml's
lanes) and each connection waits its turn; its writes are one transaction each, and a write is
refused when the run that makes it is already over (`fenced_write_reason`). Anything else that
reads the warehouse takes `read_connection`.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl

LOCK_POLL_SECONDS = 0.05
# The warehouse lock is held one load or one store at a time (seconds), but a reader may queue
# behind a whole run's worth of them: wait long before calling the warehouse stuck.
WAREHOUSE_LOCK_TIMEOUT = 600.0
# Dagster run statuses (by name) whose outputs are no result: the run failed, was cancelled or
# is being cancelled. Its steps may still be running (a lost worker, an orphaned step process).
DEAD_RUN_STATUSES = frozenset({"FAILURE", "CANCELED", "CANCELING"})


class StoreBusyError(RuntimeError):
    """Another process held the store's write lock for longer than the timeout."""


@contextlib.contextmanager
def write_lock(database: str | Path, timeout: float = 120.0) -> Iterator[None]:
    """Hold the exclusive write lock of `database` (a sibling `.lock` file)."""
    path = Path(f"{database}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreBusyError(
                        f"{database}: another process held the write lock for more than "
                        f"{timeout:.0f}s (see {path}); retry, or stop the other writer"
                    ) from None
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def write_connection(
    database: str | Path, timeout: float = 120.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived read-write connection, held under the store's write lock."""
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    with write_lock(database, timeout), duckdb.connect(str(database)) as con:
        yield con


@contextlib.contextmanager
def read_connection(
    database: str | Path, timeout: float = WAREHOUSE_LOCK_TIMEOUT
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived read-only connection to a store that has no snapshots (the warehouse),
    under its lock: an open reader would otherwise make every writer's connection fail."""
    with write_lock(database, timeout), duckdb.connect(str(database), read_only=True) as con:
        yield con


class FencedWriteError(RuntimeError):
    """A run that is over (failed, cancelled) tried to write a result."""


def fenced_write_reason(run_id: str, status: str | None) -> str | None:
    """Why the output of run `run_id`, whose status is `status` (a Dagster run status name;
    None when the instance does not know the run), must not be written; None to write it.
    A dead run's steps may outlive it: what they write would pass for the result of a run that
    the instance (and the retry that follows) says has none."""
    if status in DEAD_RUN_STATUSES:
        return (
            f"run {run_id} is {status}: its output is not written (a run that is over "
            "writes no results; the retry or the next run will)"
        )
    return None


def snapshot_path(database: str | Path, table: str) -> Path:
    """Where readers find `table` (e.g. `cbi.forecast_history`) of `database`."""
    database = Path(database)
    return database.with_name(f"{database.stem}.snapshots") / f"{table}.parquet"


def publish_snapshot(con: duckdb.DuckDBPyConnection, database: str | Path, table: str) -> Path:
    """Write `table` as an atomic Parquet snapshot (call inside `write_connection`)."""
    return write_parquet_atomic(
        con.sql(f"SELECT * FROM {table}").pl(), snapshot_path(database, table)
    )


def write_parquet_atomic(frame: pl.DataFrame, target: str | Path) -> Path:
    """Write `frame` to `target` through a temporary file in its folder and `os.replace`, so a
    reader sees the old file or the new one, never half of one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_snapshot(database: str | Path, table: str) -> pl.DataFrame | None:
    """The last published snapshot of `table`, or None when none was published yet."""
    path = snapshot_path(database, table)
    try:
        # One open of one inode: a path-based reader may open the file twice (footer, then
        # pages) and straddle a replacement.
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return pl.read_parquet(io.BytesIO(data))
