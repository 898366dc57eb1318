"""The alert book against a real SMTP server (aiosmtpd on 127.0.0.1): dedupe, restart, retry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

import cbi_platform.storage as storage
from cbi_platform.conditions import ACCURACY, RELOAD_MISMATCH, STALE_DATA, Condition
from cbi_platform.operations.alerts import (
    LOG_SCHEMA,
    STATE_SCHEMA,
    AlertAnswerError,
    AlertBook,
    AlertDeliveryError,
    AlertEvent,
    SmtpMailer,
    SmtpSettings,
    deliver,
    events_of,
    group_events,
    render,
)
from cbi_platform_tests.operations.conftest import free_port as _free_port

DAY = [dt.date(2024, 5, 6) + dt.timedelta(days=i) for i in range(6)]  # DAY[1] = day 1
LINK = "http://dagster.local/runs/abc123"


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


def _reload(day: int, firing: bool) -> Condition:
    return Condition(
        key="reload_mismatch/1w",
        kind=RELOAD_MISMATCH,
        firing=firing,
        title="served 1w version does not reproduce on reload",
        as_of=DAY[day],
        horizon="1w",
        evidence={"max_abs_diff": 0.4},
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

    # Two unrelated alerts (no shared cause: two mails). Stale data would have made accuracy
    # moot and gone in one mail with it (test_one_cause_one_mail...), hence the reload alert.
    first = book.update([_accuracy(1, True), _reload(1, True)])
    errors = deliver(book, CountingMailer(_settings(dead_port)), first)
    assert len(errors) == 2
    assert f"127.0.0.1:{dead_port}" in errors[0]
    assert "not attempted" in errors[1]
    assert attempts == ["accuracy/1w"]  # the server is down: no point trying the rest
    log = book.log()
    assert not log["delivered"].any()
    assert log["delivery_error"].str.contains(f"127.0.0.1:{dead_port}").all()
    assert [e.key for e in book.undelivered()] == ["accuracy/1w", "reload_mismatch/1w"]

    # next tick: a new event plus the backlog, oldest first, each once
    new = book.update([_accuracy(2, True), _reload(2, False)])
    assert [e.event for e in new] == ["resolved"]
    assert deliver(book, SmtpMailer(_settings(port)), new) == []
    assert [m["X-CBI-Alert-Key"] for _, _, m in inbox.mails] == [
        "accuracy/1w",
        "reload_mismatch/1w",
        "reload_mismatch/1w",
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


def _cond(key: str, kind: str, day: int, firing: bool = True, **evidence) -> Condition:
    return Condition(
        key=key,
        kind=kind,
        firing=firing,
        title=f"{key} title",
        as_of=DAY[day],
        evidence=evidence,
        link=f"{LINK}/{key}",
    )


def test_one_cause_one_mail_and_unrelated_alerts_apart(tmp_path: Path, smtp_server):
    inbox, port = smtp_server
    book = AlertBook(tmp_path / "alerts.duckdb")
    # Stale prices make the accuracy judgement moot: one mail. The reload mismatch is unrelated.
    events = book.update([_accuracy(1, True), _stale(1, True), _reload(1, True)])
    assert len(events) == 3
    dead = deliver(book, SmtpMailer(_settings(_free_port())), events)  # server down first
    assert len(dead) == 2 and "accuracy/1w, stale_data/zl" in dead[0]
    assert deliver(book, SmtpMailer(_settings(port))) == []  # the backlog, by group
    assert len(inbox.mails) == 2
    group_mail, reload_mail = (m for _, _, m in inbox.mails)
    assert " ".join(group_mail["Subject"].split()) == (
        "[CBI ZL] FIRING 2 alerts, one cause (stale_data): ZL prices not refreshed"
    )
    assert group_mail["X-CBI-Alert-Keys"] == "accuracy/1w, stale_data/zl"
    body = group_mail.get_payload(decode=True).decode()
    assert "1. accuracy/1w (accuracy, horizon 1w): 1w MAPE worse than the random walk" in body
    assert "2. stale_data/zl (stale_data): ZL prices not refreshed" in body
    assert "mape_ratio: 1.2346" in body and "last_price_date: 2024-05-01" in body
    assert f"Dagster run: {LINK}" in body
    assert "Playbook: docs/PLAYBOOK.md#accuracy" in body
    assert "Playbook: docs/PLAYBOOK.md#stale_data" in body
    assert reload_mail["X-CBI-Alert-Key"] == "reload_mismatch/1w"
    assert (
        "Playbook: docs/PLAYBOOK.md#reload_mismatch"
        in reload_mail.get_payload(decode=True).decode()
    )
    # The group's Message-ID is derived from the group (a retry keeps it).
    (group,) = [g for g in group_events(book.log().pipe(events_of)) if len(g.members) == 2]
    assert group_mail["Message-ID"] == group.message_id
    # The log keeps one row per condition, each delivered.
    log = book.log()
    assert log["key"].to_list() == ["accuracy/1w", "stale_data/zl", "reload_mismatch/1w"]
    assert log["delivered"].all()

    # Clearing together: one resolved mail for the group's cause.
    deliver(book, SmtpMailer(_settings(port)), book.update([_accuracy(2, False), _stale(2, False)]))
    assert inbox.subjects()[2].startswith("[CBI ZL] RESOLVED 2 alerts, one cause (stale_data)")
    # Same kind, same update: one mail; another day (another update): its own mail.
    deliver(
        book,
        SmtpMailer(_settings(port)),
        book.update([_cond("drift/1w", "drift", 3), _cond("drift/1m", "drift", 3)]),
    )
    deliver(book, SmtpMailer(_settings(port)), book.update([_cond("drift/3m", "drift", 4)]))
    assert inbox.subjects()[3].startswith("[CBI ZL] FIRING 2 alerts, one cause (drift)")
    assert inbox.mails[4][2]["X-CBI-Alert-Key"] == "drift/3m"
    # A cause the monitor states groups across kinds; different stated causes stay apart.
    deliver(
        book,
        SmtpMailer(_settings(port)),
        book.update(
            [
                _cond("coverage/1w", "coverage", 5, cause="palm export ban"),
                _cond("correlation_break/palm", "correlation_break", 5, cause="palm export ban"),
                _cond("failed_run/refresh", "failed_run", 5, cause="disk full"),
            ]
        ),
    )
    assert len(inbox.mails) == 7
    assert inbox.mails[5][2]["X-CBI-Alert-Group"] == "palm export ban"
    assert inbox.mails[6][2]["X-CBI-Alert-Key"] == "failed_run/refresh"


def test_ack_and_snooze_suppress_mail_for_that_episode_only(tmp_path: Path, smtp_server):
    inbox, port = smtp_server
    book = AlertBook(tmp_path / "alerts.duckdb")
    mailer = SmtpMailer(_settings(port))
    deliver(book, mailer, book.update([_accuracy(1, True), _reload(1, True)]))
    assert len(inbox.mails) == 2

    answer = book.acknowledge("accuracy/1w", by="ana", reason="known: regime change")
    assert (answer.action, answer.opened_as_of, answer.episode_seq) == ("acknowledge", DAY[1], 1)
    book.snooze("reload_mismatch/1w", DAY[3], by="bo", reason="registry fix", today=DAY[1])
    status = book.open_alerts_answered(today=DAY[1])
    assert status.select("key", "status", "answered_by").rows() == [
        ("accuracy/1w", "acknowledged", "ana"),
        ("reload_mismatch/1w", "snoozed", "bo"),
    ]

    # Both clear: the acknowledged episode sends no resolved mail; the snooze covers day 2.
    deliver(book, mailer, book.update([_accuracy(2, False), _reload(2, False)]))
    assert len(inbox.mails) == 2
    resolved = book.log().filter(pl.col("event") == "resolved")
    assert resolved["delivered"].all()
    assert resolved["delivery_error"].to_list() == [
        "suppressed: acknowledged by ana: known: regime change",
        "suppressed: snoozed until 2024-05-09 by bo: registry fix",
    ]
    # A new episode is not covered by the old answer: it mails, fired and resolved.
    deliver(book, mailer, book.update([_accuracy(3, True)]))
    deliver(book, mailer, book.update([_accuracy(4, False)]))
    assert [s.split()[2] for s in inbox.subjects()[2:]] == ["FIRING", "RESOLVED"]

    # A snooze that ended before the clear: the resolved mail goes.
    deliver(book, mailer, book.update([_stale(1, True)]))
    book.snooze("stale_data/zl", DAY[2], by="bo", reason="vendor late", today=DAY[1])
    deliver(book, mailer, book.update([_stale(3, False)]))
    assert inbox.subjects()[-1].startswith("[CBI ZL] RESOLVED stale_data")

    audit = book.answer_log()
    assert audit.select("key", "action", "until", "answered_by", "reason").rows() == [
        ("accuracy/1w", "acknowledge", None, "ana", "known: regime change"),
        ("reload_mismatch/1w", "snooze", DAY[3], "bo", "registry fix"),
        ("stale_data/zl", "snooze", DAY[2], "bo", "vendor late"),
    ]
    assert audit["answered_at"].is_not_null().all()


def test_unsnooze_and_answer_errors_name_what_is_wrong(tmp_path: Path, smtp_server):
    inbox, port = smtp_server
    book = AlertBook(tmp_path / "alerts.duckdb")
    mailer = SmtpMailer(_settings(port))
    deliver(book, mailer, book.update([_accuracy(1, True), _reload(1, True)]))
    with pytest.raises(AlertAnswerError, match="no/such: unknown alert key") as err:
        book.acknowledge("no/such", by="ana", reason="x")
    assert err.value.code == "unknown_alert"
    with pytest.raises(AlertAnswerError, match="in the past"):
        book.snooze("accuracy/1w", DAY[0], by="ana", reason="x", today=DAY[1])
    with pytest.raises(AlertAnswerError, match="neither acknowledged nor snoozed") as err:
        book.unsnooze("accuracy/1w", by="ana", reason="x")
    assert err.value.code == "nothing_to_remove"
    with pytest.raises(AlertAnswerError, match="reason"):
        book.acknowledge("accuracy/1w", by="ana", reason=" ")
    book.acknowledge("accuracy/1w", by="ana", reason="mine")
    book.unsnooze("accuracy/1w", by="ana", reason="changed my mind")
    deliver(book, mailer, book.update([_accuracy(2, False)]))
    assert inbox.subjects()[-1].startswith("[CBI ZL] RESOLVED accuracy")  # mails again
    with pytest.raises(AlertAnswerError, match="not open .*cleared on 2024-05-08") as err:
        book.acknowledge("accuracy/1w", by="ana", reason="late")
    assert err.value.code == "not_open"
    assert book.answer_log()["action"].to_list() == ["acknowledge", "unsnooze"]
