import sqlite3

import pytest

from cbi_platform.accounts.store import (
    SCHEMA_VERSION,
    AccountStore,
    AccountStoreError,
    utc_now,
)


def _add_user(tx, email="a@example.com"):
    now = utc_now()
    return tx.insert(
        "INSERT INTO users (email, name, role, password_hash, created_at, password_changed_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (email, "A", "buyer", "x", now, now),
    )


def test_sqlite_store_is_wal_migrates_once_and_commits(tmp_path):
    store = AccountStore.for_home(tmp_path, env={})
    assert store.dialect == "sqlite" and store.location == tmp_path / "accounts.sqlite3"
    with store.transaction() as tx:
        uid = _add_user(tx)
    assert uid == 1
    assert AccountStore(tmp_path / "accounts.sqlite3").migrate() == SCHEMA_VERSION
    con = sqlite3.connect(tmp_path / "accounts.sqlite3")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert store.table_counts()["users"] == 1


def test_a_failed_transaction_leaves_nothing(tmp_path):
    store = AccountStore(tmp_path / "a.sqlite3")
    with pytest.raises(RuntimeError), store.transaction() as tx:
        _add_user(tx)
        raise RuntimeError("boom")
    assert store.table_counts()["users"] == 0


def test_deleting_a_user_deletes_what_he_owns(tmp_path):
    store = AccountStore(tmp_path / "a.sqlite3")
    with store.transaction() as tx:
        uid = _add_user(tx)
        tx.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
            ("h", uid, "c", utc_now(), utc_now(), utc_now()),
        )
    with store.transaction() as tx:
        tx.execute("DELETE FROM users WHERE id = ?", (uid,))
    assert store.table_counts()["sessions"] == 0


def test_a_newer_layout_is_refused_with_what_to_do(tmp_path):
    store = AccountStore(tmp_path / "a.sqlite3")
    store.migrate()
    con = sqlite3.connect(tmp_path / "a.sqlite3")
    con.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    con.commit()
    with pytest.raises(AccountStoreError, match="upgrade the platform"):
        AccountStore(tmp_path / "a.sqlite3").migrate()


def test_dsn_selects_postgres_and_hides_the_password(tmp_path):
    store = AccountStore.for_home(
        tmp_path, env={"CBI_ACCOUNTS_DSN": "postgresql://cbi:s3cret@127.0.0.1:1/accounts"}
    )
    assert store.dialect == "postgresql"
    assert "s3cret" not in store.describe() and "cbi:***@" in store.describe()
    with pytest.raises(AccountStoreError, match="cannot open the accounts store"):
        store.migrate()
