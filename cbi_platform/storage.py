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

The Dagster warehouse (the DuckDB IO manager) is separate: runs queue one at a time on it
(dagster.yaml's run queue) and the IO manager retries its connection when the file is busy.
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


def snapshot_path(database: str | Path, table: str) -> Path:
    """Where readers find `table` (e.g. `cbi.forecast_history`) of `database`."""
    database = Path(database)
    return database.with_name(f"{database.stem}.snapshots") / f"{table}.parquet"


def publish_snapshot(con: duckdb.DuckDBPyConnection, database: str | Path, table: str) -> Path:
    """Write `table` as an atomic Parquet snapshot (call inside `write_connection`)."""
    target = snapshot_path(database, table)
    target.parent.mkdir(parents=True, exist_ok=True)
    frame = con.sql(f"SELECT * FROM {table}").pl()
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
