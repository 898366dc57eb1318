"""GET /alerts and POST /alerts/ack|snooze|unsnooze: keyed like the data endpoints, the caller's
key name recorded as who answered, errors that name what is wrong."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest
from fastapi.testclient import TestClient

from cbi_platform.api import create_app
from cbi_platform.api.keys import create_key
from cbi_platform.conditions import ACCURACY, STALE_DATA, Condition
from cbi_platform.operations.alerts import AlertBook

TODAY = dt.date.today()


@pytest.fixture
def home(tmp_path):
    book = AlertBook(tmp_path / "operations.duckdb")
    book.update(
        [
            Condition(
                "accuracy/1w",
                ACCURACY,
                True,
                "1w worse than the random walk",
                TODAY,
                "1w",
                evidence={"ratio": 1.3},
                link="http://dagster.local/runs/r1",
            ),
            Condition("stale_data/zl", STALE_DATA, True, "ZL prices not refreshed", TODAY),
        ]
    )
    key, _ = create_key(tmp_path, "ops-ana")
    client = TestClient(create_app(tmp_path, max_business_days_behind=2))
    return book, client, key


def test_answers_need_a_key_and_record_its_name(home, monkeypatch):
    book, client, key = home
    body = {"key": "accuracy/1w", "reason": "regime change"}
    assert client.post("/alerts/ack", json=body).status_code == 401
    assert client.get("/alerts").status_code == 401
    bad = {"X-API-Key": "cbi_not-a-real-key"}
    assert client.post("/alerts/ack", json=body, headers=bad).status_code == 403
    assert book.answer_log().height == 0

    client.headers["X-API-Key"] = key
    response = client.post("/alerts/ack", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["by"] == "ops-ana" and response.json()["action"] == "acknowledge"
    until = (TODAY + dt.timedelta(days=2)).isoformat()
    response = client.post(
        "/alerts/snooze", json={"key": "stale_data/zl", "until": until, "reason": "vendor"}
    )
    assert response.status_code == 200 and response.json()["until"] == until
    assert book.answer_log().select("key", "action", "answered_by").rows() == [
        ("accuracy/1w", "acknowledge", "ops-ana"),
        ("stale_data/zl", "snooze", "ops-ana"),
    ]

    def refuse(*args, **kwargs):
        raise AssertionError("GET /alerts opened a DuckDB connection")

    monkeypatch.setattr(duckdb, "connect", refuse)  # the list is read from the snapshots
    alerts = {a["key"]: a for a in client.get("/alerts").json()["alerts"]}
    assert alerts["accuracy/1w"]["status"] == "acknowledged"
    assert alerts["accuracy/1w"]["answered_by"] == "ops-ana"
    assert alerts["accuracy/1w"]["playbook"] == "docs/PLAYBOOK.md#accuracy"
    assert alerts["accuracy/1w"]["link"] == "http://dagster.local/runs/r1"
    assert alerts["accuracy/1w"]["evidence"] == {"ratio": 1.3}
    assert alerts["stale_data/zl"]["status"] == "snoozed"
    assert alerts["stale_data/zl"]["answer_until"] == until


def test_answer_errors_name_what_is_wrong(home):
    book, client, key = home
    client.headers["X-API-Key"] = key
    response = client.post("/alerts/ack", json={"key": "drift/9y", "reason": "x"})
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_alert"
    assert "drift/9y: unknown alert key" in response.json()["message"]
    past = (TODAY - dt.timedelta(days=1)).isoformat()
    response = client.post(
        "/alerts/snooze", json={"key": "accuracy/1w", "until": past, "reason": "x"}
    )
    assert response.status_code == 422 and "in the past" in response.json()["message"]
    response = client.post("/alerts/unsnooze", json={"key": "accuracy/1w", "reason": "x"})
    assert response.status_code == 409 and response.json()["error"] == "nothing_to_remove"
    response = client.post("/alerts/ack", json={"key": "accuracy/1w"})
    assert response.status_code == 422 and "reason" in response.json()["message"]
    book.update([Condition("accuracy/1w", ACCURACY, False, "ok", TODAY + dt.timedelta(days=1))])
    response = client.post("/alerts/ack", json={"key": "accuracy/1w", "reason": "x"})
    assert response.status_code == 409 and response.json()["error"] == "not_open"
    assert book.answer_log().height == 0
