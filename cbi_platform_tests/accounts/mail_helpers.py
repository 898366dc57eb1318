"""Helpers of the buyer-mail tests: users written straight into the accounts store, the home
of the API tests (served forecasts, a recommendation), and reading what a mail holds."""

from __future__ import annotations

import datetime as dt
import re
from email.message import Message

from cbi_platform.accounts.outbox import smtp_send
from cbi_platform.accounts.store import AccountStore, utc_now
from cbi_platform.operations.alerts import SmtpSettings
from cbi_platform.serving.store import ForecastStore
from cbi_platform.settings import HORIZONS
from cbi_platform_tests.api.conftest import forecast_row


def add_user(store: AccountStore, email: str, name: str = "Buyer", role: str = "buyer") -> int:
    """A user row (the password hash is a placeholder: these tests never sign in)."""
    with store.transaction() as tx:
        return tx.insert(
            "INSERT INTO users (email, name, role, password_hash, created_at, "
            "password_changed_at) VALUES (?, ?, ?, ?, ?, ?)",
            (email, name, role, "not-a-hash", utc_now(), utc_now()),
        )


def send_to(port: int):
    """The outbox's sender through the platform's SMTP mailer, to the test server."""
    return smtp_send(
        SmtpSettings(
            host="127.0.0.1",
            port=port,
            security="none",
            sender="cbi@example.com",
            recipients=("placeholder@example.com",),
            timeout_seconds=5,
        )
    )


def serve_day(home_path, day: dt.date, price: float, shift: float = 1.0) -> None:
    """Served forecasts of one more as-of date (every horizon), the API tests' rows, with each
    forecast and zone scaled by `shift` (to move P50)."""
    rows = []
    for h in HORIZONS:
        row = forecast_row(day, h, price)
        for name in ("forecast", "p10", "p30", "p50", "p70", "p90", "lo90", "hi90"):
            row[name] *= shift
        rows.append(row)
    ForecastStore(home_path / "forecasts.duckdb").append(rows)


def html_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text/html part")


def text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text/plain part")


def unsubscribe_token(message: Message) -> str:
    found = re.search(r"/unsubscribe\?token=([A-Za-z0-9_\-]+)", message["List-Unsubscribe"])
    assert found, message["List-Unsubscribe"]
    return found.group(1)


def html_with_inline_images(message: Message) -> str:
    """The HTML part with each `cid:` image replaced by a data: URL of its part, as a mail
    client shows it (a browser cannot resolve cid:)."""
    import base64

    page = html_of(message)
    for part in message.walk():
        cid = part["Content-ID"]
        if cid and part.get_content_maintype() == "image":
            data = base64.b64encode(part.get_payload(decode=True)).decode()
            page = page.replace(
                f"cid:{cid.strip('<>')}", f"data:{part.get_content_type()};base64,{data}"
            )
    return page
