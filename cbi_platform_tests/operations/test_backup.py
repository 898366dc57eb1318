"""`cbi backup` / `cbi restore` on a small served home: the restored home serves the same
forecasts, holds the same audit log and alert book, and a bad or racing copy is caught."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest
from fastapi.testclient import TestClient
from polars.testing import assert_frame_equal

from cbi_platform.api import create_app
from cbi_platform.api.keys import create_key
from cbi_platform.cli import main
from cbi_platform.conditions import Condition
from cbi_platform.operations.alerts import ANSWER_LOG_TABLE, LOG_TABLE, STATE_TABLE, AlertBook
from cbi_platform.operations.backup import (
    BackupError,
    BackupSources,
    backup,
    redact,
    restore,
    sources_from_env,
)
from cbi_platform.release.control import TABLE as AUDIT_TABLE
from cbi_platform.release.control import AuditLog
from cbi_platform.settings import HORIZONS
from cbi_platform.storage import read_snapshot
from cbi_platform.tracking import Tracker
from cbi_platform_tests.api.conftest import build_home

OPS_TABLES = (STATE_TABLE, LOG_TABLE, ANSWER_LOG_TABLE, AUDIT_TABLE, "ops.condition_log")
ENDPOINTS = (
    *(f"/forecast/{h}" for h in HORIZONS),
    *(f"/explain/{h}" for h in HORIZONS),
    "/predictions",
    "/regime/current",
    "/history",
    "/monitoring/performance",
    "/recommendation",
    "/alerts",
)


def served_home(path: Path) -> tuple[Path, str]:
    """build_home's forecasts + an audit trail, a fired and acknowledged alert, an MLflow run
    with an artifact, a Dagster instance with one run, and an API key."""
    home = build_home(path, n_days=30).path
    audit = AuditLog(home / "operations.duckdb")
    for i, h in enumerate(HORIZONS):
        audit.record(h, "promote", actor="ops", reason=f"first {h}", to_version=str(i + 1))
    book = AlertBook(home / "operations.duckdb")
    day = dt.date(2025, 2, 14)
    book.update(
        [
            Condition("accuracy/1w", "accuracy", True, "1w worse than the random walk", day, "1w"),
            Condition("stale_data/target", "stale_data", True, "no close for 3 days", day),
        ]
    )
    book.acknowledge("accuracy/1w", by="ops", reason="known: holiday week")
    tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts")
    note = path.parent / "model_note.txt"
    note.write_text("ensemble v1\n")
    with tracker.run("ensemble", {"cbi.horizon": "1m"}) as run_id:
        tracker.log_metrics(run_id, {"mape": 0.031})
        tracker.log_artifact(run_id, note, "ensemble")
    tracker.register(run_id, "ensemble", "cbi-zl-1m")
    _dagster_run(home)
    key, _ = create_key(home, "tests")
    _buyer_accounts(home)
    return home, key


BUYER = ("kim@example.com", "kim's long password")


def _buyer_accounts(home: Path) -> None:
    """The buyer's own rows: two users, a session, a programme and a price alert."""
    from cbi_platform.accounts.sessions import Sessions
    from cbi_platform.accounts.store import AccountStore, utc_now
    from cbi_platform.accounts.users import Users

    store = AccountStore.for_home(home, env={})
    users = Users(store)
    kim = users.add(BUYER[0], "Kim", "buyer", BUYER[1])
    users.add("eve@example.com", "Eve", "engineer", "eve's long password")
    Sessions(store).create(kim)
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO programmes VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kim.id, 180000.0, 12, 21, 0.05, 1.5, utc_now()),
        )
        tx.insert(
            "INSERT INTO price_alerts (user_id, horizon, rule, level, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (kim.id, "1m", "below_level", 44.5, utc_now()),
        )


