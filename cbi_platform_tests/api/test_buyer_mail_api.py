"""The buyer's mail endpoints through create_app, with the sign-in dependencies replaced by
TEST DOUBLES (`X-Test-User` names the user by email; `X-CSRF-Token` must be "test-csrf") until
the real session dependencies are wired in."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from cbi_platform.accounts import digest, outbox
from cbi_platform.accounts.store import AccountStore
from cbi_platform.api import buyer_mail, create_app
from cbi_platform_tests.accounts.mail_helpers import add_user


@dataclass(frozen=True)
class DoubleUser:
    id: int
    email: str
    name: str
    role: str


def test_double_current_user(request: Request) -> DoubleUser:
    """TEST DOUBLE of api.sessions.current_user: the user whose email is in X-Test-User."""
    email = request.headers.get("X-Test-User")
    store = AccountStore.for_home(request.app.state.reader.home, env={})
    with store.transaction() as tx:
        row = tx.execute("SELECT id, email, name, role FROM users WHERE email = ?", (email,)).one()
    if row is None:
        raise HTTPException(401, "not signed in (test double)")
    return DoubleUser(**row)


def test_double_require_csrf(request: Request) -> None:
    """TEST DOUBLE of api.sessions.require_csrf."""
    if request.headers.get("X-CSRF-Token") != "test-csrf":
        raise HTTPException(403, "CSRF token missing or wrong (test double)")


test_double_current_user.__test__ = False  # not tests, despite their names
test_double_require_csrf.__test__ = False


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.delenv("CBI_ACCOUNTS_DSN", raising=False)
    app = create_app(tmp_path, max_business_days_behind=2)
    app.dependency_overrides[buyer_mail.not_signed_in] = test_double_current_user
    app.dependency_overrides[buyer_mail.no_csrf_check_yet] = test_double_require_csrf
    store = AccountStore.for_home(tmp_path, env={})
    add_user(store, "ana@example.com", "Ana")
    add_user(store, "ben@example.com", "Ben")
    with TestClient(app) as c:
        c.store = store
        yield c


ANA = {"X-Test-User": "ana@example.com", "X-CSRF-Token": "test-csrf"}
BEN = {"X-Test-User": "ben@example.com", "X-CSRF-Token": "test-csrf"}


def test_without_sign_in_the_me_routes_answer_401(tmp_path):
    client = TestClient(create_app(tmp_path, max_business_days_behind=2))
    assert client.get("/me/digest").status_code == 401
    assert client.put("/me/digest", json={"cadence": "daily"}).status_code == 401
    assert client.get("/me/alerts").status_code == 401


def test_digest_cadence_round_trip_and_csrf(client):
    assert client.get("/me/digest", headers=ANA).json() == {
        "cadence": "off",
        "last_sent_as_of": None,
    }
    no_csrf = {"X-Test-User": "ana@example.com"}
    assert client.put("/me/digest", json={"cadence": "weekly"}, headers=no_csrf).status_code == 403
    answer = client.put("/me/digest", json={"cadence": "weekly"}, headers=ANA)
    assert answer.status_code == 200 and answer.json()["cadence"] == "weekly"
    assert client.get("/me/digest", headers=BEN).json()["cadence"] == "off"  # his own only
    bad = client.put("/me/digest", json={"cadence": "hourly"}, headers=ANA)
    assert bad.status_code == 422 and bad.json()["details"][0]["where"] == "body.cadence"


def test_alerts_add_list_remove_and_isolation(client):
    made = client.post("/me/alerts", json={"side": "below", "level": 42.5}, headers=ANA)
    assert made.status_code == 201
    alert = made.json()
    assert alert["description"] == "ZL settles below 42.50 c/lb" and alert["kind"] == "level"
    zone = client.post(
        "/me/alerts", json={"side": "above", "horizon": "1m", "zone": "p70"}, headers=ANA
    ).json()
    assert zone["description"] == "ZL settles above the day's 1m P70"
    listed = client.get("/me/alerts", headers=ANA).json()
    assert [a["id"] for a in listed["alerts"]] == [alert["id"], zone["id"]]
    assert listed["max_alerts"] == 20
    # Ben sees none of Ana's, and cannot remove them: 404, as for an id that does not exist.
    assert client.get("/me/alerts", headers=BEN).json()["alerts"] == []
    theirs = client.delete(f"/me/alerts/{alert['id']}", headers=BEN)
    missing = client.delete("/me/alerts/9999", headers=BEN)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["message"] == f"you have no price alert {alert['id']}"
    assert len(client.get("/me/alerts", headers=ANA).json()["alerts"]) == 2
    assert client.delete(f"/me/alerts/{alert['id']}", headers=ANA).status_code == 204
    assert [a["id"] for a in client.get("/me/alerts", headers=ANA).json()["alerts"]] == [zone["id"]]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"side": "below", "level": -1}, "body.level"),
        ({"side": "below", "level": 0}, "body.level"),
        ({"side": "sideways", "level": 40}, "body.side"),
        ({"side": "below", "horizon": "2m", "zone": "p30"}, "body.horizon"),
        ({"side": "below", "horizon": "1m", "zone": "p35"}, "body.zone"),
        ({"side": "below"}, "body.level"),
        ({"side": "below", "level": "cheap"}, "body.level"),
        ({"side": "below", "level": 40, "note": "x" * 201}, "body.note"),
    ],
)
def test_bad_alerts_get_422_naming_the_field(client, body, where):
    answer = client.post("/me/alerts", json=body, headers=ANA)
    assert answer.status_code == 422, answer.text
    assert answer.json()["details"][0]["where"] == where


def test_the_twenty_first_alert_is_refused(client):
    for i in range(20):
        ok = client.post("/me/alerts", json={"side": "above", "level": 40 + i}, headers=ANA)
        assert ok.status_code == 201
    refused = client.post("/me/alerts", json={"side": "above", "level": 99}, headers=ANA)
    assert refused.status_code == 409 and "the most allowed is 20" in refused.json()["message"]


def test_unsubscribe_link_is_open_one_click_and_idempotent(client):
    uid = 1
    digest.set_cadence(client.store, uid, "daily")
    token, hashed = outbox.new_token()
    with client.store.transaction() as tx:
        tx.execute(
            "UPDATE digest_subscriptions SET unsubscribe_token_hash = ? WHERE user_id = ?",
            (hashed, uid),
        )
    first = client.get(f"/unsubscribe?token={token}")
    again = client.get(f"/unsubscribe?token={token}")
    assert first.status_code == again.status_code == 200
    assert "no more digests" in first.text and first.headers["content-type"].startswith("text/html")
    assert digest.subscription(client.store, uid)["cadence"] == "off"
    unknown = client.get("/unsubscribe?token=<script>alert(1)</script>")
    assert unknown.status_code == 404 and "<script>" not in unknown.text
    assert client.get("/unsubscribe").status_code == 422
    # RFC 8058: a mail client's one-click POST to the List-Unsubscribe URL does the same.
    digest.set_cadence(client.store, uid, "weekly")
    posted = client.post(
        f"/unsubscribe?token={token}",
        content="List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200 and digest.subscription(client.store, uid)["cadence"] == "off"
