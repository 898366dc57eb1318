"""`cbi alerts`: list, ack, snooze, unsnooze open alerts from the command line (audit rows)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from cbi_platform.cli import main
from cbi_platform.conditions import ACCURACY, STALE_DATA, Condition
from cbi_platform.operations.alerts import AlertBook

TODAY = dt.date.today()


@pytest.fixture
def book(tmp_path, monkeypatch):
    monkeypatch.setenv("CBI_HOME", str(tmp_path))
    book = AlertBook(tmp_path / "operations.duckdb")
    book.update(
        [
            Condition("accuracy/1w", ACCURACY, True, "1w worse than the random walk", TODAY, "1w"),
            Condition("stale_data/zl", STALE_DATA, True, "ZL prices not refreshed", TODAY),
        ]
    )
    return book


def test_ack_snooze_unsnooze_and_list_from_the_command_line(book, capsys):
    assert main(["alerts", "ack", "accuracy/1w", "--by", "ana", "--reason", "regime change"]) == 0
    assert "acknowledge accuracy/1w by ana" in capsys.readouterr().out
    until = (TODAY + dt.timedelta(days=3)).isoformat()
    args = ["alerts", "snooze", "stale_data/zl", "--until", until, "--by", "bo"]
    assert main([*args, "--reason", "vendor late"]) == 0
    assert f"snooze stale_data/zl until {until} by bo" in capsys.readouterr().out

    assert main(["alerts", "list"]) == 0
    out = capsys.readouterr().out
    assert "[acknowledged by ana: regime change]" in out
    assert f"[snoozed until {until} by bo: vendor late]" in out
    assert main(["alerts", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["key"], r["status"]) for r in rows] == [
        ("accuracy/1w", "acknowledged"),
        ("stale_data/zl", "snoozed"),
    ]
    assert main(["alerts", "unsnooze", "stale_data/zl", "--by", "bo", "--reason", "fixed"]) == 0
    assert book.answer_log().select("key", "action", "answered_by").rows() == [
        ("accuracy/1w", "acknowledge", "ana"),
        ("stale_data/zl", "snooze", "bo"),
        ("stale_data/zl", "unsnooze", "bo"),
    ]


def test_cli_errors_name_what_is_wrong(book, capsys):
    assert main(["alerts", "ack", "drift/9y", "--by", "ana", "--reason", "x"]) == 1
    err = capsys.readouterr().err
    assert "drift/9y: unknown alert key" in err and "accuracy/1w, stale_data/zl" in err
    yesterday = (TODAY - dt.timedelta(days=1)).isoformat()
    args = ["alerts", "snooze", "accuracy/1w", "--by", "ana", "--reason", "x"]
    assert main([*args, "--until", yesterday]) == 1
    assert f"until {yesterday} is in the past" in capsys.readouterr().err
    assert main([*args, "--until", "next week"]) == 1
    assert "not a date (YYYY-MM-DD)" in capsys.readouterr().err
    assert book.answer_log().height == 0
