"""`cbi backup` / `cbi restore`: a consistent, checksummed copy of a platform home.

Why not `cp -r`: the stores are written by other processes while the copy runs. Each DuckDB
store is copied while its `storage.write_lock` is held and a checkpointed connection is open (no
writer is mid-write, no WAL is pending: the warehouse's Dagster IO manager takes the same lock
for every connection, and a foreign process is kept out by DuckDB's own file lock); a store's
Parquet snapshots are copied under the same lock, so they match it. SQLite files (MLflow, the
Dagster instance, the buyer's accounts) go through SQLite's online backup API. Any other file
with a sibling `.lock` (the API keys file) is copied under that lock. PostgreSQL storage
(Dagster via dagster-postgres, MLflow via a postgresql:// URI, the accounts via
CBI_ACCOUNTS_DSN) is dumped with `pg_dump`. `manifest.json` lists every file with its size and
SHA-256, and the row counts of every table read under the lock; `restore` checks
every checksum before it writes anything.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import duckdb
import yaml

from cbi_platform.operations.alerts import ANSWER_LOG_TABLE, LOG_TABLE, STATE_TABLE
from cbi_platform.operations.condition_log import TABLE as CONDITION_TABLE
from cbi_platform.operations.config import DEFAULT_FILE as DEFAULT_MONITORING_FILE
from cbi_platform.release.control import TABLE as AUDIT_TABLE
from cbi_platform.serving.store import TABLE as FORECAST_TABLE
from cbi_platform.settings import PROTOCOL_PATH, REPO_ROOT
from cbi_platform.storage import write_lock

MANIFEST = "manifest.json"
FORMAT = 1
CHUNK = 1 << 20
PROGRESS_BYTES = 64 << 20  # a progress line every 64 MiB of one file
SQLITE_MAGIC = b"SQLite format 3\x00"
# Not copied: lock files, write-ahead logs (checkpointed / folded in by the backup API), the
# temporaries of atomic writes (hidden files), and worker pid files of the old machine.
SKIPPED_SUFFIXES = (".lock", ".wal", "-wal", "-shm", "-journal")
DEFAULT_EXCLUDES = ("services",)
# The buyer's accounts store (`cbi_platform.accounts.store`, a layer above this one, so its
# names are repeated here; a test checks they agree): SQLite in the home, copied through the
# backup API like any SQLite file, or PostgreSQL when the DSN is set (dumped as "accounts").
ACCOUNTS_FILE = "accounts.sqlite3"
ACCOUNTS_DSN_ENV = "CBI_ACCOUNTS_DSN"
# Key tables summarised at the top of the manifest: (label, store file, table).
KEY_TABLES = (
    ("forecast_history", "forecasts.duckdb", FORECAST_TABLE),
    ("alert_state", "operations.duckdb", STATE_TABLE),
    ("alert_log", "operations.duckdb", LOG_TABLE),
    ("alert_answer_log", "operations.duckdb", ANSWER_LOG_TABLE),
    ("audit_log", "operations.duckdb", AUDIT_TABLE),
    ("condition_log", "operations.duckdb", CONDITION_TABLE),
    ("users", ACCOUNTS_FILE, "users"),
    ("sessions", ACCOUNTS_FILE, "sessions"),
    ("programmes", ACCOUNTS_FILE, "programmes"),
    ("price_alerts", ACCOUNTS_FILE, "price_alerts"),
)
# MLflow columns that hold absolute artifact locations (rewritten when a home moves).
MLFLOW_LOCATION_COLUMNS = ("artifact_location", "artifact_uri", "storage_location")


class BackupError(RuntimeError):
    """A backup or restore that cannot be done as asked; the message names the file."""


@dataclass(frozen=True)
class PostgresTarget:
    name: str  # "dagster", "mlflow" or "accounts"
    url: str  # postgresql://user:password@host:port/db


@dataclass
class BackupSources:
    """What to back up: the home, the Dagster instance, MLflow, the effective config files."""

    home: Path
    dagster_home: Path | None = None  # None or inside `home`: covered by the home
    mlflow_uri: str | None = None  # None: sqlite:///<home>/mlflow.db
    config_files: dict[str, Path] = field(default_factory=dict)  # name in backup -> file
    postgres: list[PostgresTarget] = field(default_factory=list)


def sources_from_env(home: Path, env: Mapping[str, str]) -> BackupSources:
    """The sources a deployment with this environment uses (as `defs/resources.py` reads it)."""
    home = Path(home).resolve()
    dagster_home = Path(env["DAGSTER_HOME"]).resolve() if env.get("DAGSTER_HOME") else None
    mlflow_uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    configs = {
        "monitoring.yaml": Path(env.get("CBI_MONITORING") or DEFAULT_MONITORING_FILE),
        "protocol.yaml": Path(env.get("CBI_PROTOCOL") or PROTOCOL_PATH),
    }
    for var, name in (("CBI_SPECS", "specs.yaml"), ("CBI_MANIFEST", "manifest.yaml")):
        if env.get(var):
            configs[name] = Path(env[var])
    postgres = []
    instance_yaml = (dagster_home or home) / "dagster.yaml"
    dagster_pg = dagster_postgres_url(instance_yaml, env)
    if dagster_pg:
        postgres.append(PostgresTarget("dagster", dagster_pg))
    if mlflow_uri.startswith("postgres"):
        postgres.append(PostgresTarget("mlflow", _plain_postgres_url(mlflow_uri)))
    accounts_dsn = env.get(ACCOUNTS_DSN_ENV) or ""
    if accounts_dsn.startswith("postgres"):
        postgres.append(PostgresTarget("accounts", _plain_postgres_url(accounts_dsn)))
    return BackupSources(home, dagster_home, mlflow_uri, configs, postgres)


def _plain_postgres_url(uri: str) -> str:
    """`postgresql+psycopg2://...` (SQLAlchemy) as the libpq URL pg_dump takes."""
    scheme, rest = uri.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else uri


def _config_value(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, Mapping) and set(value) == {"env"}:
        return env.get(value["env"])
    return value


def dagster_postgres_url(instance_yaml: Path, env: Mapping[str, str]) -> str | None:
    """The PostgreSQL URL of the instance's storage when dagster.yaml uses dagster-postgres."""
    if not instance_yaml.exists():
        return None
    config = yaml.safe_load(instance_yaml.read_text()) or {}
    candidates = []
    storage = config.get("storage") or {}
    if isinstance(storage, Mapping) and "postgres" in storage:
        candidates.append(storage["postgres"])
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        section = config.get(key) or {}
        if "postgres" in str(section.get("module", "")):
            candidates.append(section.get("config") or {})
    for pg in candidates:
        pg = pg or {}
        url = _config_value(pg.get("postgres_url"), env)
        if url:
            return _plain_postgres_url(url)
        db = {k: _config_value(v, env) for k, v in (pg.get("postgres_db") or {}).items()}
        if db.get("hostname") and db.get("db_name"):
            auth = urllib.parse.quote(str(db.get("username", "")), safe="")
            if db.get("password"):
                auth += ":" + urllib.parse.quote(str(db["password"]), safe="")
            port = f":{db['port']}" if db.get("port") else ""
            return f"postgresql://{auth}@{db['hostname']}{port}/{db['db_name']}"
    return None


