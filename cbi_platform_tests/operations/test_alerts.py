"""The alert book against a real SMTP server (aiosmtpd on 127.0.0.1): dedupe, restart, retry."""

from __future__ import annotations

import datetime as dt
import email
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

import polars as pl
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

import cbi_platform.storage as storage
from cbi_platform.conditions import ACCURACY, STALE_DATA, Condition
from cbi_platform.operations.alerts import (
    LOG_SCHEMA,
    STATE_SCHEMA,
    AlertBook,
    AlertDeliveryError,
    AlertEvent,
    SmtpMailer,
    SmtpSettings,
    deliver,
    render,
)

DAY = [dt.date(2024, 5, 6) + dt.timedelta(days=i) for i in range(6)]  # DAY[1] = day 1
LINK = "http://dagster.local/runs/abc123"


@dataclass
class Inbox:
    """aiosmtpd handler: keeps every accepted mail; rejects DATA whose subject says 'poison'
    and recipients starting with 'bounce'."""

    mails: list[tuple[str, list[str], Message]] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("bounce"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = email.message_from_bytes(envelope.original_content or envelope.content)
        if "poison" in message["Subject"]:
            return "554 5.6.0 message content rejected"
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def subjects(self) -> list[str]:
        return [message["Subject"] for _, _, message in self.mails]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"cbi",
        b"s3cret",
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticator,
        auth_require_tls=False,
        auth_exclude_mechanism=["LOGIN"],  # PLAIN only: one try, one clear refusal
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _settings(port: int, **overrides) -> SmtpSettings:
    values = dict(
        host="127.0.0.1",
        port=port,
        security="none",
        sender="cbi@example.com",
        recipients=("desk@example.com", "risk@example.com"),
        timeout_seconds=5.0,
    )
    values.update(overrides)
    return SmtpSettings(**values)


def _accuracy(day: int, firing: bool, ratio: float = 1.23456) -> Condition:
    return Condition(
        key="accuracy/1w",
        kind=ACCURACY,
        firing=firing,
        title="1w MAPE worse than the random walk",
        as_of=DAY[day],
        horizon="1w",
        evidence={"mape_ratio": ratio, "window_days": 20, "per_regime": {"normal": 0.0123456}},
        link=LINK,
    )


def _stale(day: int, firing: bool) -> Condition:
    return Condition(
        key="stale_data/zl",
        kind=STALE_DATA,
        firing=firing,
        title="ZL prices not refreshed",
        as_of=DAY[day],
        evidence={"last_price_date": "2024-05-01"},
    )


def test_fire_hold_resolve_refire_sends_one_mail_per_change(tmp_path: Path, smtp_server):
    inbox, port = smtp_server
    book = AlertBook(tmp_path / "alerts.duckdb")
    mailer = SmtpMailer(_settings(port))

    fired = book.update([_accuracy(1, True)])
    assert [e.event for e in fired] == ["fired"]
    assert deliver(book, mailer, fired) == []
    assert len(inbox.mails) == 1
    sender, rcpts, mail = inbox.mails[0]
    assert sender == "cbi@example.com"
    assert rcpts == ["desk@example.com", "risk@example.com"]
    assert mail["Subject"] == "[CBI ZL] FIRING accuracy 1w: 1w MAPE worse than the random walk"
    assert mail["X-CBI-Alert-Key"] == "accuracy/1w"
    body = mail.get_payload(decode=True).decode()
    assert "As of: 2024-05-07" in body
    assert "mape_ratio: 1.2346" in body
    assert "window_days: 20" in body
    assert 'per_regime: {"normal": 0.01235}' in body
    assert f"Dagster run: {LINK}" in body

    for day in (2, 3):  # still firing: state refreshed, no mail
        events = book.update([_accuracy(day, True, ratio=1.5)])
        assert events == []
        assert deliver(book, mailer, events) == []
    assert len(inbox.mails) == 1
    (open_row,) = book.open_alerts().iter_rows(named=True)
    assert open_row["opened_as_of"] == DAY[1] and open_row["last_seen_as_of"] == DAY[3]
    assert '"mape_ratio": 1.5' in open_row["evidence"]

    resolved = book.update([_accuracy(4, False, ratio=0.9)])
    assert [(e.event, e.opened_as_of, e.evidence["mape_ratio"]) for e in resolved] == [
        ("resolved", DAY[1], 0.9)
    ]
    assert deliver(book, mailer, resolved) == []
    assert len(inbox.mails) == 2
    mail = inbox.mails[1][2]
    assert mail["Subject"] == "[CBI ZL] RESOLVED accuracy 1w: 1w MAPE worse than the random walk"
    assert mail["In-Reply-To"] == inbox.mails[0][2]["Message-ID"]
    body = mail.get_payload(decode=True).decode()
    assert "As of: 2024-05-10" in body and "Firing since: 2024-05-07" in body
    assert "mape_ratio: 0.9" in body
    assert book.open_alerts().is_empty()

    assert deliver(book, mailer, book.update([_accuracy(5, True)])) == []
    assert inbox.subjects()[2].startswith("[CBI ZL] FIRING accuracy 1w")
    assert len(inbox.mails) == 3

    log = book.log()
    assert log["event"].to_list() == ["fired", "resolved", "fired"]
    assert log["seq"].to_list() == [1, 2, 3]
    assert log["delivered"].all() and log["delivery_error"].is_null().all()
    assert book.undelivered() == []


def test_update_is_idempotent_survives_restart_and_leaves_unjudged_keys(tmp_path: Path):
    database = tmp_path / "alerts.duckdb"
    book = AlertBook(database)
    first = book.update([_accuracy(1, True), _stale(1, True)])
    assert sorted(e.key for e in first) == ["accuracy/1w", "stale_data/zl"]
    assert book.update([_accuracy(1, True), _stale(1, True)]) == []  # same day again

    restarted = AlertBook(database)  # a daemon restart: new instance, same file
    assert restarted.update([_accuracy(2, True), _stale(2, True)]) == []
    assert restarted.open_alerts()["key"].to_list() == ["accuracy/1w", "stale_data/zl"]

    # only the accuracy monitor ran: the stale-data alert is left open, untouched
    resolved = restarted.update([_accuracy(3, False)])
    assert [(e.key, e.event) for e in resolved] == [("accuracy/1w", "resolved")]
    assert restarted.update([_accuracy(3, False)]) == []
    (row,) = restarted.open_alerts().iter_rows(named=True)
    assert (row["key"], row["last_seen_as_of"]) == ("stale_data/zl", DAY[2])

    # a replay of an older day neither re-opens nor closes anything
    assert restarted.update([_accuracy(2, True), _stale(1, False)]) == []
    assert restarted.open_alerts()["key"].to_list() == ["stale_data/zl"]
    assert restarted.log()["event"].to_list() == ["fired", "fired", "resolved"]


def test_several_judgements_of_one_key_in_a_batch_use_the_latest(tmp_path: Path):
    book = AlertBook(tmp_path / "alerts.duckdb")
    events = book.update([_accuracy(3, True), _accuracy(1, False), _accuracy(2, True)])
    assert [(e.event, e.as_of) for e in events] == [("fired", DAY[3])]
    batch = [_accuracy(4, False), _accuracy(4, True)]  # same day: the last one given wins
    assert book.update(batch) == []
    assert [e.event for e in book.update([_accuracy(5, True), _accuracy(5, False)])] == ["resolved"]


def test_failed_delivery_is_recorded_and_retried_exactly_once(tmp_path: Path, smtp_server):
    inbox, port = smtp_server
    book = AlertBook(tmp_path / "alerts.duckdb")
    dead_port = _free_port()  # nothing listens there
    attempts: list[str] = []

    class CountingMailer(SmtpMailer):
        def send(self, event: AlertEvent) -> list[str]:
            attempts.append(event.key)
            return super().send(event)

    first = book.update([_accuracy(1, True), _stale(1, True)])
    errors = deliver(book, CountingMailer(_settings(dead_port)), first)
    assert len(errors) == 2
    assert f"127.0.0.1:{dead_port}" in errors[0]
    assert "not attempted" in errors[1]
    assert attempts == ["accuracy/1w"]  # the server is down: no point trying the rest
    log = book.log()
    assert not log["delivered"].any()
    assert log["delivery_error"].str.contains(f"127.0.0.1:{dead_port}").all()
    assert [e.key for e in book.undelivered()] == ["accuracy/1w", "stale_data/zl"]

    # next tick: a new event plus the backlog, oldest first, each once
    new = book.update([_accuracy(2, True), _stale(2, False)])
    assert [e.event for e in new] == ["resolved"]
    assert deliver(book, SmtpMailer(_settings(port)), new) == []
    assert [m["X-CBI-Alert-Key"] for _, _, m in inbox.mails] == [
        "accuracy/1w",
        "stale_data/zl",
        "stale_data/zl",
    ]
    assert [s.split(" ")[2] for s in inbox.subjects()] == ["FIRING", "FIRING", "RESOLVED"]
    assert book.log()["delivered"].all() and book.log()["delivery_error"].is_null().all()

    assert deliver(book, SmtpMailer(_settings(port)), first + new) == []  # already delivered
    assert len(inbox.mails) == 3


def test_rejected_message_does_not_block_the_others(tmp_path: Path, smtp_server):
    inbox, port = smtp_server
    book = AlertBook(tmp_path / "alerts.duckdb")
    poison = Condition(
        key="failed_run/x", kind="failed_run", firing=True, title="poison", as_of=DAY[1]
    )
    events = book.update([poison, _accuracy(1, True)])
    errors = deliver(book, SmtpMailer(_settings(port)), events)
    assert len(errors) == 1 and "rejected" in errors[0] and f"127.0.0.1:{port}" in errors[0]
    assert [m["X-CBI-Alert-Key"] for _, _, m in inbox.mails] == ["accuracy/1w"]
    assert [e.key for e in book.undelivered()] == ["failed_run/x"]


def test_partly_refused_recipients_count_as_delivered(tmp_path: Path, smtp_server):
    inbox, port = smtp_server
    book = AlertBook(tmp_path / "alerts.duckdb")
    mailer = SmtpMailer(_settings(port, recipients=("desk@example.com", "bounce@example.com")))
    errors = deliver(book, mailer, book.update([_accuracy(1, True)]))
    assert len(errors) == 1 and "bounce@example.com" in errors[0]
    assert [rcpts for _, rcpts, _ in inbox.mails] == [["desk@example.com"]]
    assert book.undelivered() == []  # a retry would mail the desk twice


def test_login_and_its_failure(tmp_path: Path, smtp_server):
    inbox, port = smtp_server
    event = AlertBook(tmp_path / "alerts.duckdb").update([_accuracy(1, True)])[0]
    SmtpMailer(_settings(port, username="cbi", password="s3cret")).send(event)
    assert len(inbox.mails) == 1
    with pytest.raises(AlertDeliveryError, match=f"127.0.0.1:{port}.*Authentication"):
        SmtpMailer(_settings(port, username="cbi", password="wrong")).send(event)
    assert len(inbox.mails) == 1


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"security": "tls"}, "security"),
        ({"recipients": ()}, "recipients"),
        ({"recipients": ["", " "]}, "recipients"),
        ({"sender": ""}, "sender"),
        ({"host": ""}, "host"),
        ({"port": 0}, "port"),
        ({"password": "x"}, "username"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
    ],
)
def test_smtp_settings_validation_names_the_field(overrides, field_name):
    with pytest.raises(ValueError, match=rf"SmtpSettings\.{field_name}"):
        _settings(overrides.pop("port", 25), **overrides)


