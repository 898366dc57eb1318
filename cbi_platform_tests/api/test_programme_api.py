"""/me/programme over HTTP: his programme or the default, 422 naming the bad field, a
backtest request queued once and answered from the cache when ready, one buyer never reading
or changing another's programme, and the refusal without a signed-in user.

Each buyer is a user of the home's accounts store signed in with POST /session: his own
TestClient keeps his session cookie, and his writes send his session's CSRF token."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from cbi_platform.accounts import programmes as pg
from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import Users
from cbi_platform.api import create_app
from cbi_platform.api.sessions import COOKIE
from cbi_platform_tests.api.conftest import build_home, cheaper_argon2, sign_in

MINE = {
    "railcar_lb": 190000,
    "railcars_per_window": 4,
    "window_days": 63,
    "carry_cents_per_lb_month": 0.3,
    "max_worst_shortfall_cents": 1.5,
}
ALICE = ("alice@example.com", "alice's long password")
BOB = ("bob@example.com", "bob's long password")
ROUTES = (
    ("GET", "/me/programme"),
    ("PUT", "/me/programme"),
    ("POST", "/me/programme/backtest"),
    ("GET", "/me/programme/backtest"),
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The home, its accounts store, and the buyers: `alice` and `bob`, each a TestClient with
    his own session (`.csrf`: the header of his writes)."""
    home = build_home(tmp_path_factory.mktemp("programme_api"))
    store = AccountStore.for_home(home.path, env={})
    with pytest.MonkeyPatch.context() as patch, cheaper_argon2():
        patch.delenv("CBI_ACCOUNTS_DSN", raising=False)  # the app signs in from the home's store
        users = Users(store)
        users.add(ALICE[0], "Alice", "buyer", ALICE[1])
        users.add(BOB[0], "Bob", "buyer", BOB[1])
        app = create_app(home.path, max_business_days_behind=2)
        with TestClient(app) as alice, TestClient(app) as bob:
            alice.csrf = {"X-CSRF-Token": sign_in(alice, *ALICE)}
            bob.csrf = {"X-CSRF-Token": sign_in(bob, *BOB)}
            yield home, store, SimpleNamespace(alice=alice, bob=bob, app=app)


def test_a_buyer_without_a_programme_reads_the_default(served):
    home, _, buyers = served
    answer = buyers.bob.get("/me/programme")
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
    _, _, buyers = served
    alice = buyers.alice
    answer = alice.put("/me/programme", json=MINE, headers=alice.csrf)
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
        bad = alice.put("/me/programme", json={**MINE, field: value}, headers=alice.csrf)
        assert bad.status_code == 422
        assert bad.json()["field"] == field and field in bad.json()["message"]
    not_json = alice.put("/me/programme", content=b"[1, 2]", headers=alice.csrf)
    assert not_json.status_code == 422
    # nothing of the refused writes was kept
    kept = alice.get("/me/programme").json()
    assert kept["programme"]["window_days"] == 63


def test_writes_need_the_csrf_check_and_every_route_a_signed_in_user(served):
    _, _, buyers = served
    bob = buyers.bob
    before = bob.get("/me/programme").json()
    # his session without its token (none, or another session's): 403, and nothing changed
    for wrong in ({}, buyers.alice.csrf):
        put = bob.put("/me/programme", json={**MINE, "window_days": 99}, headers=wrong)
        post = bob.post("/me/programme/backtest", headers=wrong)
        assert put.status_code == post.status_code == 403
        assert put.json()["error"] == post.json()["error"] == "csrf"
    assert bob.get("/me/programme").json() == before
    for method, path in ROUTES:
        # a real session's token without its cookie: no user is still refused
        answer = TestClient(buyers.app).request(method, path, json=MINE, headers=bob.csrf)
        assert answer.status_code == 401, (method, path)


def test_one_buyer_never_reads_or_changes_anothers(served):
    _, store, buyers = served
    alice, bob = buyers.alice, buyers.bob
    alice.put("/me/programme", json=MINE, headers=alice.csrf)
    his = bob.get("/me/programme").json()
    assert his["default"] is True and his["programme"]["window_days"] == 21
    # bob's write changes bob's only; no route takes a user id
    alice_id = alice.get("/session").json()["user"]["id"]
    refused = bob.put(
        "/me/programme",
        json={**MINE, "railcars_per_window": 9, "user_id": alice_id},
        headers=bob.csrf,
    )
    assert refused.status_code == 422  # refused: unknown field
    bob.put("/me/programme", json={**MINE, "railcars_per_window": 9}, headers=bob.csrf)
    assert alice.get("/me/programme").json()["programme"]["railcars_per_window"] == 4
    assert bob.get("/me/programme").json()["programme"]["railcars_per_window"] == 9
    status = bob.get("/me/programme/backtest").json()
    assert status["programme"]["railcars_per_window"] == 9


def test_a_backtest_is_queued_once_then_answered_from_the_cache(served):
    home, store, buyers = served
    alice = buyers.alice
    alice.put("/me/programme", json=MINE, headers=alice.csrf)
    before = alice.get("/me/programme/backtest").json()
    assert before["status"] in ("none", "queued")
    first = alice.post("/me/programme/backtest", headers=alice.csrf)
    second = alice.post("/me/programme/backtest", headers=alice.csrf)
    assert first.status_code == 202 and first.json()["queued"] is True
    assert first.json()["status"] == "queued" and first.json()["poll_seconds"] == 3
    assert first.json()["as_of"] == str(home.last_day)
    assert second.status_code == 200 and second.json()["queued"] is False
    mine = pg.validate_programme(MINE)
    assert [q.programme_hash for q in pg.queued_backtests(store)] == [pg.programme_hash(mine)]
    pg.mark_ready(store, pg.programme_hash(mine), {"windows": 3}, str(home.last_day))
    ready = alice.post("/me/programme/backtest", headers=alice.csrf)
    assert ready.status_code == 200
    body = ready.json()
    assert (body["status"], body["result"], body["poll_seconds"]) == ("ready", {"windows": 3}, None)
    assert pg.queued_backtests(store) == []
    read = alice.get("/me/programme/backtest").json()
    assert read["status"] == "ready" and read["outdated"] is False


def test_without_a_session_every_route_answers_401(served):
    _, _, buyers = served
    # a session that ended (signed out) is no session either: its old cookie and token
    signed_out = TestClient(buyers.app)
    token = {"X-CSRF-Token": sign_in(signed_out, *ALICE)}
    ended = TestClient(buyers.app)
    ended.cookies.set(COOKIE, signed_out.cookies.get(COOKIE))
    assert signed_out.delete("/session", headers=token).status_code == 200
    for client, headers in ((TestClient(buyers.app), {}), (ended, token)):
        for method, path in ROUTES:
            answer = client.request(method, path, json=MINE, headers=headers)
            assert answer.status_code == 401, (method, path)
            assert answer.json()["error"] == "not_signed_in"
            assert "sign in with POST /session" in answer.json()["message"]
    # alice's own session is untouched by the other one's sign-out
    assert buyers.alice.get("/me/programme").status_code == 200
