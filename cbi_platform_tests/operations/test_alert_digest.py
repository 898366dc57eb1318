"""The daily digest against a real SMTP server: fired / cleared / open with links, answers
shown, never twice for a day (the record and the sensor's cursor)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg

from cbi_platform.defs.operations.sensors import build_sensors
from cbi_platform.defs.pipeline import ALL_CHECKS, retrain_job
from cbi_platform.defs.resources import OperationsResource
from cbi_platform.operations.alerting import digest_tick
from cbi_platform.operations.alerts import AlertBook, SmtpMailer, deliver
from cbi_platform.operations.digest import digest_due, digests, send_digest
from cbi_platform_tests.operations.test_alerts import (
    DAY,
    LINK,
    _accuracy,
    _reload,
    _settings,
    _stale,
)


def _body(message) -> str:
    return message.get_payload(decode=True).decode()


def test_digest_lists_fired_cleared_open_with_links_once_per_day(tmp_path: Path, smtp_server):
    inbox, port = smtp_server
    book = AlertBook(tmp_path / "operations.duckdb")
    mailer = SmtpMailer(_settings(port, playbook_url="https://git.example/cbi/PLAYBOOK.md"))
    deliver(book, mailer, book.update([_stale(1, True), _reload(1, True)]))
    book.acknowledge("reload_mismatch/1w", by="ana", reason="registry fix under way")
    deliver(book, mailer, book.update([_accuracy(2, True), _reload(2, False), _stale(2, True)]))
    sent_before = len(inbox.mails)

    result = send_digest(book, mailer, DAY[2], playbook_url=mailer.settings.playbook_url)
    assert result.sent, result.message
    assert len(inbox.mails) == sent_before + 1
    mail = inbox.mails[-1][2]
    assert " ".join(mail["Subject"].split()) == (
        "[CBI ZL] DIGEST 2024-05-08: 1 fired, 1 cleared, 2 open"
    )
    assert mail["Message-ID"] == "<cbi-digest.2024-05-08@cbi-platform>"
    body = _body(mail)
    fired, rest = body.split("Cleared (1):")
    cleared, still_open = rest.split("Still open (2):")
    assert "- accuracy/1w (accuracy, horizon 1w)" in fired
    assert f"Dagster run: {LINK}" in fired
    assert "Playbook: https://git.example/cbi/PLAYBOOK.md#accuracy" in fired
    assert "- reload_mismatch/1w (reload_mismatch, horizon 1w)" in cleared
    assert "acknowledged by ana: registry fix under way" in cleared
    assert "mail suppressed: acknowledged by ana" in cleared
    assert "Playbook: https://git.example/cbi/PLAYBOOK.md#reload_mismatch" in cleared
    assert "- stale_data/zl (stale_data)" in still_open and "- accuracy/1w" in still_open
    assert "firing since 2024-05-07, last judged 2024-05-08" in still_open
    assert "Playbook: https://git.example/cbi/PLAYBOOK.md#stale_data" in still_open

    again = send_digest(book, mailer, DAY[2])  # a restart: the day is recorded
    assert not again.sent and again.already_sent and "already sent" in again.message
    assert len(inbox.mails) == sent_before + 1
    assert digests(book.database).select("day", "fired", "cleared", "open").rows() == [
        (DAY[2], 1, 1, 2)
    ]


def test_digest_tick_is_due_once_a_day_and_retries_a_failed_send(tmp_path: Path, smtp_server):
    inbox, port = smtp_server
    book = AlertBook(tmp_path / "operations.duckdb")
    book.update([_accuracy(1, True)])
    assert digest_due(dt.datetime(2024, 5, 8, 6, 59), 7) == dt.date(2024, 5, 6)
    assert digest_due(dt.datetime(2024, 5, 8, 7, 0), 7) == dt.date(2024, 5, 7)
    morning = dt.datetime(2024, 5, 8, 8, 0)
    down = digest_tick(book, SmtpMailer(_settings(9)), morning, 7, None)  # nothing on port 9
    assert not down.sent and down.cursor is None and "not sent" in down.summary
    tick = digest_tick(book, SmtpMailer(_settings(port)), morning, 7, down.cursor)
    assert tick.sent and json.loads(tick.cursor) == {"last_day": "2024-05-07"}
    later = digest_tick(book, SmtpMailer(_settings(port)), morning.replace(hour=9), 7, tick.cursor)
    restarted = digest_tick(book, SmtpMailer(_settings(port)), morning, 7, None)  # cursor lost
    assert not later.sent and not restarted.sent
    assert [m["X-CBI-Digest-Day"] for _, _, m in inbox.mails] == ["2024-05-07"]


def test_the_digest_sensor_sends_once_and_is_registered(tmp_path: Path, smtp_server):
    inbox, port = smtp_server
    resources = {
        "operations": OperationsResource(
            database=str(tmp_path / "operations.duckdb"),
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security="none",
            smtp_sender="cbi@example.com",
            smtp_recipients="desk@example.com",
            digest_hour=0,
        )
    }
    sensors = {s.name: s for s in build_sensors(retrain_job, ALL_CHECKS)}
    sensor = sensors["alert_digest_sensor"]
    instance = dg.DagsterInstance.ephemeral()
    first = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert "sent" in first.skip_reason.skip_message and first.cursor
    second = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert "already sent" in second.skip_reason.skip_message
    assert len(inbox.mails) == 1 and inbox.mails[0][2]["Subject"].startswith("[CBI ZL] DIGEST")
    from cbi_platform.definitions import defs

    assert "alert_digest_sensor" in {s.name for s in defs.sensors}
