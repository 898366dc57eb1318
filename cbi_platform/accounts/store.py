"""The buyer's data: users, sessions, programmes, price alerts and digest subscriptions.

These are the first rows the API writes, so they live in a small transactional store of their
own, not in the DuckDB files (which the API never opens for writing, see `storage`):

- by default SQLite in WAL mode at `<home>/accounts.sqlite3` (readers never block the one
  writer; each write is one short transaction with a busy timeout);
- PostgreSQL when `CBI_ACCOUNTS_DSN` is set (the production stack sets it to a database of its
  own on the stack's server).

One schema serves both: portable SQL with `?` placeholders (translated for psycopg2), ids from
`{id}` (INTEGER PRIMARY KEY AUTOINCREMENT / BIGSERIAL PRIMARY KEY) and times as ISO-8601 UTC
text. `schema_version` records the layout; opening an older store migrates it in one
transaction, and a newer one is refused with a message that says to upgrade the code.

Tables (every user-owned row carries `user_id`, and every query that reads one filters by it):
- `users`: email (unique, lower case), name, role (`buyer` | `engineer`), argon2 password hash,
  sign-in failure count and lock-out time, disabled time;
- `sessions`: SHA-256 of the session id (the id itself only in the cookie), the CSRF token,
  created / last seen / expires;
- `signin_attempts`: every sign-in try (email, client address, time, ok) for rate limiting;
- `programmes`: one per user: volume, buying window, carry, tolerated worst-window shortfall;
- `programme_backtests`: one per programme hash: queued → running → ready | failed, the Dagster
  run id, the result as JSON;
- `price_alerts` and `price_alert_mails` (one row per alert and crossing: the dedup key);
- `digest_subscriptions`: cadence, the unsubscribe token's hash, what the last digest held.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCOUNTS_FILE = "accounts.sqlite3"
DSN_ENV = "CBI_ACCOUNTS_DSN"
SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 30.0
MIGRATION_LOCK_KEY = 0x43424941  # "CBIA": PostgreSQL advisory lock held while migrating

# `{id}` becomes the dialect's auto-increment key. Keep each statement portable otherwise.
_SCHEMA_V1 = (
    """CREATE TABLE IF NOT EXISTS users (
        id {id},
        email TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('buyer', 'engineer')),
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        password_changed_at TEXT NOT NULL,
        failed_signins INTEGER NOT NULL DEFAULT 0,
        locked_until TEXT,
        disabled_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS sessions (
        id_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id)",
    """CREATE TABLE IF NOT EXISTS signin_attempts (
        id {id},
        email TEXT NOT NULL,
        client TEXT NOT NULL,
        at TEXT NOT NULL,
        ok INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS signin_attempts_at ON signin_attempts (at)",
    """CREATE TABLE IF NOT EXISTS programmes (
        user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        railcar_lb DOUBLE PRECISION NOT NULL,
        railcars_per_window INTEGER NOT NULL,
        window_days INTEGER NOT NULL,
        carry_cents_per_lb_month DOUBLE PRECISION NOT NULL,
        max_worst_shortfall_cents DOUBLE PRECISION NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS programme_backtests (
        programme_hash TEXT PRIMARY KEY,
        params_json TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'ready', 'failed')),
        requested_at TEXT NOT NULL,
        run_id TEXT,
        finished_at TEXT,
        result_json TEXT,
        error TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS price_alerts (
        id {id},
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        horizon TEXT NOT NULL,
        rule TEXT NOT NULL,
        level DOUBLE PRECISION,
        created_at TEXT NOT NULL,
        removed_at TEXT,
        last_side TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS price_alerts_user ON price_alerts (user_id)",
    """CREATE TABLE IF NOT EXISTS price_alert_mails (
        alert_id INTEGER NOT NULL REFERENCES price_alerts(id) ON DELETE CASCADE,
        crossing_as_of TEXT NOT NULL,
        sent_at TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (alert_id, crossing_as_of)
    )""",
    """CREATE TABLE IF NOT EXISTS digest_subscriptions (
        user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        cadence TEXT NOT NULL CHECK (cadence IN ('daily', 'weekly', 'off')),
        unsubscribe_token_hash TEXT NOT NULL,
        last_sent_as_of TEXT,
        last_payload TEXT
    )""",
)
# Version 2 (the buyer's mail, issue 22 §5-§6): an outbox of rendered mails (each row written in
# the transaction that decided to mail, delivered later: an SMTP outage delays, never loses; a
# crash mid-send is never resent, see `accounts.outbox`), and the buyer's note on a price alert.
_SCHEMA_V2 = (
    """CREATE TABLE IF NOT EXISTS mail_outbox (
        id {id},
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('digest', 'price_alert')),
        dedup_key TEXT NOT NULL UNIQUE,
        recipient TEXT NOT NULL,
        as_of TEXT NOT NULL,
        ref_id INTEGER,
        message_id TEXT NOT NULL,
        message TEXT NOT NULL,
        payload TEXT,
        unsubscribe_token_hash TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL
            CHECK (status IN ('queued', 'sending', 'sent', 'in_doubt', 'superseded')),
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        claimed_at TEXT,
        sent_at TEXT,
        last_error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS mail_outbox_status ON mail_outbox (status)",
    "CREATE INDEX IF NOT EXISTS mail_outbox_user ON mail_outbox (user_id, kind)",
    "ALTER TABLE price_alerts ADD COLUMN note TEXT",
)
MIGRATIONS: dict[int, tuple[str, ...]] = {1: _SCHEMA_V1, 2: _SCHEMA_V2}


class AccountStoreError(RuntimeError):
    """The accounts store cannot be opened or is of a layout this code does not know."""


def utc_now() -> str:
    """Now as ISO-8601 UTC text with seconds (what every time column holds)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def parse_time(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


_PLACEHOLDER = re.compile(r"\?")


@dataclass
class Tx:
    """One transaction: `execute` with `?` placeholders; rows come back as dicts."""

    _cursor: Any
    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Tx:
        if self.dialect == "postgresql":
            sql = _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))
        self._cursor.execute(sql, tuple(params))
        return self

    def _names(self) -> list[str]:
        return [d[0] for d in self._cursor.description or ()]

    def one(self) -> dict[str, Any] | None:
        row = self._cursor.fetchone()
        return None if row is None else dict(zip(self._names(), row, strict=True))

    def all(self) -> list[dict[str, Any]]:
        names = self._names()
        return [dict(zip(names, row, strict=True)) for row in self._cursor.fetchall()]

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """An INSERT into a table with an `{id}` key; returns the new id."""
        if self.dialect == "postgresql":
            self.execute(sql.rstrip().rstrip(";") + " RETURNING id", params)
            return int(self._cursor.fetchone()[0])
        self.execute(sql, params)
        return int(self._cursor.lastrowid)

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