def accounts_rows(home: Path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(home / "accounts.sqlite3")
    try:
        return {
            t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in ("users", "sessions", "programmes", "price_alerts")
        }
    finally:
        con.close()


def _dagster_run(home: Path) -> None:
    import dagster as dg

    @dg.asset
    def tiny() -> int:
        return 1

    with dg.instance_for_test(temp_dir=str(home)) as instance:
        assert dg.materialize([tiny], instance=instance).success


def api_bodies(home: Path, key: str) -> dict[str, object]:
    with TestClient(create_app(home, max_business_days_behind=2)) as client:
        client.headers["X-API-Key"] = key
        bodies = {}
        for endpoint in ENDPOINTS:
            response = client.get(endpoint)
            assert response.status_code == 200, (endpoint, response.text)
            bodies[endpoint] = response.json()
    return bodies


def table(database: Path, name: str) -> pl.DataFrame:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.sql(f"SELECT * FROM {name} ORDER BY ALL").pl()


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> tuple[Path, str]:
    return served_home(tmp_path_factory.mktemp("original") / "home")


def test_restored_home_serves_the_same_forecasts_and_the_same_audit_and_alerts(
    original, tmp_path, capsys
):
    home, key = original
    before = api_bodies(home, key)
    assert before["/forecast/1m"]["model_version"] == "cbi-zl-1m/v1"
    assert before["/alerts"]["alerts"], "the home has open alerts to compare"
    archive = tmp_path / "backup.tar.gz"
    env = {"CBI_HOME": str(home)}
    manifest = backup(sources_from_env(home, env), archive)
    assert manifest["key_tables"]["forecast_history"] == 30 * len(HORIZONS) + 1
    assert manifest["key_tables"]["audit_log"] == len(HORIZONS)
    assert {k: manifest["key_tables"][k] for k in ("users", "sessions", "programmes")} == {
        "users": 2,
        "sessions": 1,
        "programmes": 1,
    }
    kinds = {f["path"]: f["kind"] for f in manifest["files"]}
    assert kinds["home/accounts.sqlite3"] == "sqlite"
    assert kinds["home/forecasts.duckdb"] == kinds["home/operations.duckdb"] == "duckdb"
    assert kinds["home/mlflow.db"] == kinds["home/history/runs.db"] == "sqlite"
    assert kinds["home/api_keys.json"] == "locked"
    assert "home/forecasts.snapshots/cbi.forecast_history.parquet" in kinds
    assert any(p.startswith("home/mlartifacts/") for p in kinds)
    assert {"config/monitoring.yaml", "config/protocol.yaml"} <= set(kinds)
    assert not any(p.endswith((".lock", ".wal")) for p in kinds)
    assert manifest["platform"]["version"] and manifest["created_at"]

    capsys.readouterr()
    new = tmp_path / "restored"
    assert main(["restore", "--from", str(archive), "--home", str(new)]) == 0
    printed = capsys.readouterr().out
    assert "verified" in printed and f"{new / 'forecasts.duckdb'}" in printed

    # The API reads the restored snapshots, and serves exactly the same JSON.
    assert api_bodies(new, key) == before
    # The buyer's accounts: the same users, session, programme and alert; he signs in there.
    assert accounts_rows(new) == accounts_rows(home)
    assert accounts_rows(new)["programmes"] and accounts_rows(new)["price_alerts"]
    with TestClient(create_app(new, max_business_days_behind=2)) as client:
        signed = client.post("/session", json={"email": BUYER[0], "password": BUYER[1]})
        assert signed.status_code == 200 and client.get("/predictions").status_code == 200
    for name in OPS_TABLES:
        assert_frame_equal(
            table(new / "operations.duckdb", name), table(home / "operations.duckdb", name)
        )
    assert_frame_equal(
        table(new / "forecasts.duckdb", "cbi.forecast_history"),
        table(home / "forecasts.duckdb", "cbi.forecast_history"),
    )
    # MLflow: the run and the registered version are there, its artifact under the new home.
    tracker = Tracker(f"sqlite:///{new / 'mlflow.db'}", new / "mlartifacts")
    run_id = tracker.version_run_id("cbi-zl-1m", "1")
    uri = tracker.client.get_run(run_id).info.artifact_uri
    assert uri.startswith(new.as_uri()), uri
    fetched = tracker.download_artifacts(run_id, "ensemble", tmp_path / "fetched")
    assert (fetched / "model_note.txt").read_text() == "ensemble v1\n"
    # Dagster: the instance's run is in the restored instance.
    import dagster as dg

    with dg.instance_for_test(temp_dir=str(new)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].is_success


def test_a_corrupted_backup_is_refused_naming_the_file_and_nothing_is_written(
    original, tmp_path, capsys
):
    home, _ = original
    folder = tmp_path / "backup"
    assert main(["backup", "--home", str(home), "--out", str(folder)]) == 0
    target = folder / "home" / "operations.duckdb"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    capsys.readouterr()
    new = tmp_path / "restored"
    assert main(["restore", "--from", str(folder), "--home", str(new)]) == 1
    err = capsys.readouterr().err
    assert "home/operations.duckdb" in err and "corrupt" in err
    assert not new.exists() or not any(new.iterdir())
    # A missing file is named too.
    target.unlink()
    with pytest.raises(BackupError, match="home/operations.duckdb is missing"):
        restore(folder, new)


def test_restore_refuses_a_non_empty_home_unless_forced(original, tmp_path):
    home, key = original
    folder = tmp_path / "backup"
    backup(BackupSources(home=home), folder)
    new = tmp_path / "restored"
    new.mkdir()
    (new / "forecasts.duckdb").write_text("something else")
    with pytest.raises(BackupError, match="not empty"):
        restore(folder, new)
    assert (new / "forecasts.duckdb").read_text() == "something else"
    restore(folder, new, force=True)
    assert api_bodies(new, key)["/predictions"] == api_bodies(home, key)["/predictions"]
    with pytest.raises(BackupError, match="not empty"):
        backup(BackupSources(home=home), folder)  # nor does a backup overwrite one


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from cbi_platform.release.control import AuditLog
    database, stop = Path(sys.argv[1]), Path(sys.argv[2])
    log, i = AuditLog(database), 0
    while not stop.exists():
        log.record("1w", "retrain_requested", actor="writer", reason=f"row {i}", evidence={"i": i})
        i += 1
    """
)


def audit_rows(database: Path) -> int:
    frame = read_snapshot(database, AUDIT_TABLE)
    return 0 if frame is None else frame.height


def test_backup_during_a_concurrent_writer_is_consistent(tmp_path):
    home = tmp_path / "home"
    AuditLog(home / "operations.duckdb").record("1w", "promote", actor="ops", reason="seed")
    database = home / "operations.duckdb"
    stop = tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(database), str(stop)], env=env, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 60

        def wait_for(rows: int) -> None:
            while audit_rows(database) < rows:
                assert writer.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)

        manifests = []
        for i in range(3):  # each copy a few rows further into the writer's stream
            wait_for((manifests[-1]["key_tables"]["audit_log"] if manifests else 0) + 5)
            manifests.append(backup(BackupSources(home=home), tmp_path / f"backup{i}"))
        wait_for(manifests[-1]["key_tables"]["audit_log"] + 5)
    finally:
        stop.touch()
        writer.wait(timeout=30)
    assert writer.returncode == 0
    counts = [m["key_tables"]["audit_log"] for m in manifests]
    assert 5 <= counts[0] < counts[1] < counts[2] < audit_rows(database)  # mid-stream copies
    for i, manifest in enumerate(manifests):
        new = tmp_path / f"restored{i}"
        restore(tmp_path / f"backup{i}", new)  # checks every table's count against the manifest
        rows = table(new / "operations.duckdb", AUDIT_TABLE)
        assert rows.height == manifest["key_tables"]["audit_log"]
        assert rows["seq"].to_list() == list(range(1, rows.height + 1))  # no gap, no torn row
        # The snapshot the API reads was copied under the same lock: it matches the store.
        assert_frame_equal(
            read_snapshot(new / "operations.duckdb", AUDIT_TABLE).sort("seq"),
            rows.sort("seq"),
            check_dtypes=False,
        )
        assert not Path(f"{new / 'operations.duckdb'}.wal").exists()


def test_accounts_names_agree_with_the_store():
    from cbi_platform.accounts import store
    from cbi_platform.operations import backup as backup_module

    assert backup_module.ACCOUNTS_FILE == store.ACCOUNTS_FILE
    assert backup_module.ACCOUNTS_DSN_ENV == store.DSN_ENV


def test_manifest_names_postgres_storage_from_dagster_yaml(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        textwrap.dedent(
            """
            storage:
              postgres:
                postgres_db:
                  username: dagster
                  password: {env: PG_PASSWORD}
                  hostname: db.internal
                  db_name: dagster
                  port: 5432
            """
        )
    )
    env = {
        "PG_PASSWORD": "s3cret",
        "MLFLOW_TRACKING_URI": "postgresql+psycopg2://ml:pw@db.internal/mlflow",
        "CBI_ACCOUNTS_DSN": "postgresql://cbi:pw2@db.internal:5432/accounts",
    }
    sources = sources_from_env(home, env)
    urls = {t.name: t.url for t in sources.postgres}
    assert urls == {
        "dagster": "postgresql://dagster:s3cret@db.internal:5432/dagster",
        "mlflow": "postgresql://ml:pw@db.internal/mlflow",
        "accounts": "postgresql://cbi:pw2@db.internal:5432/accounts",
    }
    assert redact(urls["dagster"]) == "postgresql://dagster:***@db.internal:5432/dagster"


PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@pytest.fixture
def postgres_server(tmp_path):
    """A throwaway PostgreSQL cluster on a Unix socket (as `nobody` when run as root)."""
    if not PG_BIN or (os.geteuid() == 0 and not shutil.which("runuser")):
        pytest.skip("no PostgreSQL server binaries")
    bin_dir = PG_BIN[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # a short socket path
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "nobody")
    data = folder / "data"

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "start",
        "-o", f"-k {folder} -c listen_addresses=''")  # fmt: skip
    try:
        yield lambda db: f"postgresql://postgres@/{db}?host={folder}", bin_dir / "psql"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_instance_storage_is_dumped_and_restored(postgres_server, tmp_path):
    url, psql = postgres_server

    def sql(db: str, statement: str) -> str:
        return subprocess.run(
            [str(psql), "-At", url(db), "-c", statement], check=True, capture_output=True, text=True
        ).stdout

    sql("postgres", "CREATE DATABASE dagster")
    sql("postgres", "CREATE DATABASE restored")
    sql("dagster", "CREATE TABLE runs (id int, status text)")
    sql("dagster", "INSERT INTO runs VALUES (1, 'SUCCESS'), (2, 'FAILURE')")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f'storage:\n  postgres:\n    postgres_url: "{url("dagster")}"\n'
    )
    manifest = backup(sources_from_env(home, {}), tmp_path / "backup")
    assert [d["file"] for d in manifest["postgres"]] == ["postgres/dagster.dump"]
    report = restore(
        tmp_path / "backup", tmp_path / "new", postgres_urls={"dagster": url("restored")}
    )
    assert any("postgres/dagster.dump" in line for line in report.lines)
    assert sql("restored", "SELECT * FROM runs ORDER BY id") == "1|SUCCESS\n2|FAILURE\n"
    # Without a target the dump is left, and restore says so.
    report = restore(tmp_path / "backup", tmp_path / "newer")
    assert any("not restored" in line and "dagster" in line for line in report.lines)
