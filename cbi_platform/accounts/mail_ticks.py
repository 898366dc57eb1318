"""One tick of the buyer's mail (the two sensors' logic): read the home's newest as-of date,
queue what is due for it, then deliver the outbox (and whatever an SMTP outage held back)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cbi_platform.accounts import digest, outbox, price_alerts
from cbi_platform.accounts.store import AccountStore
from cbi_platform.storage import read_snapshot


@dataclass(frozen=True)
class MailTick:
    summary: str
    cursor: str | None  # JSON {"as_of": ISO day}: the newest as-of date this tick saw


def _cursor(as_of) -> str:
    return json.dumps({"as_of": as_of.isoformat()})


def digest_tick(
    store: AccountStore,
    home: Path,
    send: outbox.Send | None,
    cursor: str | None,
    subject_prefix: str = "[CBI ZL]",
    max_business_days_behind: int | None = None,
) -> MailTick:
    """Queue the digests due for the newest as-of date (each user once per date, whatever the
    cursor says: the cursor only reports), then deliver. No SMTP host: nothing is queued."""
    if send is None:
        return MailTick("no SMTP host configured: buyer digests are not sent", cursor)
    inputs = digest.read_inputs(Path(home), max_business_days_behind)
    if inputs is None:
        return MailTick("no forecast served yet: no digest", cursor)
    queued = digest.queue_due_digests(store, inputs, subject_prefix)
    delivery = outbox.deliver(store, send)
    summary = f"digests for {inputs.as_of}: {len(queued)} queued; {delivery.summary()}"
    return MailTick(summary, _cursor(inputs.as_of))


def price_alert_tick(
    store: AccountStore,
    home: Path,
    send: outbox.Send | None,
    cursor: str | None,
    subject_prefix: str = "[CBI ZL]",
) -> MailTick:
    """Judge every active price alert on the newest as-of date's settle, then deliver."""
    if send is None:
        return MailTick("no SMTP host configured: price alerts are not judged", cursor)
    history = read_snapshot(Path(home) / digest.FORECASTS_DB, digest.FORECAST_TABLE)
    day = price_alerts.day_from_history(history) if history is not None else None
    if day is None:
        return MailTick("no settle served yet: no price alert judged", cursor)
    evaluation = price_alerts.evaluate(store, day, subject_prefix)
    delivery = outbox.deliver(store, send)
    return MailTick(f"{evaluation.summary(day)}; {delivery.summary()}", _cursor(day.as_of))
