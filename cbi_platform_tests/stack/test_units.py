"""The stack's plain parts: secrets, generated config, log rotation, the restart rules."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from cbi_platform.stack import config as stack_config
from cbi_platform.stack import processes, secrets
from cbi_platform.stack.health import Health
from cbi_platform.stack.postgres import scram_verifier
from cbi_platform.stack.supervisor import Policy, backoff_seconds, decide


# ---- secrets ---------------------------------------------------------------------------------
def test_secrets_are_generated_into_a_0600_file_and_reused(tmp_path):
    path = tmp_path / "secrets.env"
    first = secrets.load_secrets(path, env={}, generate=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(first) == {secrets.DB_PASSWORD, secrets.API_KEY_PEPPER}  # SMTP is never made up
    assert len(first[secrets.DB_PASSWORD]) >= 32
    again = secrets.load_secrets(path, env={}, generate=True)
    assert dict(again) == dict(first)
    assert first[secrets.DB_PASSWORD] not in repr(first)


def test_the_environment_wins_over_the_file(tmp_path):
    path = tmp_path / "secrets.env"
    secrets.load_secrets(path, env={}, generate=True)
    env = {secrets.DB_PASSWORD: "from-env", secrets.SMTP_PASSWORD: "smtp-env"}
    loaded = secrets.load_secrets(path, env=env, generate=True)
    assert loaded[secrets.DB_PASSWORD] == "from-env"
    assert loaded[secrets.SMTP_PASSWORD] == "smtp-env"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_secrets_file_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "secrets.env"
    path.write_text(f"{secrets.DB_PASSWORD}=hunter2hunter2\n")
    os.chmod(path, mode)
    with pytest.raises(secrets.SecretsError, match="chmod 600") as caught:
        secrets.load_secrets(path, env={})
    assert "hunter2" not in str(caught.value)


def test_a_malformed_line_is_refused_without_echoing_it(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text("this is my-secret-value\n")
    os.chmod(path, 0o600)
    with pytest.raises(secrets.SecretsError) as caught:
        secrets.read_secrets_file(path)
    assert "my-secret-value" not in str(caught.value)


def test_redact_masks_values_uri_passwords_and_assignments():
    text = (
        "connect postgresql://cbi:s3cr3t-pw@127.0.0.1:55432/dagster failed; "
        "PGPASSWORD=another-one and pepper Zq9-pepper-value; "
        "CBI_SMTP_PASSWORD: mail-pass; password=plain1234"
    )
    out = secrets.redact(text, ["Zq9-pepper-value"])
    for leaked in ("s3cr3t-pw", "another-one", "Zq9-pepper-value", "mail-pass", "plain1234"):
        assert leaked not in out
    assert "postgresql://cbi:********@127.0.0.1:55432/dagster" in out
    assert secrets.redact("nothing secret here", ["abc"]) == "nothing secret here"


# ---- generated config ------------------------------------------------------------------------
def _config(tmp_path, **overrides):
    home = tmp_path / "stack"
    home.mkdir(exist_ok=True)
    if overrides:
        (home / "stack.yaml").write_text(yaml.safe_dump(overrides))
    return stack_config.load_config(home, env={"CBI_HOME": str(tmp_path / "cbi")}, create=True)


def test_dagster_yaml_uses_postgres_with_an_env_password_and_keeps_the_root_sections(tmp_path):
    root = tmp_path / "dagster.yaml"
    root.write_text(
        "run_monitoring: {enabled: true, free_slots_after_run_end_seconds: 60}\n"
        "concurrency:\n  runs:\n    tag_concurrency_limits: [{key: writer, limit: 1}]\n"
        "  pools: {default_limit: 1}\n"
        "storage: {sqlite: {base_dir: x}}\nrun_storage: {module: m, class: C}\n"
    )
    config = _config(tmp_path, ports={"postgres": 55999})
    text = stack_config.dagster_yaml_text(config, root_yaml=root)
    data = yaml.safe_load(text)
    assert data["run_monitoring"] == {"enabled": True, "free_slots_after_run_end_seconds": 60}
    assert data["concurrency"]["runs"] == {
        "tag_concurrency_limits": [{"key": "writer", "limit": 1}]
    }
    assert "run_storage" not in data
    db = data["storage"]["postgres"]["postgres_db"]
    assert db == {
        "username": "cbi",
        "password": {"env": "CBI_STACK_DB_PASSWORD"},
        "hostname": "127.0.0.1",
        "db_name": "dagster",
        "port": 55999,
        "scheme": "postgresql+psycopg2",
    }


def test_generated_files_hold_no_secret_and_dagster_accepts_the_instance_config(tmp_path):
    config = _config(tmp_path)
    values = secrets.load_secrets(config.paths.secrets_file, env={}, generate=True)
    stack_config.write_generated_files(config)
    for generated in (
        config.paths.dagster_yaml,
        config.paths.workspace_yaml,
        config.paths.config_file,
    ):
        text = generated.read_text()
        assert all(v not in text for v in values.values())
    from dagster._core.instance.config import dagster_instance_config

    instance_config, _ = dagster_instance_config(str(config.paths.dagster_home))
    assert instance_config["storage"]["postgres"]["postgres_db"]["db_name"] == "dagster"
    workspace = yaml.safe_load(config.paths.workspace_yaml.read_text())
    assert workspace["load_from"][0]["grpc_server"]["port"] == config.ports["code_server"]


def test_the_real_root_dagster_yaml_is_copied_at_generation_time(tmp_path):
    config = _config(tmp_path)
    root = yaml.safe_load(stack_config.ROOT_DAGSTER_YAML.read_text())
    data = yaml.safe_load(stack_config.dagster_yaml_text(config))
    assert data["concurrency"] == root["concurrency"]
    assert data["run_monitoring"] == root["run_monitoring"]


def test_stack_yaml_is_written_once_and_unknown_services_are_refused(tmp_path):
    config = _config(tmp_path)
    assert config.services == stack_config.ALL_SERVICES
    assert config.cbi_home == (tmp_path / "cbi").resolve()
    assert yaml.safe_load(config.paths.config_file.read_text())["ports"]["postgres"] == 55432
    (config.paths.config_file).write_text("services: [postgres, nginx]\n")
    with pytest.raises(ValueError, match="nginx"):
        stack_config.load_config(config.home)


def test_mlflow_uris_carry_no_password(tmp_path):
    config = _config(tmp_path)
    assert stack_config.mlflow_tracking_uri(config) == "http://127.0.0.1:55000"
    assert stack_config.mlflow_backend_uri(config) == (
        "postgresql+psycopg2://cbi@127.0.0.1:55432/mlflow"
    )


def test_service_specs_pass_secrets_by_environment_never_on_the_command_line(tmp_path):
    from pathlib import Path

    from cbi_platform.stack.services import build_specs, stack_env

    config = _config(tmp_path)
    values = secrets.Secrets(
        {secrets.DB_PASSWORD: "db-pw-123456", secrets.API_KEY_PEPPER: "pep-987654"}
    )
    env = stack_env(config, values, base={"PATH": "/usr/bin"})
    specs = build_specs(config, values, Path("/usr/lib/postgresql/15/bin"), env)
    assert [s.name for s in specs] == list(stack_config.ALL_SERVICES)
    for spec in specs:
        assert not any("db-pw-123456" in arg or "pep-987654" in arg for arg in spec.argv)
        assert spec.env["DAGSTER_HOME"] == str(config.paths.dagster_home)
        assert spec.env["CBI_HOME"] == str(config.cbi_home)
        assert spec.env[secrets.DB_PASSWORD] == "db-pw-123456"
    mlflow = next(s for s in specs if s.name == "mlflow")
    assert mlflow.env["PGPASSWORD"] == "db-pw-123456"
    # The buyer's accounts: every service reaches the stack's `accounts` database, its
    # password from PGPASSWORD (the secrets), never in the DSN.
    for spec in specs:
        assert spec.env["CBI_ACCOUNTS_DSN"] == "postgresql://cbi@127.0.0.1:55432/accounts"
        assert spec.env["PGPASSWORD"] == "db-pw-123456"
        # Run processes (celery executor) and the workers use the stack's Redis.
        assert spec.env["CBI_CELERY_BROKER"] == "redis://127.0.0.1:56379/0"
    worker = next(s for s in specs if s.name == "celery_default1")
    assert (
        "redis://127.0.0.1:56379/0"
        in (Path(worker.env["PYTHONPATH"].split(":")[0]) / "dagster_celery_config.py").read_text()
    )


def test_scram_verifier_matches_the_rfc_7677_example():
    # RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
    import base64

    verifier = scram_verifier("pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    _, keys = verifier.split("$", 1)[1].split("$")
    stored, server = keys.split(":")
    assert base64.b64decode(server) == base64.b64decode(
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
    )  # the ServerKey of RFC 7677's example
    assert len(base64.b64decode(stored)) == 32
    assert verifier.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")


# ---- log rotation ----------------------------------------------------------------------------
def test_rotate_log_copytruncates_and_keeps_k_files(tmp_path):
    log = tmp_path / "svc.log"
    writer = open(log, "ab")  # noqa: SIM115 - an O_APPEND writer that outlives each rotation
    try:
        for round_ in range(5):
            writer.write(f"round {round_} ".encode() * 20)
            writer.flush()
            assert processes.rotate_log(log, max_bytes=100, keep=3)
            assert log.stat().st_size == 0
        writer.write(b"after")
        writer.flush()
        assert log.read_bytes() == b"after"  # O_APPEND: no hole, the writer follows the truncate
    finally:
        writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "svc.log",
        "svc.log.1",
        "svc.log.2",
        "svc.log.3",
    ]
    assert (tmp_path / "svc.log.1").read_text().startswith("round 4")
    assert (tmp_path / "svc.log.3").read_text().startswith("round 2")
    assert not processes.rotate_log(log, max_bytes=100, keep=3)  # small: left alone
    assert not processes.rotate_log(tmp_path / "absent.log", max_bytes=1, keep=3)


# ---- the supervisor's rules ------------------------------------------------------------------
def test_a_dead_service_is_restarted_with_its_exit_reason():
    decision = decide(False, processes.describe_exit(-9), None, 0, 500, 60)
    assert decision.action == "restart"
    assert decision.reason == "died: killed by signal SIGKILL (9)"
    assert processes.describe_exit(3) == "exited with code 3"
    assert "unknown" in decide(False, None, None, 0, 500, 60).reason


def test_failed_checks_count_only_after_the_grace_and_restart_after_n_in_a_row():
    bad = Health(False, "GET /server_info: connection refused")
    policy = Policy(failures_before_restart=3)
    assert decide(True, None, bad, 0, 10, 60, policy).action == "starting"
    assert decide(True, None, bad, 0, 100, 60, policy).action == "unhealthy"
    assert decide(True, None, bad, 1, 100, 60, policy).action == "unhealthy"
    third = decide(True, None, bad, 2, 100, 60, policy)
    assert third.action == "restart"
    assert third.reason == (
        "failed its health check 3 times in a row: GET /server_info: connection refused"
    )
    assert decide(True, None, Health(True, "ok"), 2, 100, 60, policy).action == "ok"
    assert decide(True, None, None, 0, 100, 60, policy).action == "ok"


def test_restarts_back_off_when_a_service_keeps_dying():
    policy = Policy(backoff_after=3, backoff_window_seconds=300, max_backoff_seconds=60)
    now = 10_000.0
    assert backoff_seconds([], now, policy) == 0
    assert backoff_seconds([now - 5, now - 1], now, policy) == 0
    assert backoff_seconds([now - 3, now - 2, now - 1], now, policy) == 2
    assert backoff_seconds([now - i for i in range(1, 5)], now, policy) == 4
    assert backoff_seconds([now - i for i in range(1, 30)], now, policy) == 60
    assert backoff_seconds([now - 1000, now - 900, now - 800], now, policy) == 0  # old ones
