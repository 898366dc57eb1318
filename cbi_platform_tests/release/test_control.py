"""Promote / rollback move the champion alias of a real MLflow registry and leave an audit row;
the challenger is the newest version above the champion that was not rolled back."""

from __future__ import annotations

import itertools
import json

import pytest

from cbi_platform.release import control as sc
from cbi_platform.release import versions
from cbi_platform.release.control import (
    AuditLog,
    AuditSession,
    ServingControlError,
    promote,
    rollback,
)
from cbi_platform.release.versions import ROLLED_BACK_TAG, challenger_version
from cbi_platform.tracking import Tracker, registered_model_name

_names = itertools.count(1)


@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> Tracker:
    root = tmp_path_factory.mktemp("mlflow")
    return Tracker(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("card")
    path = folder / "ensemble.json"
    path.write_text('{"combiner": "test"}')
    return path


@pytest.fixture
def horizon() -> str:
    """A fresh registered model per test (the registry is shared by the module)."""
    return f"t{next(_names)}"


@pytest.fixture
def audit(tmp_path) -> AuditLog:
    return AuditLog(tmp_path / "ops" / "audit.duckdb")


def register(
    tracker: Tracker, artifact, horizon: str, count: int, failed_gates: tuple[str, ...] = ()
) -> list[str]:
    """`count` new versions of cbi-zl-<horizon>, judged by the gates as registration judges
    them (`failed_gates` tag)."""
    name = registered_model_name(horizon)
    with tracker.run(f"forecasts[{horizon}]", {"cbi.test": "1"}) as run_id:
        tracker.log_artifact(run_id, artifact, "ensemble")
        made = [tracker.register(run_id, "ensemble", name) for _ in range(count)]
    for version in made:
        tracker.set_version_tags(name, version, {"failed_gates": json.dumps(list(failed_gates))})
    return made


def champion(tracker: Tracker, horizon: str) -> str | None:
    return tracker.alias_version(registered_model_name(horizon), versions.CHAMPION)


def test_challenger_is_the_newest_version_above_the_champion(tracker, artifact, horizon):
    name = registered_model_name(horizon)
    assert challenger_version(tracker, horizon) is None  # nothing registered
    register(tracker, artifact, horizon, 1)
    assert challenger_version(tracker, horizon) == "1"  # no champion: the newest
    tracker.set_alias(name, versions.CHAMPION, "1")
    assert challenger_version(tracker, horizon) is None  # the newest IS the champion
    register(tracker, artifact, horizon, 2)
    assert challenger_version(tracker, horizon) == "3"
    tracker.set_alias(name, versions.CHAMPION, "2")
    assert challenger_version(tracker, horizon) == "3"
    tracker.set_alias(name, versions.CHAMPION, "3")
    assert challenger_version(tracker, horizon) is None  # v1, v2 are older: not challengers
    tracker.set_alias(name, versions.CHAMPION, "1")
    tracker.set_version_tags(name, "3", {ROLLED_BACK_TAG: "x"})
    assert challenger_version(tracker, horizon) == "2"  # v3 was rolled back from


def test_promote_moves_the_alias_and_records_it(tracker, artifact, horizon, audit):
    register(tracker, artifact, horizon, 2)
    first = promote(tracker, audit, horizon, "1", actor="ana", reason="first champion")
    assert first.changed and first.from_version is None and first.to_version == "1"
    second = promote(
        tracker,
        audit,
        horizon,
        f"cbi-zl-{horizon}/v2",
        actor="bo",
        reason="better on shadow",
        evidence={"mae_improvement": 0.2},
    )
    assert champion(tracker, horizon) == "2"
    assert second.message == f"cbi-zl-{horizon}: v1 -> v2 (promote)"
    rows = audit.rows(horizon)
    assert rows.select("seq", "action", "from_version", "to_version", "actor", "reason").rows() == [
        (1, "promote", None, "1", "ana", "first champion"),
        (2, "promote", "1", "2", "bo", "better on shadow"),
    ]
    assert json.loads(rows["evidence"][1]) == {"mae_improvement": 0.2}
    assert rows["at"].null_count() == 0
    assert second.audit["seq"] == 2


def test_promoting_the_champion_again_is_a_noop(tracker, artifact, horizon, audit):
    register(tracker, artifact, horizon, 1)
    promote(tracker, audit, horizon, 1, actor="ana", reason="first")
    again = promote(tracker, audit, horizon, "v1", actor="ana", reason="again")
    assert not again.changed and again.audit is None
    assert "already the champion" in again.message and "no audit row" in again.message
    assert audit.rows(horizon).height == 1


def test_promote_errors_name_the_model_and_known_versions(tracker, artifact, horizon, audit):
    name = registered_model_name(horizon)
    with pytest.raises(ServingControlError, match=f"{name} has no version 1; .*none registered"):
        promote(tracker, audit, horizon, "1", actor="ana", reason="r")
    register(tracker, artifact, horizon, 2)
    with pytest.raises(
        ServingControlError, match=f"{name} has no version 9; known versions: v1, v2"
    ):
        promote(tracker, audit, horizon, "9", actor="ana", reason="r")
    with pytest.raises(ServingControlError, match="not a version of"):
        promote(tracker, audit, horizon, "cbi-zl-other/v1", actor="ana", reason="r")
    with pytest.raises(ServingControlError, match="reason must be given"):
        promote(tracker, audit, horizon, "1", actor="ana", reason=" ")
    assert champion(tracker, horizon) is None
    assert audit.rows().height == 0


def test_rollback_walks_back_down_the_promotion_chain(tracker, artifact, horizon, audit):
    name = registered_model_name(horizon)
    register(tracker, artifact, horizon, 3)
    for v in ("1", "2", "3"):
        promote(tracker, audit, horizon, v, actor="ana", reason=f"promote v{v}")
    back = rollback(tracker, audit, horizon, actor="bo", reason="v3 drifts")
    assert (back.from_version, back.to_version) == ("3", "2")
    assert champion(tracker, horizon) == "2"
    assert tracker.version_tags(name, "3")[ROLLED_BACK_TAG].endswith("by bo: v3 drifts")
    assert challenger_version(tracker, horizon) is None  # v3 no longer shadows
    row = audit.rows(horizon).row(-1, named=True)
    assert (row["action"], row["from_version"], row["to_version"]) == ("rollback", "3", "2")
    assert (row["actor"], row["reason"]) == ("bo", "v3 drifts")
    assert "audit seq 3" in json.loads(row["evidence"])["target_chosen"]
    # A second rollback goes further back, it does not undo the first.
    assert rollback(tracker, audit, horizon, actor="bo", reason="v2 too").to_version == "1"
    with pytest.raises(ServingControlError, match="no champion before it"):
        rollback(tracker, audit, horizon, actor="bo", reason="again")
    # Promoting a rolled-back version by hand clears its tag.
    promote(tracker, audit, horizon, "3", actor="ana", reason="fixed upstream data")
    assert ROLLED_BACK_TAG not in tracker.version_tags(name, "3")
    assert audit.rows(horizon)["action"].to_list() == ["promote"] * 3 + ["rollback"] * 2 + [
        "promote"
    ]


def test_rollback_errors_and_explicit_target(tracker, artifact, horizon, audit):
    name = registered_model_name(horizon)
    register(tracker, artifact, horizon, 3)
    with pytest.raises(ServingControlError, match="has no champion"):
        rollback(tracker, audit, horizon, actor="bo", reason="r")
    tracker.set_alias(name, versions.CHAMPION, "3")  # set outside promote (a publication run)
    with pytest.raises(ServingControlError, match="no promotion of .*known versions: v1, v2, v3"):
        rollback(tracker, audit, horizon, actor="bo", reason="r")
    with pytest.raises(ServingControlError, match="already serves"):
        rollback(tracker, audit, horizon, actor="bo", reason="r", to_version="3")
    with pytest.raises(ServingControlError, match="has no version 7"):
        rollback(tracker, audit, horizon, actor="bo", reason="r", to_version="7")
    done = rollback(tracker, audit, horizon, actor="bo", reason="bad", to_version="v1")
    assert (done.from_version, done.to_version, champion(tracker, horizon)) == ("3", "1", "1")
    assert json.loads(done.audit["evidence"]) == {"target_chosen": "named by the operator"}


def test_alias_is_restored_when_the_audit_row_cannot_be_written(
    tracker, artifact, horizon, audit, monkeypatch
):
    register(tracker, artifact, horizon, 2)
    promote(tracker, audit, horizon, "1", actor="ana", reason="first")

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(AuditSession, "append", broken)
    with pytest.raises(OSError, match="disk full"):
        promote(tracker, audit, horizon, "2", actor="ana", reason="second")
    assert champion(tracker, horizon) == "1"


def test_audit_log_records_other_actions_and_reads_the_snapshot(tmp_path, audit):
    assert audit.rows().height == 0  # nothing written yet: an empty, typed frame
    assert audit.rows().schema == sc.AUDIT_SCHEMA
    audit.record("1w", sc.RETRAIN_REQUESTED, actor="sensor", reason="accuracy/1w firing")
    audit.record("1m", sc.RETRAIN_REQUESTED, actor="sensor", reason="drift", evidence={"psi": 0.3})
    assert audit.rows()["seq"].to_list() == [1, 2]
    assert audit.rows("1m")["reason"].to_list() == ["drift"]
    with pytest.raises(ServingControlError, match="actor must be given"):
        audit.record("1w", sc.RETRAIN_REQUESTED, actor="", reason="x")
