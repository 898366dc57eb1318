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
"""

from __future__ import annotations

import datetime as dt
import email.utils
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

from cbi_platform.conditions import Condition
from cbi_platform.results_sink import NullSink, ResultsSink
from cbi_platform.storage import publish_snapshot, read_snapshot, write_connection

FIRED = "fired"
RESOLVED = "resolved"
SECURITIES = ("none", "starttls", "ssl")
STATE_TABLE = "ops.alert_state"
LOG_TABLE = "ops.alert_log"

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

    def mark_delivered(self, seq_list: Iterable[int], error: str | None = None) -> None:
        """Record a delivery attempt for the logged events `seq_list`: delivered when `error` is
        None, otherwise left undelivered with the error kept for the operator."""
        seqs = sorted({int(seq) for seq in seq_list})
        if not seqs:
            return
        with write_connection(self.database) as con:
            for statement in _DDL:
                con.execute(statement)
            con.execute(
                f"UPDATE {LOG_TABLE} SET delivered = ?, delivery_error = ? "
                "WHERE list_contains(?, seq)",
                [error is None, error, seqs],
            )
            publish_snapshot(con, self.database, LOG_TABLE)
            marked = con.execute(
                f"SELECT * FROM {LOG_TABLE} WHERE list_contains(?, seq)", [seqs]
            ).pl()
        self.sink.write("alert_log", marked, ["seq"])

    # -- readers (snapshots only) -------------------------------------------------------------
    def open_alerts(self) -> pl.DataFrame:
        """The alerts firing now, as of the last write."""
        return _snapshot_or_empty(self.database, STATE_TABLE, STATE_SCHEMA).sort("key")

    def log(self) -> pl.DataFrame:
        """Every fired/resolved event with its delivery status, in order."""
        return _snapshot_or_empty(self.database, LOG_TABLE, LOG_SCHEMA).sort("seq")

    def undelivered(self) -> list[AlertEvent]:
        """Logged events not yet handed to the mail server, oldest first (with `seq`)."""
        pending = self.log().filter(~pl.col("delivered"))
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
            )
            for row in pending.iter_rows(named=True)
        ]


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


def _message_id(key: str, event: str, as_of: dt.date) -> str:
    token = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-") or "alert"
    return f"<cbi-alert.{token}.{event}.{as_of.isoformat()}@cbi-platform>"


def render(event: AlertEvent, subject_prefix: str = "[CBI ZL]") -> EmailMessage:
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
    lines += ["", "Evidence:"]
    if event.evidence:
        lines += [f"  {name}: {_format_value(value)}" for name, value in event.evidence.items()]
    else:
        lines.append("  (none reported)")
    if event.link:
        lines += ["", f"Dagster run: {event.link}"]
    message.set_content("\n".join(lines) + "\n")
    return message


class Mailer(Protocol):
    """Anything that hands one event to its recipients; returns the recipients that were refused
    (the others got it), raises `AlertDeliveryError` when nobody got it."""

    def send(self, event: AlertEvent) -> Sequence[str] | None: ...


class SmtpMailer:
    """Sends one mail per event through smtplib, one short SMTP session each."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def send(self, event: AlertEvent) -> list[str]:
        """Mail `event`; return the refused recipients (the mail reached the others)."""
        s = self.settings
        message = render(event, s.subject_prefix)
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
                f"SMTP {where} rejected the mail for {event.key}: {exc}", affects_all=False
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise AlertDeliveryError(f"SMTP {where} failed: {type(exc).__name__}: {exc}") from exc
        return sorted(refused)


def deliver(book: AlertBook, mailer: Mailer, events: Sequence[AlertEvent] = ()) -> list[str]:
    """Mail `events` and every earlier undelivered event, oldest first, each at most once;
    record each outcome in the book and return the errors (never raises on a failed delivery).

    Events already delivered are skipped; a mail refused for some recipients only counts as
    delivered (reported in the errors). After a failure that concerns the server rather than
    one message (unreachable, login refused), the remaining events are not attempted this call;
    they keep that error and wait for the next call."""
    pending: dict[int, AlertEvent] = {event.seq: event for event in book.undelivered()}
    delivered_before = set(book.log().filter(pl.col("delivered"))["seq"].to_list())
    unlogged: list[AlertEvent] = []
    for event in events:
        if event.seq is None:
            unlogged.append(event)
        elif event.seq not in delivered_before:
            pending.setdefault(event.seq, event)
    queue = [pending[seq] for seq in sorted(pending)] + unlogged

    errors: list[str] = []
    blocked: str | None = None
    skipped: list[int] = []
    for event in queue:
        label = f"alert {event.key} ({event.event} {event.as_of.isoformat()})"
        if blocked is not None:
            if event.seq is not None:
                skipped.append(event.seq)
            errors.append(f"{label}: not attempted: {blocked}")
            continue
        try:
            refused = mailer.send(event) or ()
        except AlertDeliveryError as exc:
            errors.append(f"{label}: {exc}")
            if event.seq is not None:
                book.mark_delivered([event.seq], str(exc))
            if exc.affects_all:
                blocked = str(exc)
            continue
        if refused:  # the others got it: a retry would mail them twice, so it counts as sent
            errors.append(f"{label}: delivered, but refused for {', '.join(refused)}")
        if event.seq is not None:
            book.mark_delivered([event.seq])
    if skipped and blocked is not None:
        book.mark_delivered(skipped, f"not attempted: {blocked}")
    return errors


__all__ = [
    "AlertBook",
    "AlertDeliveryError",
    "AlertEvent",
    "Mailer",
    "SmtpMailer",
    "SmtpSettings",
    "deliver",
    "render",
]
