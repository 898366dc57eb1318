"""The daily alert digest: for one day, what fired, what cleared and what is still open.

Each item carries its Dagster run link and its playbook link, and the answer an engineer gave
(acknowledged, snoozed until a day): a cleared alert whose resolved mail was suppressed by an
answer is reported here instead. "Fired" and "cleared" are the log's events *about* the day
(`as_of`); "open" is the book's open alerts when the digest is built.

One digest per day: `send_digest` records each sent day in `ops.alert_digest` (beside the alert
book) after the mail went and never sends a recorded day again, so a restarted sensor does not
mail twice. Like the alert mails, delivery is at least once: a crash between the mail and the
record resends it on the next tick, with the same Message-ID (`<cbi-digest.DAY@cbi-platform>`)
so a mail client shows it once.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import polars as pl

from cbi_platform.operations.alerts import (
    DEFAULT_PLAYBOOK_URL,
    FIRED,
    RESOLVED,
    SUPPRESSED,
    AlertBook,
    AlertDeliveryError,
    Mailer,
    answer_note,
    episode_seqs,
    evidence_lines,
    playbook_link,
)
from cbi_platform.storage import publish_snapshot, read_snapshot, write_connection

DIGEST_TABLE = "ops.alert_digest"
DIGEST_SCHEMA: dict[str, pl.DataType] = {
    "day": pl.Date(),
    "sent_at": pl.Datetime("us"),
    "message_id": pl.String(),
    "fired": pl.Int32(),
    "cleared": pl.Int32(),
    "open": pl.Int32(),
}
_DDL = (
    "CREATE SCHEMA IF NOT EXISTS ops",
    f"""CREATE TABLE IF NOT EXISTS {DIGEST_TABLE} (
        day DATE PRIMARY KEY, sent_at TIMESTAMP NOT NULL, message_id VARCHAR NOT NULL,
        fired INTEGER NOT NULL, cleared INTEGER NOT NULL, open INTEGER NOT NULL)""",
)


@dataclass(frozen=True)
class DigestItem:
    key: str
    kind: str
    title: str
    horizon: str | None
    as_of: dt.date  # the event's day (for an open alert: the last day it was judged)
    opened_as_of: dt.date
    link: str | None
    playbook: str
    status: str  # "open", or the answer ("acknowledged by ana: ...", "snoozed until ...")
    evidence: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # e.g. the resolved mail was suppressed by an answer


@dataclass(frozen=True)
class Digest:
    day: dt.date
    fired: tuple[DigestItem, ...]
    cleared: tuple[DigestItem, ...]
    open: tuple[DigestItem, ...]

    @property
    def message_id(self) -> str:
        return f"<cbi-digest.{self.day.isoformat()}@cbi-platform>"


@dataclass(frozen=True)
class DigestResult:
    day: dt.date
    sent: bool
    message: str
    already_sent: bool = False


def build_digest(
    book: AlertBook,
    day: dt.date,
    playbook_url: str = DEFAULT_PLAYBOOK_URL,
    today: dt.date | None = None,
) -> Digest:
    """The digest of `day` from the book's snapshots."""
    log = book.log()
    answers = {row["key"]: row for row in book.answers().iter_rows(named=True)}

    def answered(key: str, episode_seq: int | None) -> dict | None:
        answer = answers.get(key)
        return answer if answer is not None and answer["episode_seq"] == episode_seq else None

    episodes = episode_seqs(log)
    fired, cleared = [], []
    for row in log.filter(pl.col("as_of") == day).iter_rows(named=True):
        answer = answered(row["key"], episodes.get(row["seq"]))
        error = row["delivery_error"] or ""
        item = DigestItem(
            key=row["key"],
            kind=row["kind"],
            title=row["title"],
            horizon=row["horizon"],
            as_of=row["as_of"],
            opened_as_of=row["opened_as_of"],
            link=row["link"],
            playbook=playbook_link(row["kind"], playbook_url),
            status=answer_note(answer) if answer else "no answer",
            evidence=json.loads(row["evidence"]) if row["evidence"] else {},
            note=(
                "mail suppressed: " + error.removeprefix(SUPPRESSED)
                if error.startswith(SUPPRESSED)
                else ("mail not yet delivered: " + error if not row["delivered"] else None)
            ),
        )
        (fired if row["event"] == FIRED else cleared).append(item)
    open_items = []
    for row in book.open_alerts_answered(today).iter_rows(named=True):
        status = "open"
        if row["status"] != "open":
            status = answer_note(
                {
                    "action": row["answer"],
                    "until": row["answer_until"],
                    "answered_by": row["answered_by"],
                    "reason": row["answer_reason"],
                }
            )
        elif row["answer"] is not None:  # a snooze that ran out
            status = f"open (snooze ended {row['answer_until'].isoformat()})"
        open_items.append(
            DigestItem(
                key=row["key"],
                kind=row["kind"],
                title=row["title"],
                horizon=row["horizon"],
                as_of=row["last_seen_as_of"],
                opened_as_of=row["opened_as_of"],
                link=row["link"],
                playbook=playbook_link(row["kind"], playbook_url),
                status=status,
                evidence=json.loads(row["evidence"]) if row["evidence"] else {},
            )
        )
    return Digest(day, tuple(fired), tuple(cleared), tuple(open_items))


