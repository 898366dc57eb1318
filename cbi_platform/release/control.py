"""Which version serves each horizon, changed on purpose and on the record.

The serving version of a horizon is the MLflow alias "champion" of `cbi-zl-<h>`. `promote`
and `rollback` are the two ways to move it by hand (`cbi promote`, `cbi rollback`), and an
automatic promotion may use `promote(action="auto_promote")`; every move writes one row to
the audit log `ops.audit` (who, when, from which version to which, why, with evidence).

The audit log lives in its own DuckDB file, shared as the platform's stores are
(`cbi_platform.storage`): a move holds the log's write lock from reading the current champion
to writing its row, so two operators cannot interleave; readers use the Parquet snapshot. If
the audit row cannot be written, the alias is moved back: a move is never left unrecorded.

A version that failed any promotion gate (its `failed_gates` tag; a version never judged counts
as failing) serves provisional whoever promoted it, so moving the alias to one by hand needs
`force=True` (`--force`), and its audit row records that it was forced and which gates failed.

Rolling back from a version tags it `rolled_back`, so the shadow scorer stops treating it as
the challenger (`cbi_platform.release.versions.challenger_version`); promoting it again by
hand removes the tag.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from cbi_platform.release.gates import version_failed_gates
from cbi_platform.release.versions import (
    ROLLED_BACK_TAG,
    champion_version,
    clear_champion,
    registered_versions,
    set_champion,
)
from cbi_platform.results_sink import NullSink, ResultsSink
from cbi_platform.storage import publish_snapshot, read_snapshot, write_connection
from cbi_platform.tracking import Tracker, registered_model_name

TABLE = "ops.audit"
DDL = f"""
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq BIGINT PRIMARY KEY, "at" TIMESTAMP, horizon VARCHAR, action VARCHAR,
    from_version VARCHAR, to_version VARCHAR, actor VARCHAR, reason VARCHAR, evidence VARCHAR
);
"""
AUDIT_SCHEMA = {
    "seq": pl.Int64,
    "at": pl.Datetime("us"),  # UTC
    "horizon": pl.Utf8,
    "action": pl.Utf8,
    "from_version": pl.Utf8,  # version numbers ("3"); null: no champion before
    "to_version": pl.Utf8,
    "actor": pl.Utf8,
    "reason": pl.Utf8,
    "evidence": pl.Utf8,  # JSON text (VARCHAR: no DuckDB extension needed, Parquet-friendly)
}

PROMOTE = "promote"
AUTO_PROMOTE = "auto_promote"
ROLLBACK = "rollback"
RETRAIN_REQUESTED = "retrain_requested"
PROMOTIONS = (PROMOTE, AUTO_PROMOTE)  # the moves a rollback can undo


class ServingControlError(ValueError):
    """A promote or rollback that cannot be done as asked; the message says why."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class AuditSession:
    """The audit table under the write lock (from `AuditLog.session`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, database: str):
        self.con = con
        self.database = database
        self.appended: list[dict[str, Any]] = []  # mirrored when the session closes

    def rows(self, horizon: str | None = None) -> pl.DataFrame:
        frame = self.con.sql(f"SELECT * FROM {TABLE} ORDER BY seq").pl()
        return _shape(frame, horizon)

    def append(
        self,
        horizon: str,
        action: str,
        *,
        actor: str,
        reason: str,
        from_version: str | None = None,
        to_version: str | None = None,
        evidence: Mapping[str, Any] | None = None,
        at: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """Write one row (and publish the snapshot); returns the row as written."""
        _require_text(action=action, actor=actor, reason=reason)
        seq = self.con.execute(f"SELECT coalesce(max(seq), 0) + 1 FROM {TABLE}").fetchone()[0]
        row = {
            "seq": int(seq),
            "at": at or _now(),
            "horizon": horizon,
            "action": action,
            "from_version": from_version,
            "to_version": to_version,
            "actor": actor,
            "reason": reason,
            "evidence": json.dumps(dict(evidence or {}), default=str, sort_keys=True),
        }
        self.con.execute(
            f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", list(row.values())
        )
        publish_snapshot(self.con, self.database, TABLE)
        self.appended.append(row)
        return row


class AuditLog:
    """The append-only audit trail of serving changes (and other operator-visible actions)."""

    def __init__(
        self, database: str | Path, timeout: float = 120.0, sink: ResultsSink | None = None
    ):
        self.database = str(database)
        self.timeout = timeout
        self.sink = sink or NullSink()  # mirrors the appended rows (after the lock is released)

    @contextlib.contextmanager
    def session(self) -> Iterator[AuditSession]:
        """Hold the log's write lock; read and append consistently inside."""
        session = None
        try:
            with write_connection(self.database, self.timeout) as con:
                con.execute(DDL)
                session = AuditSession(con, self.database)
                yield session
        finally:  # an appended row is committed (autocommit) even if the block raised later
            if session is not None and session.appended:
                self.sink.write(
                    TABLE.split(".")[-1],
                    pl.DataFrame(session.appended, schema=AUDIT_SCHEMA),
                    ["seq"],
                )

    def record(
        self,
        horizon: str,
        action: str,
        *,
        actor: str,
        reason: str,
        from_version: str | None = None,
        to_version: str | None = None,
        evidence: Mapping[str, Any] | None = None,
        at: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """Append one row on its own (e.g. "retrain_requested" from a sensor)."""
        with self.session() as session:
            return session.append(
                horizon,
                action,
                actor=actor,
                reason=reason,
                from_version=from_version,
                to_version=to_version,
                evidence=evidence,
                at=at,
            )

    def rows(self, horizon: str | None = None) -> pl.DataFrame:
        """The log as of the last finished write (from the snapshot; never opens the file)."""
        frame = read_snapshot(self.database, TABLE)
        return _shape(frame if frame is not None else pl.DataFrame(schema=AUDIT_SCHEMA), horizon)


def _shape(frame: pl.DataFrame, horizon: str | None) -> pl.DataFrame:
    frame = frame.cast(AUDIT_SCHEMA) if frame.height else pl.DataFrame(schema=AUDIT_SCHEMA)
    if horizon is not None:
        frame = frame.filter(pl.col("horizon") == horizon)
    return frame.sort("seq")


@dataclass(frozen=True)
class ControlResult:
    changed: bool
    horizon: str
    model: str  # the registered model, e.g. "cbi-zl-1w"
    from_version: str | None
    to_version: str
    message: str
    audit: dict[str, Any] | None  # the row written (None when nothing changed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_text(**values: str | None) -> None:
    blank = [k for k, v in values.items() if v is None or not str(v).strip()]
    if blank:
        raise ServingControlError(f"{', '.join(blank)} must be given (the audit trail needs it)")


def plain_version(horizon: str, version: str | int) -> str:
    """A version as "3", "v3", 3 or "cbi-zl-1w/v3" -> "3" (another model's label: an error)."""
    text = str(version).strip()
    name = registered_model_name(horizon)
    if "/" in text:
        model, _, text = text.partition("/")
        if model != name:
            raise ServingControlError(f"version {version!r} is not a version of {name}")
    text = text.removeprefix("v")
    if not text.isdigit():
        raise ServingControlError(f"{version!r} is not a version number of {name}")
    return str(int(text))


def _forced_evidence(
    name: str,
    target: str,
    versions: Mapping[int, Any],
    evidence: Mapping[str, Any] | None,
    force: bool,
) -> dict[str, Any]:
    """The audit evidence of a move to `target`; refuses a version that failed its gates
    unless forced (then the evidence says so, with the gates)."""
    failed = version_failed_gates(versions[int(target)])
    if failed and not force:
        raise ServingControlError(
            f"{name} v{target} failed its promotion gates ({'; '.join(failed)}): it would serve "
            "provisional; pass --force (force=True) to serve it anyway"
        )
    extra = {"forced": True, "failed_gates": list(failed)} if failed else {}
    return {**dict(evidence or {}), **extra}


def _known(versions: Mapping[int, Any]) -> str:
    return ", ".join(f"v{v}" for v in sorted(versions)) if versions else "none registered"


def _require_known(name: str, version: str, versions: Mapping[int, Any]) -> None:
    if int(version) not in versions:
        raise ServingControlError(
            f"{name} has no version {version}; known versions: {_known(versions)}"
        )


def _move(
    tracker: Tracker,
    session: AuditSession,
    horizon: str,
    current: str | None,
    target: str,
    action: str,
    *,
    actor: str,
    reason: str,
    evidence: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Move the alias, then record it; if the record fails, move the alias back."""
    set_champion(tracker, horizon, target)
    try:
        return session.append(
            horizon,
            action,
            actor=actor,
            reason=reason,
            from_version=current,
            to_version=target,
            evidence=evidence,
        )
    except BaseException:
        if current is None:
            clear_champion(tracker, horizon)
        else:
            set_champion(tracker, horizon, current)
        raise


def promote(
    tracker: Tracker,
    audit: AuditLog,
    horizon: str,
    version: str | int,
    *,
    actor: str,
    reason: str,
    evidence: Mapping[str, Any] | None = None,
    action: str = PROMOTE,
    force: bool = False,
) -> ControlResult:
    """Make `version` the champion of the horizon and record who did it and why.

    `version`: "3", "v3" or "cbi-zl-1w/v3". An unknown version is an error that lists the
    known ones. Promoting the current champion changes nothing and writes no audit row
    (`changed` is False and the message says so). `action`: "promote" (by hand) or
    "auto_promote" (a sensor or publication acting on a promotion decision). A version that
    failed its gates needs `force` (see the module docstring).
    """
    _require_text(actor=actor, reason=reason)
    if action not in PROMOTIONS:
        raise ServingControlError(f"action must be one of {PROMOTIONS}, not {action!r}")
    name = registered_model_name(horizon)
    target = plain_version(horizon, version)
    with audit.session() as session:
        versions = registered_versions(tracker, horizon)
        _require_known(name, target, versions)
        current = champion_version(tracker, horizon)
        evidence = _forced_evidence(name, target, versions, evidence, force)
        if current == target:
            return ControlResult(
                False,
                horizon,
                name,
                current,
                target,
                f"{name} v{target} is already the champion: nothing changed, no audit row written",
                None,
            )
        row = _move(
            tracker,
            session,
            horizon,
            current,
            target,
            action,
            actor=actor,
            reason=reason,
            evidence=evidence,
        )
    if ROLLED_BACK_TAG in versions[int(target)]:
        tracker.client.delete_model_version_tag(name, target, ROLLED_BACK_TAG)
    before = f"v{current}" if current is not None else "no champion"
    return ControlResult(
        True, horizon, name, current, target, f"{name}: {before} -> v{target} ({action})", row
    )


def previous_champion(rows: pl.DataFrame, horizon: str, current: str) -> dict[str, Any] | None:
    """The latest promote/auto_promote row that made `current` champion of the horizon (its
    `from_version` is the champion before it), or None when the log has none."""
    found = rows.filter(
        (pl.col("horizon") == horizon)
        & pl.col("action").is_in(list(PROMOTIONS))
        & (pl.col("to_version") == current)
    ).sort("seq")
    return found.row(-1, named=True) if found.height else None


def rollback(
    tracker: Tracker,
    audit: AuditLog,
    horizon: str,
    *,
    actor: str,
    reason: str,
    to_version: str | int | None = None,
    evidence: Mapping[str, Any] | None = None,
    force: bool = False,
) -> ControlResult:
    """Put the previous champion back (or `to_version`) and record it as a "rollback".

    The default target is the version the current champion replaced: the `from_version` of the
    latest promote/auto_promote that made it champion. Rollbacks are not followed as
    promotions, so rolling back twice walks back down the promotion chain (v3 -> v2 -> v1)
    rather than undoing the first rollback. Errors, each saying why: no champion; no audit
    record of how the champion got there, or it had no predecessor (pass `to_version`); a
    `to_version` that does not exist or already serves. The version rolled back from is
    tagged `rolled_back`, so it stops being the shadow challenger.
    """
    _require_text(actor=actor, reason=reason)
    name = registered_model_name(horizon)
    with audit.session() as session:
        versions = registered_versions(tracker, horizon)
        current = champion_version(tracker, horizon)
        if current is None:
            raise ServingControlError(f"{name} has no champion: there is nothing to roll back")
        if to_version is None:
            made = previous_champion(session.rows(horizon), horizon, current)
            if made is None:
                raise ServingControlError(
                    f"the audit log has no promotion of {name} v{current} (it was set outside "
                    "promote, e.g. by a publication run): nothing to roll back to by default; "
                    f"name the version to serve (known versions: {_known(versions)})"
                )
            if made["from_version"] is None:
                raise ServingControlError(
                    f"{name} v{current} became champion with no champion before it (audit seq "
                    f"{made['seq']}): nothing to roll back to; name the version to serve "
                    f"(known versions: {_known(versions)})"
                )
            target = made["from_version"]
            chosen = f"the champion before v{current} (audit seq {made['seq']})"
        else:
            target = plain_version(horizon, to_version)
            chosen = "named by the operator"
        _require_known(name, target, versions)
        if target == current:
            raise ServingControlError(f"{name} v{target} already serves: nothing to roll back")
        evidence = _forced_evidence(name, target, versions, evidence, force)
        row = _move(
            tracker,
            session,
            horizon,
            current,
            target,
            ROLLBACK,
            actor=actor,
            reason=reason,
            evidence={**dict(evidence or {}), "target_chosen": chosen},
        )
    note = f"{row['at']:%Y-%m-%d %H:%M} UTC by {actor}: {reason}"
    tracker.set_version_tags(name, current, {ROLLED_BACK_TAG: note[:1000]})
    if ROLLED_BACK_TAG in versions[int(target)]:
        tracker.client.delete_model_version_tag(name, target, ROLLED_BACK_TAG)
    return ControlResult(
        True, horizon, name, current, target, f"{name}: v{current} -> v{target} (rollback)", row
    )
