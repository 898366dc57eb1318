"""Sign-in sessions: a random id in the cookie, only its SHA-256 in the store.

A leaked copy of the store cannot be replayed as a cookie. Each session has its own random
CSRF token (sent back by the page in a header on every write). A session ends when it has not
been used for IDLE_TIMEOUT, at ABSOLUTE_LIFETIME after sign-in whatever its use, at sign-out,
and with every other session of its user when the password changes, is reset, or the user is
removed. `last_seen_at` is written at most once per TOUCH_INTERVAL so reads stay cheap.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, replace

from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import Clock, User, iso, system_clock

# A working day of idleness ends a session; a week ends it in any case (the buyer signs in
# about once a week); last_seen is written at most once a minute.
IDLE_TIMEOUT = dt.timedelta(hours=8)
ABSOLUTE_LIFETIME = dt.timedelta(days=7)
TOUCH_INTERVAL = dt.timedelta(minutes=1)
MAX_SESSION_ID_LENGTH = 100  # longer cookies are refused before hashing


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    id_hash: str
    user: User
    csrf_token: str
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime

    def ends_at(self) -> dt.datetime:
        """When this session ends if not used again."""
        return min(self.expires_at, self.last_seen_at + IDLE_TIMEOUT)


class Sessions:
    def __init__(self, store: AccountStore, clock: Clock = system_clock):
        self.store, self.clock = store, clock

    def create(self, user: User) -> tuple[str, Session]:
        """A new session for `user`: (the id for the cookie, shown once; the session)."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock().replace(microsecond=0)
        session = Session(
            id_hash=hash_session_id(session_id),
            user=user,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + ABSOLUTE_LIFETIME,
        )
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE expires_at < ?", (iso(now),))
            tx.execute(
                "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, last_seen_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session.id_hash,
                    user.id,
                    session.csrf_token,
                    iso(now),
                    iso(now),
                    iso(session.expires_at),
                ),
            )
        return session_id, session

    def lookup(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown, expired: an expired one is
        deleted)."""
        if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
            return None
        return self.lookup_hash(hash_session_id(session_id))

    def lookup_hash(self, id_hash: str) -> Session | None:
        now = self.clock()
        with self.store.transaction() as tx:
            row = tx.execute(
                "SELECT s.*, u.email, u.name, u.role, u.disabled_at FROM sessions s"
                " JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?",
                (id_hash,),
            ).one()
            if row is None:
                return None
            session = Session(
                id_hash=id_hash,
                user=User(int(row["user_id"]), row["email"], row["name"], row["role"]),
                csrf_token=row["csrf_token"],
                created_at=dt.datetime.fromisoformat(row["created_at"]),
                last_seen_at=dt.datetime.fromisoformat(row["last_seen_at"]),
                expires_at=dt.datetime.fromisoformat(row["expires_at"]),
            )
            if row["disabled_at"] or session.ends_at() <= now:
                tx.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))
                return None
            if now - session.last_seen_at >= TOUCH_INTERVAL:
                tx.execute(
                    "UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?", (iso(now), id_hash)
                )
                session = replace(session, last_seen_at=now.replace(microsecond=0))
        return session

    def destroy(self, id_hash: str) -> None:
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))

    def destroy_all(self, user_id: int) -> int:
        with self.store.transaction() as tx:
            return tx.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount
