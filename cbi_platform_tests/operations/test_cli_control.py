"""`cbi promote` / `cbi rollback`: one command changes the served version, with an audit row."""

from __future__ import annotations

import json

import pytest

from cbi_platform.cli import main
from cbi_platform.release.control import AuditLog
from cbi_platform.release.versions import CHAMPION
from cbi_platform.tracking import Tracker


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CBI_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts")
    card = tmp_path / "card.json"
    card.write_text("{}")
    for _ in range(3):
        with tracker.run("forecasts[1w]", {}) as run_id:
            tracker.log_artifact(run_id, card, "ensemble")
            version = tracker.register(run_id, "ensemble", "cbi-zl-1w")
        tracker.set_version_tags("cbi-zl-1w", version, {"failed_gates": "[]"})  # passed
    tracker.set_alias("cbi-zl-1w", CHAMPION, "1")
    return tmp_path, tracker


def test_promote_then_rollback_from_the_command_line(home, capsys):
    folder, tracker = home
    assert main(["promote", "1w", "v3", "--reason", "shadow record", "--actor", "ana"]) == 0
    assert tracker.alias_version("cbi-zl-1w", CHAMPION) == "3"
    assert main(["rollback", "1w", "--reason", "buyer complaint", "--actor", "ana"]) == 0
    assert tracker.alias_version("cbi-zl-1w", CHAMPION) == "1"
    rows = AuditLog(folder / "operations.duckdb").rows("1w")
    assert rows.select("action", "from_version", "to_version", "actor").rows() == [
        ("promote", "1", "3", "ana"),
        ("rollback", "3", "1", "ana"),
    ]
    assert main(["promote", "1w", "9", "--reason", "typo"]) == 1
    assert "9" in capsys.readouterr().err


def test_serving_a_version_that_failed_its_gates_needs_force_and_is_recorded(home, capsys):
    folder, tracker = home
    failed = ["90% coverage 0.600 on 5 independent outcomes: its 95% interval excludes 0.90"]
    tracker.set_version_tags("cbi-zl-1w", "2", {"failed_gates": json.dumps(failed)})
    assert main(["promote", "1w", "2", "--reason", "try it", "--actor", "ana"]) != 0
    assert (
        "--force" in capsys.readouterr().err and tracker.alias_version("cbi-zl-1w", CHAMPION) == "1"
    )
    assert main(["promote", "1w", "2", "--reason", "try it", "--actor", "ana", "--force"]) == 0
    assert tracker.alias_version("cbi-zl-1w", CHAMPION) == "2"
    row = AuditLog(folder / "operations.duckdb").rows("1w").row(-1, named=True)
    assert json.loads(row["evidence"]) == {"forced": True, "failed_gates": failed}
    # It serves provisional, with its gates, although a person promoted it.
    from cbi_platform.release.versions import serving_versions

    serving = serving_versions(tracker, "1w")
    assert serving.served == "2" and serving.provisional and serving.failed_gates == tuple(failed)
    # Rolling back to it needs --force as well.
    assert main(["promote", "1w", "3", "--reason", "next", "--actor", "ana"]) == 0
    assert main(["rollback", "1w", "--reason", "back", "--actor", "ana"]) != 0
    assert main(["rollback", "1w", "--reason", "back", "--actor", "ana", "--force"]) == 0
