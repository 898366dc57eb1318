"""The buyer's outbox: mails decided in one transaction, delivered after it.

Deciding to mail (a digest is due, a price alert crossed) and recording that decision happen in
one transaction of the accounts store: the rendered mail goes into `mail_outbox` under a unique
`dedup_key` (`digest:<user>:<as_of>`, `price_alert:<alert>:<as_of>`), so the same decision
taken twice (a sensor tick repeated, two processes) inserts nothing the second time.

Delivery (`deliver`) takes each queued mail in three steps:

1. claim it (`queued` -> `sending`, one attempt more) in a transaction of its own, so two
   deliverers never both send it;
2. hand it to the SMTP server (the platform's `SmtpMailer`, the engineer alerts' path);
3. mark it `sent` and write what the send means in the same transaction: for a digest the
   subscription's `last_sent_as_of` and `last_payload` (what the next digest compares with),
   for a price alert the `price_alert_mails` row.

A failure the SMTP client reports (server down, refused) puts the mail back to `queued` with the
error: the next tick delivers it, once (the outage delays, never loses). A crash between 1 and
3 leaves the mail `sending`: after `CLAIM_LEASE` it is marked `in_doubt` and **not** sent again.
That is the choice: at most once across a crash, because a buyer who gets the same digest or
alert twice learns to ignore them, while the one mail lost to a crash in the seconds of an SMTP
exchange is rare, visible (`in_doubt` rows, the tick's summary) and made up by the next digest's
"what changed", which compares with the last digest known to be sent. Every mail has a stable
Message-ID besides, so even a copy sent twice by the server shows once in a mail client.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from cbi_platform.accounts.store import AccountStore, Tx, utc_now
from cbi_platform.operations.alerts import AlertDeliveryError, SmtpMailer, SmtpSettings

DIGEST, PRICE_ALERT = "digest", "price_alert"
QUEUED, SENDING, SENT, IN_DOUBT, SUPERSEDED = "queued", "sending", "sent", "in_doubt", "superseded"
CLAIM_LEASE = dt.timedelta(minutes=10)  # longer than any SMTP exchange (10 s timeout)

# (message, recipient, label) -> the refused recipients; raises AlertDeliveryError.
Send = Callable[[EmailMessage, str, str], Sequence[str] | None]


def new_token() -> tuple[str, str]:
    """A random unsubscribe token and the SHA-256 hash that is stored (the token only in mail)."""
    token = secrets.token_urlsafe(24)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def smtp_send(settings: SmtpSettings) -> Send:
    """Send through the platform's SMTP mailer, to one buyer instead of the engineers' list."""

    def send(message: EmailMessage, recipient: str, label: str) -> Sequence[str]:
        mailer = SmtpMailer(dataclasses.replace(settings, recipients=(recipient,)))
        return mailer.send_message(message, label)

    return send


def enqueue(
    tx: Tx,
    *,
    user_id: int,
    kind: str,
    dedup_key: str,
    recipient: str,
    as_of: dt.date,
    message: EmailMessage,
    token_hash_: str,
    ref_id: int | None = None,
    payload: str | None = None,
) -> int | None:
    """Queue a rendered mail (inside the caller's transaction); None when `dedup_key` is
    already queued or sent (the decision was taken before)."""
    if tx.execute("SELECT id FROM mail_outbox WHERE dedup_key = ?", (dedup_key,)).one():
        return None
    return tx.insert(
        "INSERT INTO mail_outbox (user_id, kind, dedup_key, recipient, as_of, ref_id, "
        "message_id, message, payload, unsubscribe_token_hash, status, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            user_id,
            kind,
            dedup_key,
            recipient,
            as_of.isoformat(),
            ref_id,
            message["Message-ID"],
            message.as_string(),
            payload,
            token_hash_,
            QUEUED,
            utc_now(),
        ),
    )


@dataclass
class Delivery:
    sent: list[str] = dataclasses.field(default_factory=list)  # dedup keys
    failed: list[str] = dataclasses.field(default_factory=list)  # "key: error"
    in_doubt: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.sent:
            parts.append(f"sent {len(self.sent)} ({', '.join(self.sent)})")
        if self.failed:
            parts.append(f"queued again after a failure: {'; '.join(self.failed)}")
        if self.in_doubt:
            parts.append(f"in doubt after a crash mid-send, not resent: {', '.join(self.in_doubt)}")
        return "; ".join(parts) or "no mail to deliver"


def _parse(text: str) -> EmailMessage:
    return email.message_from_string(text, policy=email.policy.default)  # type: ignore[return-value]


def _mark_sent(tx: Tx, row: dict[str, Any], now: str) -> None:
    tx.execute(
        "UPDATE mail_outbox SET status = ?, sent_at = ?, last_error = NULL WHERE id = ?",
        (SENT, now, row["id"]),
    )
    if row["kind"] == DIGEST:
        tx.execute(
            "UPDATE digest_subscriptions SET last_sent_as_of = ?, last_payload = ? "
            "WHERE user_id = ? AND (last_sent_as_of IS NULL OR last_sent_as_of <= ?)",
            (row["as_of"], row["payload"], row["user_id"], row["as_of"]),
        )
    else:
        tx.execute(
            "INSERT INTO price_alert_mails (alert_id, crossing_as_of, sent_at, detail) "
            "VALUES (?, ?, ?, ?)",
            (row["ref_id"], row["as_of"], now, row["payload"] or ""),
        )


def _withdrawn(tx: Tx, row: dict[str, Any]) -> str | None:
    """Why a queued mail is no longer wanted (its owner unsubscribed or removed the alert while
    it waited for the SMTP server), or None."""
    if row["kind"] == DIGEST:
        sub = tx.execute(
            "SELECT cadence FROM digest_subscriptions WHERE user_id = ?", (row["user_id"],)
        ).one()
        return "unsubscribed before delivery" if sub is None or sub["cadence"] == "off" else None
    alert = tx.execute("SELECT removed_at FROM price_alerts WHERE id = ?", (row["ref_id"],)).one()
    return "alert removed before delivery" if alert is None or alert["removed_at"] else None


def deliver(store: AccountStore, send: Send, now: dt.datetime | None = None) -> Delivery:
    """Send every queued mail once, oldest first (the module docstring has the guarantees)."""
    now = now or dt.datetime.now(dt.UTC)
    result = Delivery()
    lease_start = (now - CLAIM_LEASE).replace(microsecond=0).isoformat()
    with store.transaction() as tx:
        stale = tx.execute(
            "SELECT id, dedup_key FROM mail_outbox WHERE status = ? AND claimed_at < ?",
            (SENDING, lease_start),
        ).all()
        for row in stale:
            tx.execute(
                "UPDATE mail_outbox SET status = ?, last_error = ? WHERE id = ?",
                (IN_DOUBT, "claimed but never confirmed (a crash mid-send): not resent", row["id"]),
            )
            result.in_doubt.append(row["dedup_key"])
        queued = tx.execute(
            "SELECT id FROM mail_outbox WHERE status = ? ORDER BY id", (QUEUED,)
        ).all()
    for mail_id in [r["id"] for r in queued]:
        with store.transaction() as tx:
            row = tx.execute("SELECT * FROM mail_outbox WHERE id = ?", (mail_id,)).one()
            if row is None or row["status"] != QUEUED:
                continue  # another deliverer took it, or it was superseded meanwhile
            withdrawn = _withdrawn(tx, row)
            if withdrawn:
                tx.execute(
                    "UPDATE mail_outbox SET status = ?, last_error = ? WHERE id = ?",
                    (SUPERSEDED, withdrawn, mail_id),
                )
                continue
            claimed = tx.execute(
                "UPDATE mail_outbox SET status = ?, claimed_at = ?, attempts = attempts + 1 "
                "WHERE id = ? AND status = ?",
                (SENDING, utc_now(), mail_id, QUEUED),
            ).rowcount
        if not claimed:
            continue
        try:
            send(_parse(row["message"]), row["recipient"], row["dedup_key"])
        except AlertDeliveryError as exc:
            with store.transaction() as tx:
                tx.execute(
                    "UPDATE mail_outbox SET status = ?, last_error = ? WHERE id = ?",
                    (QUEUED, str(exc), mail_id),
                )
            result.failed.append(f"{row['dedup_key']}: {exc}")
            if exc.affects_all:
                break  # the server is down: the rest waits for the next tick
            continue
        with store.transaction() as tx:
            _mark_sent(tx, row, utc_now())
        result.sent.append(row["dedup_key"])
    return result


def mails(store: AccountStore, user_id: int | None = None) -> list[dict[str, Any]]:
    """The outbox rows (without the message text), oldest first."""
    where, params = ("WHERE user_id = ?", (user_id,)) if user_id is not None else ("", ())
    with store.transaction() as tx:
        return tx.execute(
            "SELECT id, user_id, kind, dedup_key, recipient, as_of, ref_id, message_id, status, "
            f"attempts, created_at, sent_at, last_error FROM mail_outbox {where} ORDER BY id",
            params,
        ).all()
