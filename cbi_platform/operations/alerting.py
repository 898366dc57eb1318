"""One tick of alerting: conditions in, deduplicated mails out (the alert sensor's logic)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cbi_platform.conditions import Condition
from cbi_platform.operations.alerts import AlertBook, AlertEvent, Mailer, deliver


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
