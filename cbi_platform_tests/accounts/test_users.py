"""Users: validation, argon2 hashes, lock-out and rate limit on an injectable clock."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from cbi_platform.accounts import users as users_module
from cbi_platform.accounts.sessions import Sessions
from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import (
    FAILURE_WINDOW,
    LOCKOUT,
    MAX_FAILED_SIGNINS,
    MAX_TRIES_PER_CLIENT,
    SIGNIN_FAILED,
    AccountError,
    SignInRefused,
    Users,
)

PASSWORD = "correct horse battery"


class ManualClock:
    """A clock the test moves by hand (no sleeping)."""

    def __init__(self, start: dt.datetime | None = None):
        self.now = start or dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def users(tmp_path, clock):
    return Users(AccountStore(tmp_path / "accounts.sqlite3"), clock)


def test_add_stores_an_argon2_hash_and_a_lower_cased_unique_email(users, tmp_path):
    user = users.add(" Ann@Example.COM ", "Ann", "buyer", PASSWORD)
    assert (user.email, user.name, user.role) == ("ann@example.com", "Ann", "buyer")
    stored = (
        sqlite3.connect(tmp_path / "accounts.sqlite3")
        .execute("SELECT password_hash FROM users")
        .fetchone()[0]
    )
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    with pytest.raises(AccountError) as exc:
        users.add("ANN@example.com", "Other", "buyer", PASSWORD)
    assert exc.value.field == "email" and "exists" in str(exc.value)


@pytest.mark.parametrize(
    ("email", "name", "role", "password", "field"),
    [
        ("not-an-email", "A", "buyer", PASSWORD, "email"),
        ("a<script>@x.com", "A", "buyer", PASSWORD, "email"),
        ("a@x.com", "", "buyer", PASSWORD, "name"),
        ("a@x.com", "A", "admin", PASSWORD, "role"),
        ("a@x.com", "A", "buyer", "short", "password"),
        ("longer.name@x.com", "A", "buyer", "LONGER.NAME@x.com", "password"),
    ],
)
def test_bad_input_names_the_field(users, email, name, role, password, field):
    with pytest.raises(AccountError) as exc:
        users.add(email, name, role, password)
    assert exc.value.field == field
    assert users.list() == []


def test_authenticate_same_answer_for_unknown_email_and_wrong_password(users):
    users.add("ann@example.com", "Ann", "buyer", PASSWORD)
    assert users.authenticate("ANN@example.com", PASSWORD, "c1").email == "ann@example.com"
    answers = []
    for email, password in (("ann@example.com", "wrong password!"), ("nobody@x.com", PASSWORD)):
        with pytest.raises(SignInRefused) as exc:
            users.authenticate(email, password, "c1")
        answers.append((exc.value.status, exc.value.code, str(exc.value)))
    assert answers[0] == answers[1] == (401, "signin_failed", SIGNIN_FAILED)


def test_five_failures_lock_even_the_right_password_until_the_lock_ends(users, clock):
    users.add("ann@example.com", "Ann", "buyer", PASSWORD)
    for i in range(MAX_FAILED_SIGNINS):
        with pytest.raises(SignInRefused) as exc:
            users.authenticate("ann@example.com", f"wrong password {i}", "c1")
        expected = 423 if i == MAX_FAILED_SIGNINS - 1 else 401
        assert exc.value.status == expected
    record = users.list()[0]
    assert record.failed_signins == MAX_FAILED_SIGNINS and record.locked_until is not None
    clock.advance(LOCKOUT - dt.timedelta(seconds=5))
    with pytest.raises(SignInRefused) as exc:
        users.authenticate("ann@example.com", PASSWORD, "c2")
    assert exc.value.status == 423 and 1 <= exc.value.retry_after_s <= 6
    clock.advance(dt.timedelta(seconds=10))
    assert users.authenticate("ann@example.com", PASSWORD, "c2").email == "ann@example.com"
    assert users.list()[0].failed_signins == 0


def test_failures_spread_beyond_the_window_do_not_lock(users, clock):
    users.add("ann@example.com", "Ann", "buyer", PASSWORD)
    for _ in range(MAX_FAILED_SIGNINS * 2):
        with pytest.raises(SignInRefused) as exc:
            users.authenticate("ann@example.com", "wrong password!", "c1")
        assert exc.value.status == 401
        clock.advance(FAILURE_WINDOW / (MAX_FAILED_SIGNINS - 1) + dt.timedelta(seconds=1))


def test_unknown_email_locks_like_a_known_one(users):
    statuses = []
    for _ in range(MAX_FAILED_SIGNINS + 1):
        with pytest.raises(SignInRefused) as exc:
            users.authenticate("ghost@example.com", "wrong password!", "c1")
        statuses.append(exc.value.status)
    assert statuses == [401] * (MAX_FAILED_SIGNINS - 1) + [423, 423]


def test_rate_limit_per_client_address(users, clock, monkeypatch):
    monkeypatch.setattr(users_module, "MAX_FAILED_SIGNINS", 10_000)  # isolate the client limit
    users.add("ann@example.com", "Ann", "buyer", PASSWORD)
    for i in range(MAX_TRIES_PER_CLIENT):
        with pytest.raises(SignInRefused):
            users.authenticate(f"user{i}@example.com", "wrong password!", "10.0.0.9")
    with pytest.raises(SignInRefused) as exc:
        users.authenticate("ann@example.com", PASSWORD, "10.0.0.9")
    assert exc.value.status == 429 and exc.value.retry_after_s > 0
    # Another address is not limited; the first one is again after the window.
    assert users.authenticate("ann@example.com", PASSWORD, "10.0.0.10").id == 1
    clock.advance(dt.timedelta(minutes=5, seconds=1))
    assert users.authenticate("ann@example.com", PASSWORD, "10.0.0.9").id == 1


def test_reset_and_change_end_sessions_and_clear_the_lock(users, tmp_path, clock):
    user = users.add("ann@example.com", "Ann", "buyer", PASSWORD)
    sessions = Sessions(users.store, clock)
    sessions.create(user)
    for _ in range(MAX_FAILED_SIGNINS):
        with pytest.raises(SignInRefused):
            users.authenticate("ann@example.com", "wrong password!", "c1")
    users.reset("ann@example.com", "a brand new password")
    assert users.store.table_counts()["sessions"] == 0
    assert users.authenticate("ann@example.com", "a brand new password", "c1").id == user.id
    sessions.create(user)
    with pytest.raises(AccountError) as exc:
        users.change_password(user.id, "not the password", "another new password")
    assert exc.value.field == "current_password"
    with pytest.raises(AccountError) as exc:
        users.change_password(user.id, "a brand new password", "short")
    assert exc.value.field == "new_password"
    users.change_password(user.id, "a brand new password", "another new password")
    assert users.store.table_counts()["sessions"] == 0
    with pytest.raises(SignInRefused):
        users.authenticate("ann@example.com", "a brand new password", "c1")


def test_remove_deletes_the_user_and_what_he_owns(users, clock):
    user = users.add("ann@example.com", "Ann", "buyer", PASSWORD)
    Sessions(users.store, clock).create(user)
    users.remove("ANN@example.com")
    assert users.store.table_counts()["users"] == 0
    assert users.store.table_counts()["sessions"] == 0
    with pytest.raises(AccountError):
        users.remove("ann@example.com")


def test_an_outdated_hash_is_rehashed_at_sign_in(users, tmp_path):
    from argon2 import PasswordHasher

    users.add("ann@example.com", "Ann", "buyer", PASSWORD)
    weak = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    with users.store.transaction() as tx:
        tx.execute("UPDATE users SET password_hash = ?", (weak,))
    users.authenticate("ann@example.com", PASSWORD, "c1")
    with users.store.transaction() as tx:
        stored = tx.execute("SELECT password_hash FROM users").one()["password_hash"]
    assert stored != weak and not users_module.HASHER.check_needs_rehash(stored)


def test_a_disabled_account_answers_like_a_wrong_password(users):
    users.add("ann@example.com", "Ann", "buyer", PASSWORD)
    with users.store.transaction() as tx:
        tx.execute("UPDATE users SET disabled_at = ?", ("2026-03-01T00:00:00+00:00",))
    with pytest.raises(SignInRefused) as exc:
        users.authenticate("ann@example.com", PASSWORD, "c1")
    assert (exc.value.status, str(exc.value)) == (401, SIGNIN_FAILED)
