"""One tick of alerting: conditions in, deduplicated mails out (the alert sensor's logic); and
one tick of the daily digest (the digest sensor's logic)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cbi_platform.conditions import Condition
from cbi_platform.operations.alerts import (
    DEFAULT_PLAYBOOK_URL,
    AlertBook,
    AlertEvent,
    Mailer,
    deliver,
)
from cbi_platform.operations.digest import digest_due, send_digest


@dataclass
class AlertTick:
    events: list[AlertEvent]
    errors: list[str]
    delivered: bool  # False when no mailer is configured (events stay undelivered)

    def summary(self) -> str:
        if not self.events and not self.errors:
            return "no alert changed"
        parts = [f"{e.event} {e.key}" for e in self.events]
        if not self.delivered:
            parts.append("(no SMTP host configured: logged, not mailed)")
        parts += [f"delivery error: {e}" for e in self.errors]
        return "; ".join(parts)


def alert_tick(
    book: AlertBook, mailer: Mailer | None, conditions: Sequence[Condition]
) -> AlertTick:
    events = book.update(conditions)
    if mailer is None:
        return AlertTick(events, [], False)
    return AlertTick(events, deliver(book, mailer, events), True)


@dataclass
class DigestTick:
    summary: str
    cursor: str | None  # JSON {"last_day": ISO day}: the last day whose digest went (or was)
    sent: bool = False


def digest_tick(
    book: AlertBook,
    mailer: Mailer | None,
    now: dt.datetime,
    hour: int,
    cursor: str | None,
    *,
    subject_prefix: str = "[CBI ZL]",
    playbook_url: str = DEFAULT_PLAYBOOK_URL,
) -> DigestTick:
    """Send the digest that is due at local time `now` (`digest_due`), once: the cursor and
    the book's digest record (`ops.alert_digest`) both say which days went."""
    day = digest_due(now, hour)
    last = json.loads(cursor)["last_day"] if cursor else None
    if last is not None and dt.date.fromisoformat(last) >= day:
        return DigestTick(f"digest for {day.isoformat()} already sent", cursor)
    if mailer is None:
        return DigestTick(f"no SMTP host configured: digest for {day.isoformat()} not sent", cursor)
    result = send_digest(
        book, mailer, day, subject_prefix=subject_prefix, playbook_url=playbook_url, today=day
    )
    if result.sent or result.already_sent:
        cursor = json.dumps({"last_day": day.isoformat()})
    return DigestTick(result.message, cursor, result.sent)
