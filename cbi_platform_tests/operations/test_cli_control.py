"""`cbi promote` / `cbi rollback`: one command changes the served version, with an audit row."""

from __future__ import annotations

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
            tracker.register(run_id, "ensemble", "cbi-zl-1w")
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