class AccountStore:
    """The store at `location`: a SQLite file path, or a `postgresql://` DSN."""

    def __init__(self, location: str | Path):
        text = str(location)
        self.dialect = "postgresql" if text.startswith(("postgresql:", "postgres:")) else "sqlite"
        self.location = text if self.dialect == "postgresql" else Path(location)
        self._migrated = False

    @classmethod
    def for_home(cls, home: str | Path, env: Mapping[str, str] | None = None) -> AccountStore:
        """The deployment's store: `$CBI_ACCOUNTS_DSN` when set, else the home's SQLite file."""
        env = os.environ if env is None else env
        dsn = env.get(DSN_ENV)
        return cls(dsn) if dsn else cls(Path(home) / ACCOUNTS_FILE)

    def describe(self) -> str:
        """Where it is, without any password."""
        if self.dialect == "sqlite":
            return str(self.location)
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", str(self.location))

    def _connect(self):
        if self.dialect == "postgresql":
            import psycopg2  # heavy: delayed

            return psycopg2.connect(str(self.location), connect_timeout=10)
        path = Path(self.location)
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        return con

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One transaction (committed on leaving, rolled back on an exception). SQLite takes
        its write lock at the start (BEGIN IMMEDIATE), so read-then-write cannot race."""
        if not self._migrated:
            self.migrate()
        with self._raw() as tx:
            yield tx

    @contextlib.contextmanager
    def _raw(self) -> Iterator[Tx]:
        try:
            con = self._connect()
        except Exception as exc:  # noqa: BLE001 - one clear message for either driver
            raise AccountStoreError(
                f"cannot open the accounts store {self.describe()}: {exc}"
            ) from exc
        try:
            if self.dialect == "sqlite":
                con.execute("BEGIN IMMEDIATE")
                cursor = con.cursor()
            else:
                cursor = con.cursor()
            tx = Tx(cursor, self.dialect)
            try:
                yield tx
            except BaseException:
                con.rollback() if self.dialect == "postgresql" else con.execute("ROLLBACK")
                raise
            con.commit() if self.dialect == "postgresql" else con.execute("COMMIT")
        finally:
            con.close()

    def migrate(self) -> int:
        """Bring the layout to SCHEMA_VERSION (idempotent); returns the version found."""
        key = (
            "BIGSERIAL PRIMARY KEY"
            if self.dialect == "postgresql"
            else ("INTEGER PRIMARY KEY AUTOINCREMENT")
        )
        with self._raw() as tx:
            if self.dialect == "postgresql":
                # Services starting together (API, daemon, code server) must not migrate twice:
                # one waits for the other's transaction, then finds the layout current. SQLite's
                # BEGIN IMMEDIATE serializes them already.
                tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
            tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = tx.execute("SELECT MAX(version) AS v FROM schema_version").one()
            found = int(row["v"]) if row and row["v"] is not None else 0
            if found > SCHEMA_VERSION:
                raise AccountStoreError(
                    f"the accounts store {self.describe()} has layout {found}, newer than this "
                    f"code's {SCHEMA_VERSION}: upgrade the platform before opening it"
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    tx.execute(statement.replace("{id}", key))
                tx.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        self._migrated = True
        return found

    def table_counts(self) -> dict[str, int]:
        """Rows per table (backup manifests, tests)."""
        tables = (
            "users",
            "sessions",
            "signin_attempts",
            "programmes",
            "programme_backtests",
            "price_alerts",
            "price_alert_mails",
            "digest_subscriptions",
            "mail_outbox",
        )
        with self.transaction() as tx:
            return {t: int(tx.execute(f"SELECT COUNT(*) AS n FROM {t}").one()["n"]) for t in tables}