def redact(url: str) -> str:
    """A URL without its password, for the manifest and messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def postgres_binary(name: str) -> str:
    """`pg_dump` / `pg_restore`: the newest under /usr/lib/postgresql/*/bin, else on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if found:
        return str(found[-1])
    on_path = shutil.which(name)
    if on_path is None:
        raise BackupError(f"{name} not found (install the PostgreSQL client tools)")
    return on_path


# ---- the copy ------------------------------------------------------------------------------


class _Progress:
    def __init__(self, stream: TextIO | None):
        self.stream = stream

    def __call__(self, message: str) -> None:
        if self.stream is not None:
            print(f"backup: {message}", file=self.stream, flush=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy(source: Path, target: Path, progress: _Progress, label: str) -> None:
    """Copy a file in chunks, with a progress line every PROGRESS_BYTES for big files."""
    target.parent.mkdir(parents=True, exist_ok=True)
    size = source.stat().st_size
    done, next_report = 0, PROGRESS_BYTES
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            done += len(chunk)
            if done >= next_report:
                progress(f"{label}: {done / 2**20:,.0f} of {size / 2**20:,.0f} MiB")
                next_report += PROGRESS_BYTES
    shutil.copystat(source, target)


def _is_duckdb(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(12)[8:12] == b"DUCK"


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(16) == SQLITE_MAGIC


def duckdb_table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() ORDER BY 1, 2"
    ).fetchall()
    return {
        f"{s}.{t}": con.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0]
        for s, t in tables
    }


def sqlite_table_counts(con: sqlite3.Connection) -> dict[str, int]:
    names = [
        r[0]
        for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


@contextlib.contextmanager
def _duckdb_writer(path: Path, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection, retried while another process that ignores our lock (a `duckdb`
    shell on the file) holds DuckDB's own file lock."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            con = duckdb.connect(str(path))
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise BackupError(f"{path}: cannot open it for a consistent copy: {exc}") from exc
            time.sleep(0.2)
    try:
        yield con
    finally:
        con.close()


def snapshot_folder(database: Path) -> Path:
    """`<stem>.snapshots/` beside a store (`storage.snapshot_path`'s folder)."""
    return database.with_name(f"{database.stem}.snapshots")


@dataclass
class _Writer:
    """Collects the files of one backup and their manifest entries."""

    root: Path
    progress: _Progress
    files: list[dict[str, Any]] = field(default_factory=list)
    row_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, rel: str, kind: str, source: Path | None = None) -> None:
        path = self.root / rel
        self.files.append(
            {
                "path": rel,
                "kind": kind,
                "size": path.stat().st_size,
                "sha256": _sha256(path),
                **({"source": str(source)} if source is not None else {}),
            }
        )

    def copy_file(self, source: Path, rel: str, kind: str = "file") -> None:
        _copy(source, self.root / rel, self.progress, rel)
        self.add(rel, kind, source)

    def copy_duckdb(self, source: Path, rel: str, timeout: float) -> None:
        """Under the store's write lock: checkpoint, count, copy the file and its snapshots."""
        size = source.stat().st_size
        self.progress(f"{rel} ({size / 2**20:,.1f} MiB) under its write lock")
        snapshots = snapshot_folder(source)
        with write_lock(source, timeout), _duckdb_writer(source, timeout) as con:
            con.execute("CHECKPOINT")
            wal = Path(f"{source}.wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise BackupError(f"{source}: a WAL is still pending after CHECKPOINT ({wal})")
            self.row_counts[rel] = duckdb_table_counts(con)
            _copy(source, self.root / rel, self.progress, rel)
            snapshot_files = sorted(snapshots.glob("*.parquet")) if snapshots.is_dir() else []
            snapshot_rel = str(Path(rel).parent / snapshots.name)
            for snap in snapshot_files:
                _copy(snap, self.root / snapshot_rel / snap.name, self.progress, snap.name)
        self.add(rel, "duckdb", source)
        for snap in snapshot_files:
            self.add(f"{snapshot_rel}/{snap.name}", "snapshot", snap)

    def copy_sqlite(self, source: Path, rel: str) -> None:
        """SQLite's online backup API: a consistent copy while MLflow or Dagster writes."""
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        size = source.stat().st_size
        if size > PROGRESS_BYTES:
            self.progress(f"{rel} ({size / 2**20:,.1f} MiB) via the SQLite backup API")
        src = sqlite3.connect(str(source), timeout=60)
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst, pages=4096)
            self.row_counts[rel] = sqlite_table_counts(dst)
        finally:
            dst.close()
            src.close()
        self.add(rel, "sqlite", source)

    def copy_locked(self, source: Path, rel: str, timeout: float) -> None:
        with write_lock(source, timeout):
            self.copy_file(source, rel, "locked")

    def copy_tree(
        self,
        folder: Path,
        prefix: str,
        excludes: Sequence[str],
        timeout: float,
        skip: Sequence[Path] = (),
    ) -> None:
        """Every file under `folder` (symlinked files are copied as their content)."""
        stores = [p for p in folder.rglob("*.duckdb") if p.is_file() and _is_duckdb(p)]
        covered = {snapshot_folder(p) for p in stores}
        plain = 0
        for dirpath, dirnames, filenames in os.walk(folder):
            here = Path(dirpath)
            rel_dir = here.relative_to(folder)
            dirnames[:] = sorted(
                d
                for d in dirnames
                if here / d not in covered
                and (here / d).resolve() not in skip
                and not d.startswith(".")
                and not _excluded(str(rel_dir / d), excludes)
            )
            for name in sorted(filenames):
                path = here / name
                rel_in = str(rel_dir / name) if str(rel_dir) != "." else name
                rel = f"{prefix}/{rel_in}"
                if (
                    name.startswith(".")
                    or name.endswith(SKIPPED_SUFFIXES)
                    or _excluded(rel_in, excludes)
                    or not path.is_file()
                ):
                    continue
                if path in stores:
                    self.copy_duckdb(path, rel, timeout)
                elif _is_sqlite(path):
                    self.copy_sqlite(path, rel)
                elif Path(f"{path}.lock").exists():
                    self.copy_locked(path, rel, timeout)
                else:
                    self.copy_file(path, rel)
                    plain += 1
        self.progress(f"{prefix}/: {plain} other file(s)")

    def dump_postgres(self, target: PostgresTarget) -> dict[str, str]:
        rel = f"postgres/{target.name}.dump"
        out = self.root / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        self.progress(f"pg_dump {target.name} ({redact(target.url)})")
        result = subprocess.run(
            [postgres_binary("pg_dump"), "--format=custom", "--no-owner", "--file", str(out)]
            + ["--dbname", target.url],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BackupError(
                f"pg_dump of {target.name} ({redact(target.url)}) failed: {result.stderr.strip()}"
            )
        self.add(rel, "pg_dump")
        return {"name": target.name, "file": rel, "source": redact(target.url)}


def _excluded(rel: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or rel.split("/")[0] == p for p in patterns)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def platform_version() -> dict[str, Any]:
    """The package version and, in a git checkout, the commit (+ whether it was dirty)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        info: dict[str, Any] = {"version": version("cbi-platform")}
    except PackageNotFoundError:
        info = {"version": None}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        info.update(commit=commit, dirty=bool(dirty))
    except (OSError, subprocess.CalledProcessError):
        info.update(commit=None, dirty=None)
    return info


def _is_tarball(path: Path) -> bool:
    return path.name.endswith((".tar", ".tar.gz", ".tgz"))


def backup(
    sources: BackupSources,
    out: Path,
    *,
    progress: TextIO | None = None,
    excludes: Sequence[str] = DEFAULT_EXCLUDES,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Write a backup of `sources` to the folder (or .tar/.tar.gz/.tgz) `out`; returns the
    manifest. Refuses an `out` that exists and is not an empty folder."""
    home = Path(sources.home).resolve()
    if not home.is_dir():
        raise BackupError(f"{home}: no such platform home")
    out = Path(out).resolve()
    if _inside(out, home):
        raise BackupError(f"{out} is inside the home {home}: write the backup elsewhere")
    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise BackupError(f"{out} already exists and is not empty: choose a new path")
    report = _Progress(progress)
    started = time.monotonic()
    staging_parent = None
    if _is_tarball(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        staging_parent = tempfile.mkdtemp(prefix=".cbi-backup-", dir=out.parent)
        root = Path(staging_parent) / "backup"
    else:
        root = out
    root.mkdir(parents=True, exist_ok=True)
    try:
        writer = _Writer(root, report)
        dagster_home = Path(sources.dagster_home).resolve() if sources.dagster_home else None
        separate_dagster = dagster_home is not None and not _inside(dagster_home, home)
        skip = [dagster_home] if separate_dagster and _inside(home, dagster_home) else []
        writer.copy_tree(home, "home", excludes, timeout, skip=skip)
        if separate_dagster and dagster_home.is_dir():
            writer.copy_tree(dagster_home, "dagster_home", excludes, timeout)
        mlflow_uri = sources.mlflow_uri or f"sqlite:///{home / 'mlflow.db'}"
        if mlflow_uri.startswith("sqlite:///"):
            db = Path(mlflow_uri.removeprefix("sqlite:///")).resolve()
            inside = _inside(db, home) or (separate_dagster and _inside(db, dagster_home))
            if db.exists() and not inside:
                writer.copy_sqlite(db, "external/mlflow.db")
        for name, path in sorted(sources.config_files.items()):
            if path.is_file():
                writer.copy_file(path, f"config/{name}", "config")
        dumps = [writer.dump_postgres(t) for t in sources.postgres]
        counts = writer.row_counts
        key_tables = {
            label: counts[f"home/{store}"].get(table)
            for label, store, table in KEY_TABLES
            if f"home/{store}" in counts
        }
        manifest = {
            "format": FORMAT,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "platform": platform_version(),
            "source": {
                "home": str(home),
                "home_uri": home.as_uri(),
                "dagster_home": str(dagster_home) if separate_dagster else None,
                "mlflow_tracking_uri": redact(mlflow_uri),
            },
            "key_tables": key_tables,
            "row_counts": counts,
            "postgres": dumps,
            "files": writer.files,
        }
        (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if staging_parent is not None:
            mode = "w:gz" if out.name.endswith(("gz", "tgz")) else "w"
            partial = out.with_name(f".{out.name}.partial")
            with tarfile.open(partial, mode) as tar:
                tar.add(root, arcname=".")
            os.replace(partial, out)
    finally:
        if staging_parent is not None:
            shutil.rmtree(staging_parent, ignore_errors=True)
    total = sum(f["size"] for f in manifest["files"])
    report(
        f"{len(manifest['files'])} file(s), {total / 2**20:,.1f} MiB in "
        f"{time.monotonic() - started:.1f}s -> {out}"
    )
    return manifest


# ---- the restore ---------------------------------------------------------------------------


@dataclass
class RestoreReport:
    manifest: dict[str, Any]
    lines: list[str] = field(default_factory=list)


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.exists():
        raise BackupError(f"{root}: no {MANIFEST}: not a cbi backup")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: backup format {manifest.get('format')!r} is not {FORMAT}")
    return manifest


def verify(root: Path) -> dict[str, Any]:
    """Every file of the manifest is present with its size and SHA-256 (names the first bad one)."""
    manifest = read_manifest(root)
    for entry in manifest["files"]:
        path = root / entry["path"]
        if not path.is_file():
            raise BackupError(f"backup file {entry['path']} is missing from {root}")
        size = path.stat().st_size
        if size != entry["size"]:
            raise BackupError(
                f"backup file {entry['path']} is corrupt: {size} bytes, the manifest says "
                f"{entry['size']}"
            )
        if _sha256(path) != entry["sha256"]:
            raise BackupError(
                f"backup file {entry['path']} is corrupt: its SHA-256 does not match the manifest"
            )
    return manifest


@contextlib.contextmanager
def opened_backup(source: Path) -> Iterator[Path]:
    """A backup folder, or a tarball unpacked into a temporary folder."""
    source = Path(source).resolve()
    if source.is_dir():
        yield source
        return
    if not source.is_file() or not tarfile.is_tarfile(source):
        raise BackupError(f"{source}: neither a backup folder nor a tarball")
    with tempfile.TemporaryDirectory(prefix="cbi-restore-") as tmp:
        with tarfile.open(source) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def _relocate_mlflow(db: Path, old_uri: str, new_uri: str) -> int:
    """Point the absolute artifact locations of a moved home's MLflow store at the new home."""
    if old_uri == new_uri:
        return 0
    changed = 0
    with contextlib.closing(sqlite3.connect(str(db))) as con, con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = {r[1] for r in con.execute(f'PRAGMA table_info("{table}")')}
            for column in columns.intersection(MLFLOW_LOCATION_COLUMNS):
                changed += con.execute(
                    f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
                    f'WHERE substr("{column}", 1, ?) = ?',
                    [new_uri, len(old_uri) + 1, len(old_uri), old_uri],
                ).rowcount
    return changed


def _check_counts(path: Path, expected: Mapping[str, int], kind: str) -> None:
    if kind == "duckdb":
        with contextlib.closing(duckdb.connect(str(path), read_only=True)) as con:
            found = duckdb_table_counts(con)
    else:
        with contextlib.closing(sqlite3.connect(str(path))) as con:
            found = sqlite_table_counts(con)
    if found != dict(expected):
        wrong = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        raise BackupError(f"{path}: restored row counts differ from the manifest in {wrong}")


def restore(
    source: Path,
    home: Path,
    *,
    dagster_home: Path | None = None,
    force: bool = False,
    postgres_urls: Mapping[str, str] | None = None,
    progress: TextIO | None = None,
) -> RestoreReport:
    """Verify every checksum of the backup at `source`, then restore it into `home` (the
    Dagster instance into `dagster_home` when it was separate; PostgreSQL dumps into the URLs
    of `postgres_urls`, keyed "dagster" / "mlflow" / "accounts"). Nothing is written unless
    all files check out. A non-empty home is refused unless `force` (then the backup's files
    replace theirs)."""
    home = Path(home).resolve()
    postgres_urls = dict(postgres_urls or {})
    with opened_backup(source) as root:
        manifest = verify(root)
        report = RestoreReport(manifest)
        report.lines.append(
            f"verified {len(manifest['files'])} file(s) against {MANIFEST} (backup of "
            f"{manifest['source']['home']} at {manifest['created_at']}, commit "
            f"{(manifest['platform'].get('commit') or 'unknown')[:12]})"
        )
        separate = manifest["source"].get("dagster_home")
        dagster_target = Path(dagster_home).resolve() if dagster_home else home
        targets = {home} | ({dagster_target} if separate else set())
        for folder in sorted(targets):
            if folder.exists() and any(folder.iterdir()) and not force:
                raise BackupError(
                    f"{folder} is not empty: restore into a new home, or pass --force to "
                    "replace its files with the backup's"
                )
        missing_pg = [d["name"] for d in manifest["postgres"] if d["name"] not in postgres_urls]
        if missing_pg:
            report.lines.append(
                f"not restored: PostgreSQL dump(s) {missing_pg} (pass --postgres NAME=URL)"
            )
        counts = manifest["row_counts"]
        restored: dict[str, int] = {}
        run_dbs = 0
        for entry in manifest["files"]:
            rel = entry["path"]
            top, _, rest = rel.partition("/")
            if top == "home":
                target = home / rest
            elif top == "dagster_home":
                target = dagster_target / rest
            elif top == "external":
                target = home / rest  # an MLflow SQLite store that lived outside the home
            elif top == "config":
                target = home / "config" / rest
            else:
                continue  # postgres dumps: below
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry["kind"] == "duckdb":
                Path(f"{target}.wal").unlink(missing_ok=True)
            if entry["kind"] == "sqlite":
                for suffix in ("-wal", "-shm", "-journal"):
                    Path(f"{target}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(root / rel, target)
            if entry["kind"] in ("duckdb", "sqlite"):
                _check_counts(target, counts.get(rel, {}), entry["kind"])
            restored[top] = restored.get(top, 0) + 1
            if entry["kind"] == "sqlite" and Path(rel).parent.name == "runs":
                run_dbs += 1  # one event-log database per Dagster run: summed up below
            elif entry["kind"] in ("duckdb", "sqlite"):
                tables = counts.get(rel, {})
                report.lines.append(
                    f"restored {target} ({entry['kind']}, {len(tables)} table(s), "
                    f"{sum(tables.values()):,} row(s), counts match the manifest)"
                )
        if run_dbs:
            report.lines.append(
                f"restored {run_dbs} Dagster run event log(s) (history/runs/*.db), counts match "
                "the manifest"
            )
        old_uri = manifest["source"]["home_uri"]
        for db in (home / "mlflow.db",):
            if db.exists() and _is_sqlite(db):
                moved = _relocate_mlflow(db, old_uri, home.as_uri())
                if moved:
                    report.lines.append(
                        f"MLflow: {moved} artifact location(s) now point into {home} "
                        f"(were {old_uri})"
                    )
        for dump in manifest["postgres"]:
            url = postgres_urls.get(dump["name"])
            if url is None:
                continue
            result = subprocess.run(
                [postgres_binary("pg_restore"), "--no-owner", "--clean", "--if-exists"]
                + ["--dbname", url, str(root / dump["file"])],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise BackupError(
                    f"pg_restore of {dump['file']} into {redact(url)} failed: "
                    f"{result.stderr.strip()}"
                )
            report.lines.append(f"restored {dump['file']} into {redact(url)}")
        names = {"home": home, "dagster_home": dagster_target, "external": home}
        for top, n in sorted(restored.items()):
            where = names.get(top, home / "config")
            report.lines.append(f"{top}: {n} file(s) -> {where}")
        if "config" in restored:
            report.lines.append(
                f"config files (monitoring, protocol...) are in {home / 'config'}: point "
                "CBI_MONITORING / CBI_PROTOCOL at them if they differ from the checkout's"
            )
    return report
