"""The alert book: monitor conditions in, one mail when an alert fires and one when it clears.

Monitors judge the same conditions every day; mailing every firing judgement would bury the
one that matters. The book keeps the open alerts in DuckDB (`ops.alert_state`) and turns
*changes* into events: a firing condition whose key is not open fires, a non-firing one whose
key is open resolves, everything else only refreshes the state. Keys a monitor did not judge
are left alone, and a judgement older than the key's last one (a replay) is ignored, so
re-running a day, or restarting the daemon, never mails twice.

Every event is appended to `ops.alert_log` with a `seq` and a `delivered` flag *before* it is
mailed. `deliver` sends the new events and any earlier undelivered ones, oldest first, and
records success or the error: a mail server that is down delays mails to the next tick, it
never loses them or fails the tick. Writes go through `storage.write_connection` (one block per
update) and publish Parquet snapshots; readers (`open_alerts`, `log`, `undelivered`) read
only those snapshots, never the DuckDB file.

**One cause, one mail.** The log keeps one row per condition; the *mail* is per group. Events
go in one mail when they were logged by the same `update` (same `logged_at`), are the same
event (fired, or resolved), are about the same day (`as_of`) and share a cause, where a
condition's cause is, in this order:

1. `evidence["cause"]`, when the monitor states one (a non-empty string);
2. `stale_data`, when the condition is judged on the market data (the `DATA_KINDS`: accuracy,
   drift, correlation_break, coverage, regime_failure, decision_quality) and a `stale_data`
   condition is in the same batch: on stale prices those judgements are moot, the stale data is
   what to fix;
3. otherwise its kind: e.g. accuracy/1w and accuracy/1m firing together are one mail.

A group of one is mailed exactly as before (its key's own Message-ID); a larger group is one
mail listing every member's key, title, evidence, run link and playbook link, with a
Message-ID made of the cause, the event, the day and the members' keys (stable across
retries). Delivery stays at-least-once and no-duplicate: a group's members are marked delivered
together, after the one mail went.

**Answering an alert.** An engineer may acknowledge an open alert, or snooze it until a day
(`acknowledge`, `snooze`, `unsnooze`; each writes a row to `ops.alert_answer_log`: who, when,
key, action, until, reason). The answer (`ops.alert_answer`) belongs to the alert's *episode*:
the `seq` of the fired event that opened it. While it covers the episode (an acknowledgement
for the whole episode, a snooze for events `as_of` on or before its `until`), the episode sends
no further mail: a fired mail still waiting in the backlog and the resolved mail are not sent
(their log rows are marked delivered with `delivery_error` "suppressed: ..."), and the clear is
reported in the daily digest instead. A new episode (it cleared and fires again) is not covered:
it mails as usual. Every mail links to the playbook entry of its kind (`playbook_link`).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import math
import re
import smtplib
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, Protocol

import polars as pl

from cbi_platform import clock
from cbi_platform.conditions import (
    ACCURACY,
    CORRELATION_BREAK,
    COVERAGE,
    DECISION_QUALITY,
    DRIFT,
    KINDS,
    REGIME_FAILURE,
    STALE_DATA,
    Condition,
)
from cbi_platform.results_sink import NullSink, ResultsSink
from cbi_platform.storage import publish_snapshot, read_snapshot, write_connection

FIRED = "fired"
RESOLVED = "resolved"
SECURITIES = ("none", "starttls", "ssl")
STATE_TABLE = "ops.alert_state"
LOG_TABLE = "ops.alert_log"
ANSWER_TABLE = "ops.alert_answer"  # the answer (ack / snooze) of each key's latest episode
ANSWER_LOG_TABLE = "ops.alert_answer_log"  # every acknowledge / snooze / unsnooze
ACKNOWLEDGE = "acknowledge"
SNOOZE = "snooze"
UNSNOOZE = "unsnooze"
SUPPRESSED = "suppressed: "  # prefix of delivery_error for a mail not sent because answered
# Judged on the market data: moot while the data is stale (grouped under stale_data).
DATA_KINDS = (ACCURACY, DRIFT, CORRELATION_BREAK, COVERAGE, REGIME_FAILURE, DECISION_QUALITY)
# Where the playbook lives; each mail links to `<base>#<kind>` (CBI_PLAYBOOK_URL sets the base).
DEFAULT_PLAYBOOK_URL = "docs/PLAYBOOK.md"

STATE_SCHEMA: dict[str, pl.DataType] = {
    "key": pl.String(),
    "kind": pl.String(),
    "horizon": pl.String(),
    "title": pl.String(),
    "evidence": pl.String(),
    "link": pl.String(),
    "opened_as_of": pl.Date(),
    "last_seen_as_of": pl.Date(),
}
LOG_SCHEMA: dict[str, pl.DataType] = {
    "seq": pl.Int32(),
    "key": pl.String(),
    "kind": pl.String(),
    "horizon": pl.String(),
    "event": pl.String(),
    "as_of": pl.Date(),
    "opened_as_of": pl.Date(),
    "title": pl.String(),
    "evidence": pl.String(),
    "link": pl.String(),
    "logged_at": pl.Datetime("us"),
    "delivered": pl.Boolean(),
    "delivery_error": pl.String(),
}
ANSWER_SCHEMA: dict[str, pl.DataType] = {
    "key": pl.String(),
    "episode_seq": pl.Int32(),
    "opened_as_of": pl.Date(),
    "action": pl.String(),
    "until": pl.Date(),
    "answered_by": pl.String(),
    "reason": pl.String(),
    "answered_at": pl.Datetime("us"),
}
ANSWER_LOG_SCHEMA: dict[str, pl.DataType] = {
    "seq": pl.Int32(),
    "answered_at": pl.Datetime("us"),
    "key": pl.String(),
    "action": pl.String(),
    "until": pl.Date(),
    "answered_by": pl.String(),
    "reason": pl.String(),
    "episode_seq": pl.Int32(),
    "opened_as_of": pl.Date(),
}

_DDL = (
    "CREATE SCHEMA IF NOT EXISTS ops",
    f"""CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
        key VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, horizon VARCHAR, title VARCHAR,
        evidence VARCHAR, link VARCHAR, opened_as_of DATE NOT NULL,
        last_seen_as_of DATE NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
        seq INTEGER PRIMARY KEY, key VARCHAR NOT NULL, kind VARCHAR NOT NULL, horizon VARCHAR,
        event VARCHAR NOT NULL, as_of DATE NOT NULL, opened_as_of DATE NOT NULL, title VARCHAR,
        evidence VARCHAR, link VARCHAR, logged_at TIMESTAMP NOT NULL,
        delivered BOOLEAN NOT NULL, delivery_error VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS {ANSWER_TABLE} (
        key VARCHAR PRIMARY KEY, episode_seq INTEGER NOT NULL, opened_as_of DATE NOT NULL,
        action VARCHAR NOT NULL, until DATE, answered_by VARCHAR NOT NULL, reason VARCHAR NOT NULL,
        answered_at TIMESTAMP NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {ANSWER_LOG_TABLE} (
        seq INTEGER PRIMARY KEY, answered_at TIMESTAMP NOT NULL, key VARCHAR NOT NULL,
        action VARCHAR NOT NULL, until DATE, answered_by VARCHAR NOT NULL, reason VARCHAR NOT NULL,
        episode_seq INTEGER NOT NULL, opened_as_of DATE NOT NULL)""",
)


@dataclass(frozen=True)
class AlertEvent:
    """An alert that started firing or cleared. `seq` is its row in the log (None until logged);
    for a resolved event `opened_as_of` is the day it had fired."""

    key: str
    kind: str
    event: Literal["fired", "resolved"]
    as_of: dt.date
    horizon: str | None
    title: str
    evidence: dict[str, Any]
    link: str | None
    opened_as_of: dt.date
    seq: int | None = None
    logged_at: dt.datetime | None = None  # the update that logged it (one per batch)


class AlertAnswerError(ValueError):
    """An acknowledge / snooze / unsnooze that cannot be honoured; the message names why.
    `code`: "unknown_alert" (never seen), "not_open" (it cleared), "nothing_to_remove"
    (unsnooze of an unanswered alert) or "invalid" (no who / reason, a day in the past)."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AlertAnswer:
    """An answer as recorded (also the audit row)."""

    key: str
    action: str
    by: str
    reason: str
    until: dt.date | None
    episode_seq: int
    opened_as_of: dt.date
    answered_at: dt.datetime


class AlertDeliveryError(RuntimeError):
    """A mail could not be handed to the SMTP server. `affects_all` is False only when the
    server rejected this message's content, so the other pending mails are still worth trying."""

    def __init__(self, message: str, *, affects_all: bool = True) -> None:
        super().__init__(message)
        self.affects_all = affects_all


def _evidence_json(evidence: dict[str, Any]) -> str:
    return json.dumps(evidence, sort_keys=True, default=str)


class AlertBook:
    """Persistent alert state in `database` (DuckDB, schema `ops`) and its Parquet snapshots.

    Constructing one touches no file: readers can build a book and read snapshots without ever
    contending for the store."""

    def __init__(self, database: str | Path, sink: ResultsSink | None = None) -> None:
        self.database = Path(database)
        self.sink = sink or NullSink()  # mirrors state and events (after the local write)
        if self.database.stem.lower() == "ops":  # DuckDB names the catalog after the file
            raise ValueError(
                f"AlertBook: {self.database.name}: a DuckDB file named 'ops' makes the catalog "
                "'ops' clash with the schema 'ops'; use another name (e.g. alerts.duckdb)"
            )

    # -- writers ------------------------------------------------------------------------------
    def update(self, conditions: Sequence[Condition]) -> list[AlertEvent]:
        """Apply one round of judgements; return (and log, undelivered) the fired/resolved
        events. Idempotent: the same conditions again yield nothing."""
        events: list[AlertEvent] = []
        logged_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with write_connection(self.database) as con:
            for statement in _DDL:
                con.execute(statement)
            state_before = con.sql(f"SELECT * FROM {STATE_TABLE} ORDER BY key").pl()
            con.begin()
            try:
                open_rows = con.execute(
                    f"SELECT key, opened_as_of, last_seen_as_of FROM {STATE_TABLE}"
                ).fetchall()
                opened = {key: opened_on for key, opened_on, _ in open_rows}
                last_judged = dict(
                    con.execute(f"SELECT key, max(as_of) FROM {LOG_TABLE} GROUP BY key").fetchall()
                )
                last_judged.update({key: seen for key, _, seen in open_rows})
                next_seq = con.execute(
                    f"SELECT coalesce(max(seq), 0) + 1 FROM {LOG_TABLE}"
                ).fetchone()[0]
                first_seq = next_seq

                for condition in _latest_per_key(conditions):
                    key = condition.key
                    if key in last_judged and condition.as_of < last_judged[key]:
                        continue  # a replay of an older day: the book already knows better
                    evidence = _evidence_json(condition.evidence)
                    if condition.firing and key in opened:
                        con.execute(
                            f"UPDATE {STATE_TABLE} SET title = ?, evidence = ?, link = ?, "
                            "last_seen_as_of = ? WHERE key = ?",
                            [condition.title, evidence, condition.link, condition.as_of, key],
                        )
                        last_judged[key] = condition.as_of
                        continue
                    if not condition.firing and key not in opened:
                        last_judged[key] = condition.as_of
                        continue
                    if condition.firing:
                        opened_on = condition.as_of
                        con.execute(
                            f"INSERT INTO {STATE_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [
                                key,
                                condition.kind,
                                condition.horizon,
                                condition.title,
                                evidence,
                                condition.link,
                                opened_on,
                                condition.as_of,
                            ],
                        )
                        opened[key] = opened_on
                        kind_of_event = FIRED
                    else:
                        opened_on = opened.pop(key)
                        con.execute(f"DELETE FROM {STATE_TABLE} WHERE key = ?", [key])
                        kind_of_event = RESOLVED
                    last_judged[key] = condition.as_of
                    event = AlertEvent(
                        key=key,
                        kind=condition.kind,
                        event=kind_of_event,
                        as_of=condition.as_of,
                        horizon=condition.horizon,
                        title=condition.title,
                        evidence=dict(condition.evidence),
                        link=condition.link,
                        opened_as_of=opened_on,
                        seq=next_seq,
                        logged_at=logged_at,
                    )
                    con.execute(
                        f"INSERT INTO {LOG_TABLE} VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, FALSE, NULL)",
                        [
                            next_seq,
                            key,
                            event.kind,
                            event.horizon,
                            event.event,
                            event.as_of,
                            opened_on,
                            event.title,
                            evidence,
                            event.link,
                            logged_at,
                        ],
                    )
                    next_seq += 1
                    events.append(event)
                con.commit()
            except BaseException:
                con.rollback()
                raise
            publish_snapshot(con, self.database, STATE_TABLE)
            publish_snapshot(con, self.database, LOG_TABLE)
            state = con.sql(f"SELECT * FROM {STATE_TABLE} ORDER BY key").pl()
            logged = con.sql(f"SELECT * FROM {LOG_TABLE} WHERE seq >= {int(first_seq)}").pl()
        if not state.equals(state_before):  # a sensor tick that changed nothing sends nothing
            self.sink.write("alert_state", state, ["key"], complete=True)
        self.sink.write("alert_log", logged, ["seq"])
        return events

    def mark_delivered(
        self, seq_list: Iterable[int], error: str | None = None, *, suppressed: str | None = None
    ) -> None:
        """Record a delivery attempt for the logged events `seq_list`: delivered when `error` is
        None, otherwise left undelivered with the error kept for the operator. `suppressed`:
        not mailed on purpose (the alert was answered); counts as delivered, with the why."""
        seqs = sorted({int(seq) for seq in seq_list})
        if not seqs:
            return
        with write_connection(self.database) as con:
            for statement in _DDL:
                con.execute(statement)
            con.execute(
                f"UPDATE {LOG_TABLE} SET delivered = ?, delivery_error = ? "
                "WHERE list_contains(?, seq)",
                [error is None, error or (SUPPRESSED + suppressed if suppressed else None), seqs],
            )
            publish_snapshot(con, self.database, LOG_TABLE)
            marked = con.execute(
                f"SELECT * FROM {LOG_TABLE} WHERE list_contains(?, seq)", [seqs]
            ).pl()
        self.sink.write("alert_log", marked, ["seq"])

    def acknowledge(self, key: str, *, by: str, reason: str) -> AlertAnswer:
        """Acknowledge the open alert `key`: no further mail for this episode."""
        return self._answer(key, ACKNOWLEDGE, by=by, reason=reason)

    def snooze(
        self, key: str, until: dt.date, *, by: str, reason: str, today: dt.date | None = None
    ) -> AlertAnswer:
        """Snooze the open alert `key` until `until` (inclusive; not before `today`)."""
        return self._answer(key, SNOOZE, by=by, reason=reason, until=until, today=today)

    def unsnooze(self, key: str, *, by: str, reason: str) -> AlertAnswer:
        """Remove the acknowledgement or snooze of the open alert `key`: it mails again."""
        return self._answer(key, UNSNOOZE, by=by, reason=reason)

    def _answer(
        self,
        key: str,
        action: str,
        *,
        by: str,
        reason: str,
        until: dt.date | None = None,
        today: dt.date | None = None,
    ) -> AlertAnswer:
        by, reason = (by or "").strip(), (reason or "").strip()
        if not by:
            raise AlertAnswerError(f"{action} {key}: who answers is required (--by NAME)")
        if not reason:
            raise AlertAnswerError(f"{action} {key}: a reason is required (--reason TEXT)")
        if action == SNOOZE:
            today = today or clock.today()
            if until is None:
                raise AlertAnswerError(f"snooze {key}: the day it ends is required (--until)")
            if until < today:
                raise AlertAnswerError(
                    f"snooze {key}: until {until.isoformat()} is in the past (today is "
                    f"{today.isoformat()})"
                )
        answered_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with write_connection(self.database) as con:
            for statement in _DDL:
                con.execute(statement)
            con.begin()
            try:
                row = con.execute(
                    f"SELECT opened_as_of FROM {STATE_TABLE} WHERE key = ?", [key]
                ).fetchone()
                if row is None:
                    con.rollback()
                    raise AlertAnswerError(*_not_open(con, key, action))
                opened_as_of = row[0]
                episode_seq = con.execute(
                    f"SELECT max(seq) FROM {LOG_TABLE} WHERE key = ? AND event = ?", [key, FIRED]
                ).fetchone()[0]
                if action == UNSNOOZE:
                    current = con.execute(
                        f"SELECT action FROM {ANSWER_TABLE} WHERE key = ? AND episode_seq = ?",
                        [key, episode_seq],
                    ).fetchone()
                    if current is None:
                        con.rollback()
                        raise AlertAnswerError(
                            f"unsnooze {key}: it is neither acknowledged nor snoozed",
                            "nothing_to_remove",
                        )
                    con.execute(f"DELETE FROM {ANSWER_TABLE} WHERE key = ?", [key])
                else:
                    con.execute(
                        f"INSERT OR REPLACE INTO {ANSWER_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [key, episode_seq, opened_as_of, action, until, by, reason, answered_at],
                    )
                seq = con.execute(
                    f"SELECT coalesce(max(seq), 0) + 1 FROM {ANSWER_LOG_TABLE}"
                ).fetchone()[0]
                con.execute(
                    f"INSERT INTO {ANSWER_LOG_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [seq, answered_at, key, action, until, by, reason, episode_seq, opened_as_of],
                )
                con.commit()
            except AlertAnswerError:
                raise
            except BaseException:
                con.rollback()
                raise
            publish_snapshot(con, self.database, ANSWER_TABLE)
            publish_snapshot(con, self.database, ANSWER_LOG_TABLE)
            audit = con.execute(f"SELECT * FROM {ANSWER_LOG_TABLE} WHERE seq = ?", [seq]).pl()
        self.sink.write("alert_answer_log", audit, ["seq"])
        return AlertAnswer(
            key=key,
            action=action,
            by=by,
            reason=reason,
            until=until,
            episode_seq=int(episode_seq),
            opened_as_of=opened_as_of,
            answered_at=answered_at,
        )

    # -- readers (snapshots only) -------------------------------------------------------------
    def open_alerts(self) -> pl.DataFrame:
        """The alerts firing now, as of the last write."""
        return _snapshot_or_empty(self.database, STATE_TABLE, STATE_SCHEMA).sort("key")

    def log(self) -> pl.DataFrame:
        """Every fired/resolved event with its delivery status, in order."""
        return _snapshot_or_empty(self.database, LOG_TABLE, LOG_SCHEMA).sort("seq")

    def undelivered(self) -> list[AlertEvent]:
        """Logged events not yet handed to the mail server, oldest first (with `seq`)."""
        return events_of(self.log().filter(~pl.col("delivered")))

    def answers(self) -> pl.DataFrame:
        """The current answer (acknowledge / snooze) per key, with the episode it covers."""
        return _snapshot_or_empty(self.database, ANSWER_TABLE, ANSWER_SCHEMA).sort("key")

    def answer_log(self) -> pl.DataFrame:
        """Every acknowledge / snooze / unsnooze, in order (the audit)."""
        return _snapshot_or_empty(self.database, ANSWER_LOG_TABLE, ANSWER_LOG_SCHEMA).sort("seq")

    def open_alerts_answered(self, today: dt.date | None = None) -> pl.DataFrame:
        """The open alerts with their episode and its answer: `status` is "open",
        "acknowledged" or "snoozed" (a snooze whose `until` is before `today` reads "open")."""
        today = today or clock.today()
        open_now = self.open_alerts()
        episodes = (
            self.log()
            .filter(pl.col("event") == FIRED)
            .group_by("key")
            .agg(pl.col("seq").max().alias("episode_seq"))
        )
        answers = self.answers().select(
            "key",
            "episode_seq",
            pl.col("action").alias("answer"),
            pl.col("until").alias("answer_until"),
            "answered_by",
            pl.col("reason").alias("answer_reason"),
            "answered_at",
        )
        frame = open_now.join(episodes, on="key", how="left").join(
            answers, on=["key", "episode_seq"], how="left"
        )
        snoozed = (pl.col("answer") == SNOOZE) & (pl.col("answer_until") >= today)
        return frame.with_columns(
            pl.when(pl.col("answer") == ACKNOWLEDGE)
            .then(pl.lit("acknowledged"))
            .when(snoozed)
            .then(pl.lit("snoozed"))
            .otherwise(pl.lit("open"))
            .alias("status")
        ).sort("key")


