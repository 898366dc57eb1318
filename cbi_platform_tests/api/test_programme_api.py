"""/me/programme over HTTP: his programme or the default, 422 naming the bad field, a
backtest request queued once and answered from the cache when ready, one buyer never reading
or changing another's programme, and the refusal without a signed-in user."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cbi_platform.accounts import programmes as pg
from cbi_platform.accounts.store import AccountStore
from cbi_platform.api import create_app
from cbi_platform_tests.accounts.programme_home import add_user
from cbi_platform_tests.api.conftest import build_home
from cbi_platform_tests.api.programme_doubles import CSRF, with_test_doubles

MINE = {
    "railcar_lb": 190000,
    "railcars_per_window": 4,
    "window_days": 63,
    "carry_cents_per_lb_month": 0.3,
    "max_worst_shortfall_cents": 1.5,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = build_home(tmp_path_factory.mktemp("programme_api"))
    store = AccountStore.for_home(home.path, env={})
    add_user(store, "alice@example.com")
    add_user(store, "bob@example.com")
    app = with_test_doubles(create_app(home.path, max_business_days_behind=2), home.path)
    with TestClient(app) as client:
        yield home, store, client


def _as(email: str, csrf: bool = False) -> dict:
    return {"X-Test-User": email, **({"X-CSRF-Token": CSRF} if csrf else {})}


def test_a_buyer_without_a_programme_reads_the_default(served):
    home, _, client = served
    answer = client.get("/me/programme", headers=_as("bob@example.com"))
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["default"] is True
    assert body["programme"] == {**pg.default_programme().as_json()}
    assert body["bounds"]["window_days"] == {
        "min": 5,
        "max": 126,
        "unit": "trading days",
        "integer": True,
    }
    # the home logged BUY 180,000 of 1,800,000 lb: a tenth of his window
    rec = body["recommendation"]
    assert rec["share"] == pytest.approx(0.1) and rec["buy_lb"] == pytest.approx(180_000)
    assert rec["buy_railcars"] == pytest.approx(1.0) and rec["as_of"] == str(home.last_day)


def test_set_a_programme_then_bad_fields_get_422_naming_them(served):
    _, _, client = served
    answer = client.put("/me/programme", json=MINE, headers=_as("alice@example.com", csrf=True))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["default"] is False and body["programme"]["total_lb"] == 760_000
    assert body["recommendation"]["buy_lb"] == pytest.approx(76_000)
    for field, value in (
        ("window_days", 200),
        ("carry_cents_per_lb_month", "abc"),
        ("max_worst_shortfall_cents", -1),
        ("railcars_per_window", 0.5),
    ):
        bad = client.put(
            "/me/programme", json={**MINE, field: value}, headers=_as("alice@example.com", True)
        )
        assert bad.status_code == 422
        assert bad.json()["field"] == field and field in bad.json()["message"]
    not_json = client.put(
        "/me/programme", content=b"[1, 2]", headers={**_as("alice@example.com", True)}
    )
    assert not_json.status_code == 422
    # nothing of the refused writes was kept
    kept = client.get("/me/programme", headers=_as("alice@example.com")).json()
    assert kept["programme"]["window_days"] == 63


def test_writes_need_the_csrf_check_and_every_route_a_signed_in_user(served):
    _, _, client = served
    assert client.put("/me/programme", json=MINE, headers=_as("bob@example.com")).status_code == 403
    assert client.post("/me/programme/backtest", headers=_as("bob@example.com")).status_code == 403
    for method, path in (
        ("GET", "/me/programme"),
        ("PUT", "/me/programme"),
        ("POST", "/me/programme/backtest"),
        ("GET", "/me/programme/backtest"),
    ):
        headers = {"X-CSRF-Token": CSRF}  # the CSRF check passes: no user is still refused
        answer = client.request(method, path, json=MINE, headers=headers)
        assert answer.status_code == 401, (method, path)


def test_one_buyer_never_reads_or_changes_anothers(served):
    _, store, client = served
    client.put("/me/programme", json=MINE, headers=_as("alice@example.com", csrf=True))
    bob = client.get("/me/programme", headers=_as("bob@example.com")).json()
    assert bob["default"] is True and bob["programme"]["window_days"] == 21
    # bob's write changes bob's only; no route takes a user id
    client.put(
        "/me/programme",
        json={**MINE, "railcars_per_window": 9, "user_id": 1},
        headers=_as("bob@example.com", csrf=True),
    )  # refused: unknown field
    client.put(
        "/me/programme",
        json={**MINE, "railcars_per_window": 9},
        headers=_as("bob@example.com", csrf=True),
    )
    alice = client.get("/me/programme", headers=_as("alice@example.com")).json()
    assert alice["programme"]["railcars_per_window"] == 4
    assert (
        client.get("/me/programme", headers=_as("bob@example.com")).json()["programme"][
            "railcars_per_window"
        ]
        == 9
    )
    status = client.get("/me/programme/backtest", headers=_as("bob@example.com")).json()
    assert status["programme"]["railcars_per_window"] == 9


def test_a_backtest_is_queued_once_then_answered_from_the_cache(served):
    home, store, client = served
    client.put("/me/programme", json=MINE, headers=_as("alice@example.com", csrf=True))
    before = client.get("/me/programme/backtest", headers=_as("alice@example.com")).json()
    assert before["status"] in ("none", "queued")
    first = client.post("/me/programme/backtest", headers=_as("alice@example.com", csrf=True))
    second = client.post("/me/programme/backtest", headers=_as("alice@example.com", csrf=True))
    assert first.status_code == 202 and first.json()["queued"] is True
    assert first.json()["status"] == "queued" and first.json()["poll_seconds"] == 3
    assert first.json()["as_of"] == str(home.last_day)
    assert second.status_code == 200 and second.json()["queued"] is False
    mine = pg.validate_programme(MINE)
    assert [q.programme_hash for q in pg.queued_backtests(store)] == [pg.programme_hash(mine)]
    pg.mark_ready(store, pg.programme_hash(mine), {"windows": 3}, str(home.last_day))
    ready = client.post("/me/programme/backtest", headers=_as("alice@example.com", csrf=True))
    assert ready.status_code == 200
    body = ready.json()
    assert (body["status"], body["result"], body["poll_seconds"]) == ("ready", {"windows": 3}, None)
    assert pg.queued_backtests(store) == []
    read = client.get("/me/programme/backtest", headers=_as("alice@example.com")).json()
    assert read["status"] == "ready" and read["outdated"] is False


def test_without_the_sign_in_module_every_route_says_sign_in(served):
    home, _, _ = served
    with TestClient(create_app(home.path, max_business_days_behind=2)) as plain:
        for method, path in (("GET", "/me/programme"), ("POST", "/me/programme/backtest")):
            answer = plain.request(method, path, headers=_as("alice@example.com", csrf=True))
            assert answer.status_code == 401
            assert "sign in to read or set your programme" in answer.json()["message"]