def test_book_refuses_a_file_whose_catalog_would_clash_with_the_schema(tmp_path: Path):
    with pytest.raises(ValueError, match="alerts.duckdb"):
        AlertBook(tmp_path / "ops.duckdb")


def test_smtp_settings_defaults_and_comma_separated_recipients():
    settings = _settings(587, security="starttls", recipients="a@x.com, b@x.com")
    assert settings.recipients == ("a@x.com", "b@x.com")
    assert settings.subject_prefix == "[CBI ZL]"
    assert SmtpSettings("h", 25, "none", "s@x.com", ("r@x.com",)).timeout_seconds == 10
    assert "s3cret" not in repr(_settings(25, username="u", password="s3cret"))


def test_render_without_horizon_or_link():
    event = AlertEvent(
        key="stale_data/zl",
        kind=STALE_DATA,
        event="fired",
        as_of=DAY[1],
        horizon=None,
        title="ZL prices not refreshed",
        evidence={"age_days": 4, "big": 123456.789012, "tiny": 0.000123456, "flags": [1.0, "a"]},
        link=None,
        opened_as_of=DAY[1],
    )
    mail = render(event, subject_prefix="[TEST]")
    assert mail["Subject"] == "[TEST] FIRING stale_data: ZL prices not refreshed"
    body = mail.get_content()
    assert "  age_days: 4\n  big: 123456.789\n  tiny: 0.0001235\n" in body
    assert 'flags: [1.0, "a"]' in body
    assert "Dagster run" not in body


def test_readers_use_snapshots_only(tmp_path: Path, monkeypatch):
    database = tmp_path / "alerts.duckdb"
    book = AlertBook(database)
    assert book.open_alerts().schema == pl.Schema(STATE_SCHEMA)  # nothing written yet
    assert book.log().schema == pl.Schema(LOG_SCHEMA)
    assert book.undelivered() == []
    assert not database.exists()

    book.update([_accuracy(1, True)])
    with storage.write_lock(database, timeout=0.5):  # the writer released the lock
        pass

    def refuse(*args, **kwargs):
        raise AssertionError("a reader opened the DuckDB file")

    with storage.write_lock(database):  # another writer busy: readers must not wait
        monkeypatch.setattr(storage.duckdb, "connect", refuse)
        fresh = AlertBook(database)
        assert fresh.open_alerts()["key"].to_list() == ["accuracy/1w"]
        assert fresh.log().schema == pl.Schema(LOG_SCHEMA)
        assert [e.seq for e in fresh.undelivered()] == [1]