def events_of(log: pl.DataFrame) -> list[AlertEvent]:
    """Log rows (a frame of `LOG_SCHEMA`) as events, in the frame's order."""
    return [
        AlertEvent(
            key=row["key"],
            kind=row["kind"],
            event=row["event"],
            as_of=row["as_of"],
            horizon=row["horizon"],
            title=row["title"],
            evidence=json.loads(row["evidence"]) if row["evidence"] else {},
            link=row["link"],
            opened_as_of=row["opened_as_of"],
            seq=row["seq"],
            logged_at=row["logged_at"],
        )
        for row in log.iter_rows(named=True)
    ]


def _not_open(con, key: str, action: str) -> tuple[str, str]:
    """Why `key` cannot be answered: never seen, or cleared (and when)."""
    last = con.execute(
        f"SELECT event, as_of FROM {LOG_TABLE} WHERE key = ? ORDER BY seq DESC LIMIT 1", [key]
    ).fetchone()
    if last is None:
        rows = con.execute(f"SELECT key FROM {STATE_TABLE} ORDER BY key").fetchall()
        open_keys = [k for (k,) in rows]
        listed = ", ".join(open_keys) if open_keys else "none"
        return f"{action} {key}: unknown alert key (open alerts: {listed})", "unknown_alert"
    return (
        f"{action} {key}: the alert is not open (it cleared on {last[1].isoformat()})",
        "not_open",
    )


