"""Sessions: only the id's hash stored, idle and absolute expiry, cheap reads."""

from __future__ import annotations

import datetime as dt
import hashlib

from cbi_platform.accounts.sessions import ABSOLUTE_LIFETIME, IDLE_TIMEOUT, Sessions
from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import Users
from cbi_platform_tests.accounts.test_users import ManualClock


def _setup(tmp_path):
    clock = ManualClock()
    store = AccountStore(tmp_path / "accounts.sqlite3")
    user = Users(store, clock).add("ann@example.com", "Ann", "buyer", "correct horse battery")
    return clock, store, user, Sessions(store, clock)


def test_only_the_hash_is_stored_and_lookup_finds_the_user(tmp_path):
    clock, store, user, sessions = _setup(tmp_path)
    session_id, session = sessions.create(user)
    with store.transaction() as tx:
        rows = tx.execute("SELECT * FROM sessions").all()
    assert len(rows) == 1 and session_id not in str(rows)
    assert rows[0]["id_hash"] == hashlib.sha256(session_id.encode()).hexdigest()
    found = sessions.lookup(session_id)
    assert found.user == user and found.csrf_token == session.csrf_token
    assert sessions.lookup(session_id + "x") is None and sessions.lookup("") is None
    other_id, other = sessions.create(user)
    assert other_id != session_id and other.csrf_token != session.csrf_token


def test_idle_timeout_ends_a_session_and_use_keeps_it(tmp_path):
    clock, store, user, sessions = _setup(tmp_path)
    session_id, _ = sessions.create(user)
    clock.advance(IDLE_TIMEOUT - dt.timedelta(minutes=1))
    assert sessions.lookup(session_id) is not None  # touched: last_seen moves
    clock.advance(IDLE_TIMEOUT - dt.timedelta(minutes=1))
    assert sessions.lookup(session_id) is not None
    clock.advance(IDLE_TIMEOUT + dt.timedelta(seconds=1))
    assert sessions.lookup(session_id) is None
    assert store.table_counts()["sessions"] == 0  # an expired session is deleted


def test_absolute_lifetime_ends_even_a_busy_session(tmp_path):
    clock, store, user, sessions = _setup(tmp_path)
    session_id, _ = sessions.create(user)
    elapsed = dt.timedelta(0)
    while elapsed < ABSOLUTE_LIFETIME - dt.timedelta(hours=2):
        clock.advance(dt.timedelta(hours=1))
        elapsed += dt.timedelta(hours=1)
        assert sessions.lookup(session_id) is not None
    clock.advance(dt.timedelta(hours=2))
    assert sessions.lookup(session_id) is None


def test_last_seen_is_written_at_most_once_a_minute(tmp_path):
    clock, store, user, sessions = _setup(tmp_path)
    session_id, session = sessions.create(user)
    clock.advance(dt.timedelta(seconds=30))
    assert sessions.lookup(session_id).last_seen_at == session.last_seen_at
    clock.advance(dt.timedelta(seconds=31))
    assert sessions.lookup(session_id).last_seen_at == clock.now


def test_destroy_and_destroy_all(tmp_path):
    clock, store, user, sessions = _setup(tmp_path)
    first, s1 = sessions.create(user)
    second, _ = sessions.create(user)
    sessions.destroy(s1.id_hash)
    assert sessions.lookup(first) is None and sessions.lookup(second) is not None
    assert sessions.destroy_all(user.id) == 1
    assert sessions.lookup(second) is None