def _item_lines(item: DigestItem, event: str) -> list[str]:
    horizon = f", horizon {item.horizon}" if item.horizon else ""
    lines = [f"- {item.key} ({item.kind}{horizon}): {item.title}"]
    if event == RESOLVED:
        days = (item.as_of - item.opened_as_of).days
        lines.append(f"    firing since {item.opened_as_of.isoformat()} ({days} calendar days)")
    elif event == "open":
        lines.append(
            f"    firing since {item.opened_as_of.isoformat()}, last judged "
            f"{item.as_of.isoformat()}"
        )
    lines.append(f"    status: {item.status}")
    if item.note:
        lines.append(f"    {item.note}")
    if event != RESOLVED:
        lines += ["    evidence:", *evidence_lines(item.evidence, "      ")]
    lines.append(f"    Dagster run: {item.link or '(none)'}")
    lines.append(f"    Playbook: {item.playbook}")
    return lines


def render_digest(digest: Digest, subject_prefix: str = "[CBI ZL]") -> EmailMessage:
    """The digest mail (no From/To: the mailer adds them)."""
    n_fired, n_cleared, n_open = len(digest.fired), len(digest.cleared), len(digest.open)
    answered = sum(1 for item in digest.open if item.status.startswith(("acknowledged", "snoozed")))
    message = EmailMessage()
    message["Subject"] = (
        f"{subject_prefix} DIGEST {digest.day.isoformat()}: {n_fired} fired, {n_cleared} "
        f"cleared, {n_open} open"
    ).strip()
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = digest.message_id
    message["X-CBI-Digest-Day"] = digest.day.isoformat()
    lines = [
        f"Alert digest for {digest.day.isoformat()}",
        f"{n_fired} fired, {n_cleared} cleared, {n_open} still open ({answered} of them "
        "acknowledged or snoozed)",
    ]
    for title, items, event in (
        ("Fired", digest.fired, FIRED),
        ("Cleared", digest.cleared, RESOLVED),
        ("Still open", digest.open, "open"),
    ):
        lines += ["", f"{title} ({len(items)}):"]
        if not items:
            lines.append("  (none)")
        for item in items:
            lines += _item_lines(item, event)
    message.set_content("\n".join(lines) + "\n")
    return message


def digests(database) -> pl.DataFrame:
    """The days a digest was sent (snapshot reader)."""
    frame = read_snapshot(database, DIGEST_TABLE)
    if frame is None:
        return pl.DataFrame(schema=DIGEST_SCHEMA)
    return frame.select([pl.col(n).cast(t) for n, t in DIGEST_SCHEMA.items()]).sort("day")


def _record(database, digest: Digest) -> None:
    sent_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with write_connection(database) as con:
        for statement in _DDL:
            con.execute(statement)
        con.execute(
            f"INSERT OR IGNORE INTO {DIGEST_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
            [
                digest.day,
                sent_at,
                digest.message_id,
                len(digest.fired),
                len(digest.cleared),
                len(digest.open),
            ],
        )
        publish_snapshot(con, database, DIGEST_TABLE)


def send_digest(
    book: AlertBook,
    mailer: Mailer,
    day: dt.date,
    *,
    subject_prefix: str = "[CBI ZL]",
    playbook_url: str = DEFAULT_PLAYBOOK_URL,
    today: dt.date | None = None,
) -> DigestResult:
    """Mail the digest of `day` once: a day already recorded is not sent again. A delivery
    failure is returned (not raised) and leaves the day unrecorded, so the next call retries."""
    done = digests(book.database).filter(pl.col("day") == day)
    if done.height:
        return DigestResult(
            day, False, f"digest for {day.isoformat()} already sent at {done['sent_at'][0]}", True
        )
    digest = build_digest(book, day, playbook_url, today)
    try:
        refused = mailer.send_message(
            render_digest(digest, subject_prefix), f"digest {day.isoformat()}"
        )
    except AlertDeliveryError as exc:
        return DigestResult(day, False, f"digest for {day.isoformat()} not sent: {exc}")
    _record(book.database, digest)
    text = (
        f"digest for {day.isoformat()} sent: {len(digest.fired)} fired, "
        f"{len(digest.cleared)} cleared, {len(digest.open)} open"
    )
    if refused:
        text += f" (refused for {', '.join(refused)})"
    return DigestResult(day, True, text)


def digest_due(now: dt.datetime, hour: int) -> dt.date:
    """The day whose digest is due at local time `now`: yesterday from `hour` o'clock on,
    before that the day before yesterday."""
    if not 0 <= hour <= 23:
        raise ValueError(f"digest hour {hour!r}: not an hour of the day (0-23)")
    return (now - dt.timedelta(hours=hour)).date() - dt.timedelta(days=1)


__all__ = [
    "Digest",
    "DigestItem",
    "DigestResult",
    "build_digest",
    "digest_due",
    "digests",
    "render_digest",
    "send_digest",
]