def _latest_per_key(conditions: Sequence[Condition]) -> list[Condition]:
    """One judgement per key (the latest day; the last given on a tie), so a batch that holds
    several days of a key cannot flap within itself."""
    latest: dict[str, Condition] = {}
    for condition in conditions:
        current = latest.get(condition.key)
        if current is None or condition.as_of >= current.as_of:
            latest[condition.key] = condition
    return list(latest.values())


def _snapshot_or_empty(database: Path, table: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    frame = read_snapshot(database, table)
    if frame is None:
        return pl.DataFrame(schema=schema)
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


# -- mail -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SmtpSettings:
    """Where and how alert mails go. `security`: "none", "starttls" (upgrade on port 587 or
    25) or "ssl" (implicit TLS, port 465)."""

    host: str
    port: int
    security: str
    sender: str
    recipients: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 10.0
    subject_prefix: str = "[CBI ZL]"
    playbook_url: str = DEFAULT_PLAYBOOK_URL  # each mail links to <playbook_url>#<kind>

    def __post_init__(self) -> None:
        recipients = self.recipients
        if isinstance(recipients, str):
            recipients = recipients.split(",")
        recipients = tuple(r.strip() for r in recipients if r and r.strip())
        object.__setattr__(self, "recipients", recipients)
        if not self.host:
            raise ValueError("SmtpSettings.host: empty; the SMTP server's name is required")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"SmtpSettings.port: {self.port!r} is not a TCP port (1-65535)")
        if self.security not in SECURITIES:
            raise ValueError(
                f"SmtpSettings.security: unknown {self.security!r}; one of {SECURITIES}"
            )
        if not self.sender or "@" not in self.sender:
            raise ValueError(f"SmtpSettings.sender: missing or not an address ({self.sender!r})")
        if not recipients:
            raise ValueError("SmtpSettings.recipients: empty; at least one address is required")
        if self.password and not self.username:
            raise ValueError("SmtpSettings.username: a password was given without a username")
        if not self.timeout_seconds > 0:
            raise ValueError(f"SmtpSettings.timeout_seconds: {self.timeout_seconds!r} is not > 0")


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(_rounded(value), default=str)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _format_float(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == 0 or abs(value) >= 1:
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return text if text not in ("-0", "") else "0"
    return f"{value:.4g}"


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(_format_float(value)) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def playbook_anchor(kind: str) -> str:
    """The GitHub anchor of the playbook heading for `kind` (the heading is the kind itself)."""
    return re.sub(r"[^\w\- ]", "", kind.strip().lower()).replace(" ", "-")


def playbook_link(kind: str, base: str = DEFAULT_PLAYBOOK_URL) -> str:
    """Where the playbook says what to do about a `kind` alert: `<base>#<anchor>`."""
    return f"{(base or DEFAULT_PLAYBOOK_URL).split('#', 1)[0]}#{playbook_anchor(kind)}"


def _token(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "alert"


def _message_id(key: str, event: str, as_of: dt.date) -> str:
    return f"<cbi-alert.{_token(key)}.{event}.{as_of.isoformat()}@cbi-platform>"


def evidence_lines(evidence: dict[str, Any], indent: str = "  ") -> list[str]:
    if not evidence:
        return [f"{indent}(none reported)"]
    return [f"{indent}{name}: {_format_value(value)}" for name, value in evidence.items()]


def render(
    event: AlertEvent,
    subject_prefix: str = "[CBI ZL]",
    playbook_url: str = DEFAULT_PLAYBOOK_URL,
) -> EmailMessage:
    """The mail for one event (no From/To: the mailer adds them). Message-IDs are derived from
    the alert, so a retried mail keeps its id and the resolved mail threads under the fired one."""
    state = "FIRING" if event.event == FIRED else "RESOLVED"
    scope = " ".join(part for part in (event.kind, event.horizon) if part)
    message = EmailMessage()
    message["Subject"] = f"{subject_prefix} {state} {scope}: {event.title}".strip()
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = _message_id(event.key, event.event, event.as_of)
    message["X-CBI-Alert-Key"] = event.key
    if event.event == RESOLVED:
        fired_id = _message_id(event.key, FIRED, event.opened_as_of)
        message["In-Reply-To"] = fired_id
        message["References"] = fired_id

    horizon = f", horizon {event.horizon}" if event.horizon else ""
    if event.event == FIRED:
        lines = [
            f"FIRING: {event.title}",
            "",
            f"Condition {event.key} ({event.kind}{horizon}) started firing.",
            f"As of: {event.as_of.isoformat()}",
        ]
    else:
        days = (event.as_of - event.opened_as_of).days
        lines = [
            f"RESOLVED: {event.title}",
            "",
            f"Condition {event.key} ({event.kind}{horizon}) has cleared.",
            f"As of: {event.as_of.isoformat()}",
            f"Firing since: {event.opened_as_of.isoformat()} ({days} calendar days)",
        ]
    lines += ["", "Evidence:", *evidence_lines(event.evidence)]
    if event.link:
        lines += ["", f"Dagster run: {event.link}"]
    lines += ["", f"Playbook: {playbook_link(event.kind, playbook_url)}"]
    message.set_content("\n".join(lines) + "\n")
    return message


# -- one cause, one mail ------------------------------------------------------------------------
def cause_of(event: AlertEvent, stale_in_batch: bool) -> str:
    """The cause an event is grouped by (the rule is in the module docstring)."""
    given = event.evidence.get("cause") if isinstance(event.evidence, dict) else None
    if isinstance(given, str) and given.strip():
        return given.strip()
    if stale_in_batch and event.kind in DATA_KINDS:
        return STALE_DATA
    return event.kind


@dataclass(frozen=True)
class AlertGroup:
    """Events mailed together: one update, one event, one day, one cause."""

    cause: str
    event: Literal["fired", "resolved"]
    as_of: dt.date
    members: tuple[AlertEvent, ...]

    @property
    def message_id(self) -> str:
        """Derived from the cause and the members' keys (short: a folded id confuses clients)."""
        keys = ",".join([self.cause, *sorted(m.key for m in self.members)])
        digest = hashlib.sha256(keys.encode()).hexdigest()[:16]
        return f"<cbi-group.{digest}.{self.event}.{self.as_of.isoformat()}@cbi-platform>"

    @property
    def seqs(self) -> list[int]:
        return [m.seq for m in self.members if m.seq is not None]


def group_events(
    events: Sequence[AlertEvent], batch: Sequence[AlertEvent] = ()
) -> list[AlertGroup]:
    """Partition `events` into mails, in the order of their first member. `batch`: every logged
    event of the updates concerned (default `events`), which decides the stale-data rule.
    An event not logged by an update (no `logged_at`) is a group of its own."""
    stale_batches = {
        (e.logged_at, e.event, e.as_of)
        for e in (*batch, *events)
        if e.kind == STALE_DATA and e.logged_at is not None
    }
    groups: dict[tuple, list[AlertEvent]] = {}
    for i, event in enumerate(events):
        if event.logged_at is None:
            groups[("single", i)] = [event]
            continue
        batch_key = (event.logged_at, event.event, event.as_of)
        cause = cause_of(event, batch_key in stale_batches)
        groups.setdefault((*batch_key, cause), []).append(event)
    return [
        AlertGroup(
            cause=cause_of(members[0], False) if key[0] == "single" else key[3],
            event=members[0].event,
            as_of=members[0].as_of,
            members=tuple(members),
        )
        for key, members in groups.items()
    ]


def render_group(
    group: AlertGroup, subject_prefix: str = "[CBI ZL]", playbook_url: str = DEFAULT_PLAYBOOK_URL
) -> EmailMessage:
    """One mail for a group of events with one cause: every member's key, title, evidence,
    run link and playbook link."""
    if len(group.members) == 1:
        return render(group.members[0], subject_prefix, playbook_url)
    firing = group.event == FIRED
    state = "FIRING" if firing else "RESOLVED"
    lead = next((m for m in group.members if m.kind == group.cause), group.members[0])
    n = len(group.members)
    message = EmailMessage()
    message["Subject"] = (
        f"{subject_prefix} {state} {n} alerts, one cause ({group.cause}): {lead.title}"
    ).strip()
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = group.message_id
    message["X-CBI-Alert-Group"] = group.cause
    message["X-CBI-Alert-Keys"] = ", ".join(m.key for m in group.members)
    if not firing:
        fired_ids = " ".join(_message_id(m.key, FIRED, m.opened_as_of) for m in group.members)
        message["References"] = fired_ids
    verb = "started firing" if firing else "cleared"
    lines = [
        f"{state}: {n} conditions {verb} together, one cause: {group.cause}",
        "",
        f"As of: {group.as_of.isoformat()}",
        f"Start with the playbook for {group.cause}: {playbook_link(group.cause, playbook_url)}"
        if group.cause in KINDS
        else f"Grouped by the cause the monitors reported: {group.cause}",
    ]
    for i, m in enumerate(group.members, start=1):
        horizon = f", horizon {m.horizon}" if m.horizon else ""
        lines += ["", f"{i}. {m.key} ({m.kind}{horizon}): {m.title}"]
        if not firing:
            days = (m.as_of - m.opened_as_of).days
            lines.append(f"   Firing since: {m.opened_as_of.isoformat()} ({days} calendar days)")
        lines += ["   Evidence:", *evidence_lines(m.evidence, "     ")]
        if m.link:
            lines.append(f"   Dagster run: {m.link}")
        lines.append(f"   Playbook: {playbook_link(m.kind, playbook_url)}")
    message.set_content("\n".join(lines) + "\n")
    return message


class Mailer(Protocol):
    """Anything that hands mails to their recipients; each method returns the recipients that
    were refused (the others got it), raises `AlertDeliveryError` when nobody got it. `send`
    mails one event, `send_group` one group (of several events), `send_message` a ready mail
    (the digest)."""

    def send(self, event: AlertEvent) -> Sequence[str] | None: ...

    def send_group(self, group: AlertGroup) -> Sequence[str] | None: ...

    def send_message(self, message: EmailMessage, label: str) -> Sequence[str] | None: ...


class SmtpMailer:
    """Sends each mail through smtplib, one short SMTP session each."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def send(self, event: AlertEvent) -> list[str]:
        """Mail `event`; return the refused recipients (the mail reached the others)."""
        s = self.settings
        return self.send_message(render(event, s.subject_prefix, s.playbook_url), event.key)

    def send_group(self, group: AlertGroup) -> list[str]:
        """Mail one group's single mail; return the refused recipients."""
        s = self.settings
        label = ", ".join(m.key for m in group.members)
        return self.send_message(render_group(group, s.subject_prefix, s.playbook_url), label)

    def send_message(self, message: EmailMessage, label: str) -> list[str]:
        """Hand `message` (no From/To yet) to the server; `label` names it in errors."""
        s = self.settings
        message["From"] = s.sender
        message["To"] = ", ".join(s.recipients)
        where = f"{s.host}:{s.port}"
        try:
            if s.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host,
                    s.port,
                    timeout=s.timeout_seconds,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds)
            with smtp:
                if s.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if s.username:
                    smtp.login(s.username, s.password or "")
                refused = smtp.send_message(
                    message, from_addr=s.sender, to_addrs=list(s.recipients)
                )
        except smtplib.SMTPDataError as exc:
            raise AlertDeliveryError(
                f"SMTP {where} rejected the mail for {label}: {exc}", affects_all=False
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise AlertDeliveryError(f"SMTP {where} failed: {type(exc).__name__}: {exc}") from exc
        return sorted(refused)


def deliver(book: AlertBook, mailer: Mailer, events: Sequence[AlertEvent] = ()) -> list[str]:
    """Mail `events` and every earlier undelivered event, oldest first, each at most once;
    record each outcome in the book and return the errors (never raises on a failed delivery).

    Events go by group (`group_events`: one mail per cause), so a group's members share the
    outcome. Events already delivered are skipped; an event whose episode is answered
    (acknowledged, or snoozed through its day) is not mailed and is marked delivered as
    suppressed. A mail refused for some recipients only counts as delivered (reported in the
    errors). After a failure that concerns the server rather than one message (unreachable,
    login refused), the remaining mails are not attempted this call; they keep that error and
    wait for the next call."""
    log = book.log()
    pending: dict[int, AlertEvent] = {
        event.seq: event for event in events_of(log.filter(~pl.col("delivered")))
    }
    delivered_before = set(log.filter(pl.col("delivered"))["seq"].to_list())
    unlogged: list[AlertEvent] = []
    for event in events:
        if event.seq is None:
            unlogged.append(event)
        elif event.seq not in delivered_before:
            pending.setdefault(event.seq, event)

    suppressed = _suppressed(book, log, pending.values())
    for note, seqs in _by_note(suppressed).items():
        book.mark_delivered(seqs, suppressed=note)
    queue = [pending[seq] for seq in sorted(pending) if seq not in suppressed] + unlogged
    batch_times = {e.logged_at for e in queue if e.logged_at is not None}
    batch = events_of(log.filter(pl.col("logged_at").is_in(list(batch_times))))
    groups = group_events(queue, batch)

    errors: list[str] = []
    blocked: str | None = None
    skipped: list[int] = []
    for group in groups:
        keys = ", ".join(m.key for m in group.members)
        label = f"alert {keys} ({group.event} {group.as_of.isoformat()})"
        if blocked is not None:
            skipped += group.seqs
            errors.append(f"{label}: not attempted: {blocked}")
            continue
        try:
            if len(group.members) == 1:
                refused = mailer.send(group.members[0]) or ()
            else:
                refused = mailer.send_group(group) or ()
        except AlertDeliveryError as exc:
            errors.append(f"{label}: {exc}")
            book.mark_delivered(group.seqs, str(exc))
            if exc.affects_all:
                blocked = str(exc)
            continue
        if refused:  # the others got it: a retry would mail them twice, so it counts as sent
            errors.append(f"{label}: delivered, but refused for {', '.join(refused)}")
        book.mark_delivered(group.seqs)
    if skipped and blocked is not None:
        book.mark_delivered(skipped, f"not attempted: {blocked}")
    return errors


def episode_seqs(log: pl.DataFrame) -> dict[int, int]:
    """Each logged event's episode: the `seq` of the fired event that opened it."""
    out: dict[int, int] = {}
    opened: dict[str, int] = {}
    for row in log.sort("seq").select("seq", "key", "event").iter_rows(named=True):
        if row["event"] == FIRED:
            opened[row["key"]] = row["seq"]
        if row["key"] in opened:
            out[row["seq"]] = opened[row["key"]]
    return out


def answer_note(answer: dict[str, Any]) -> str:
    """How an answer reads in a mail, a log row or the digest."""
    what = "acknowledged" if answer["action"] == ACKNOWLEDGE else "snoozed"
    until = answer.get("until")
    when = f" until {until.isoformat()}" if answer["action"] == SNOOZE and until else ""
    return f"{what}{when} by {answer['answered_by']}: {answer['reason']}"


def covers(answer: dict[str, Any], as_of: dt.date) -> bool:
    """Whether an answer covers an event of its episode about day `as_of`."""
    if answer["action"] == ACKNOWLEDGE:
        return True
    return answer["action"] == SNOOZE and answer["until"] is not None and as_of <= answer["until"]


def _suppressed(book: AlertBook, log: pl.DataFrame, events: Iterable[AlertEvent]) -> dict[int, str]:
    """The pending events not to mail (their episode is answered), with the why."""
    answers = {row["key"]: row for row in book.answers().iter_rows(named=True)}
    if not answers:
        return {}
    episodes = episode_seqs(log)
    out: dict[int, str] = {}
    for event in events:
        answer = answers.get(event.key)
        if answer is None or event.seq is None:
            continue
        if episodes.get(event.seq) == answer["episode_seq"] and covers(answer, event.as_of):
            out[event.seq] = answer_note(answer)
    return out


def _by_note(suppressed: dict[int, str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for seq, note in suppressed.items():
        out.setdefault(note, []).append(seq)
    return out


__all__ = [
    "AlertAnswer",
    "AlertAnswerError",
    "AlertBook",
    "AlertDeliveryError",
    "AlertEvent",
    "AlertGroup",
    "Mailer",
    "SmtpMailer",
    "SmtpSettings",
    "deliver",
    "group_events",
    "playbook_link",
    "render",
    "render_group",
]
