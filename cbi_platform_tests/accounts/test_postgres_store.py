"""The accounts store on a real PostgreSQL (a throwaway cluster; skipped without the server
binaries): the same users, sign-in, lock-out and sessions as on SQLite, and `cbi backup` /
`cbi restore` carrying them through pg_dump / pg_restore."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

from cbi_platform.accounts.sessions import Sessions
from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import MAX_FAILED_SIGNINS, SignInRefused, Users
from cbi_platform.operations.backup import backup, restore, sources_from_env
from cbi_platform_tests.accounts.test_users import ManualClock
from cbi_platform_tests.operations.test_backup import postgres_server  # noqa: F401 (fixture)

PASSWORD = "a long enough password"


def test_users_sessions_and_backup_on_postgresql(postgres_server, tmp_path):  # noqa: F811
    url, psql = postgres_server
    for db in ("accounts", "restored"):
        subprocess.run([str(psql), url("postgres"), "-c", f"CREATE DATABASE {db}"], check=True)
    store = AccountStore(url("accounts"))
    assert store.dialect == "postgresql" and store.migrate() == 0
    clock = ManualClock()
    users = Users(store, clock)
    kim = users.add("kim@example.com", "Kim", "buyer", PASSWORD)
    eve = users.add("eve@example.com", "Eve", "engineer", PASSWORD)
    assert (kim.id, eve.id) == (1, 2)  # BIGSERIAL ids through RETURNING
    assert users.authenticate("KIM@example.com", PASSWORD, "c").id == kim.id
    for i in range(MAX_FAILED_SIGNINS):
        with pytest.raises(SignInRefused):
            users.authenticate("eve@example.com", f"wrong {i} password", "c")
    with pytest.raises(SignInRefused) as locked:
        users.authenticate("eve@example.com", PASSWORD, "c")
    assert locked.value.status == 423
    sessions = Sessions(store, clock)
    session_id, session = sessions.create(kim)
    assert sessions.lookup(session_id).user == kim
    clock.advance(dt.timedelta(minutes=2))
    assert sessions.lookup(session_id).last_seen_at == clock.now

    (tmp_path / "home").mkdir()
    env = {"CBI_ACCOUNTS_DSN": url("accounts")}
    manifest = backup(sources_from_env(tmp_path / "home", env), tmp_path / "backup")
    assert [d["name"] for d in manifest["postgres"]] == ["accounts"]
    restore(tmp_path / "backup", tmp_path / "new", postgres_urls={"accounts": url("restored")})
    restored = AccountStore(url("restored"))
    assert restored.table_counts() == store.table_counts()
    assert Users(restored, clock).authenticate("kim@example.com", PASSWORD, "d").id == kim.id
    assert Sessions(restored, clock).lookup(session_id).user == kim


def test_services_starting_together_migrate_once(postgres_server):  # noqa: F811
    """The API, the daemon and the code server open the store at once on a fresh database:
    every one succeeds and the layout is written once (without the advisory lock the second
    transaction fails on the first one's ALTER TABLE, or duplicates the version rows)."""
    import threading

    url, psql = postgres_server
    subprocess.run([str(psql), url("postgres"), "-c", "CREATE DATABASE racing"], check=True)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_store() -> None:
        try:
            start.wait()
            AccountStore(url("racing")).migrate()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with AccountStore(url("racing")).transaction() as tx:
        versions = [r["version"] for r in tx.execute("SELECT version FROM schema_version").all()]
    assert sorted(versions) == list(range(1, len(versions) + 1))
