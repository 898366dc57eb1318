"""The buyer's mail endpoints through create_app, with real sign-in: each buyer is a user of
the test's accounts store who signs in with POST /session (his own TestClient keeps his session
cookie) and sends his session's CSRF token as X-CSRF-Token on every write."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cbi_platform.accounts import digest, outbox
from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import Users
from cbi_platform.api import create_app
from cbi_platform_tests.api.conftest import cheaper_argon2, sign_in

ANA = ("ana@example.com", "ana's long password")
BEN = ("ben@example.com", "ben's long password")


@pytest.fixture
def client(tmp_path, monkeypatch):
    """Ana's signed-in client (`client.ben`: Ben's, a second session over the same app;
    `client.csrf` / `client.ben.csrf`: the header each sends on writes)."""
    monkeypatch.delenv("CBI_ACCOUNTS_DSN", raising=False)
    with cheaper_argon2():
        app = create_app(tmp_path, max_business_days_behind=2)
        store = AccountStore.for_home(tmp_path, env={})
        users = Users(store)
        users.add(ANA[0], "Ana", "buyer", ANA[1])
        users.add(BEN[0], "Ben", "buyer", BEN[1])
        with TestClient(app) as ana, TestClient(app) as ben:
            ana.csrf = {"X-CSRF-Token": sign_in(ana, *ANA)}
            ben.csrf = {"X-CSRF-Token": sign_in(ben, *BEN)}
            ana.store, ana.ben = store, ben
            yield ana


def test_without_sign_in_the_me_routes_answer_401(tmp_path, monkeypatch):
    monkeypatch.delenv("CBI_ACCOUNTS_DSN", raising=False)
    client = TestClient(create_app(tmp_path, max_business_days_behind=2))
    for method, path in (
        ("GET", "/me/digest"),
        ("PUT", "/me/digest"),
        ("GET", "/me/alerts"),
        ("POST", "/me/alerts"),
        ("DELETE", "/me/alerts/1"),
    ):
        answer = client.request(method, path, json={"cadence": "daily"})
        assert answer.status_code == 401, (method, path)
        assert answer.json()["error"] == "not_signed_in", (method, path)


def test_digest_cadence_round_trip_and_csrf(client):
    assert client.get("/me/digest").json() == {
        "cadence": "off",
        "last_sent_as_of": None,
    }
    # without his session's token (none, or Ben's): 403, and nothing changed
    for wrong in ({}, client.ben.csrf):
        refused = client.put("/me/digest", json={"cadence": "weekly"}, headers=wrong)
        assert refused.status_code == 403 and refused.json()["error"] == "csrf"
    assert client.get("/me/digest").json()["cadence"] == "off"
    answer = client.put("/me/digest", json={"cadence": "weekly"}, headers=client.csrf)
    assert answer.status_code == 200 and answer.json()["cadence"] == "weekly"
    assert client.ben.get("/me/digest").json()["cadence"] == "off"  # his own only
    bad = client.put("/me/digest", json={"cadence": "hourly"}, headers=client.csrf)
    assert bad.status_code == 422 and bad.json()["details"][0]["where"] == "body.cadence"


def test_alerts_add_list_remove_and_isolation(client):
    made = client.post("/me/alerts", json={"side": "below", "level": 42.5}, headers=client.csrf)
    assert made.status_code == 201
    alert = made.json()
    assert alert["description"] == "ZL settles below 42.50 c/lb" and alert["kind"] == "level"
    zone = client.post(
        "/me/alerts", json={"side": "above", "horizon": "1m", "zone": "p70"}, headers=client.csrf
    ).json()
    assert zone["description"] == "ZL settles above the day's 1m P70"
    listed = client.get("/me/alerts").json()
    assert [a["id"] for a in listed["alerts"]] == [alert["id"], zone["id"]]
    assert listed["max_alerts"] == 20
    # Ben sees none of Ana's, and cannot remove them: 404, as for an id that does not exist.
    assert client.ben.get("/me/alerts").json()["alerts"] == []
    theirs = client.ben.delete(f"/me/alerts/{alert['id']}", headers=client.ben.csrf)
    missing = client.ben.delete("/me/alerts/9999", headers=client.ben.csrf)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["message"] == f"you have no price alert {alert['id']}"
    assert len(client.get("/me/alerts").json()["alerts"]) == 2
    assert client.delete(f"/me/alerts/{alert['id']}", headers=client.csrf).status_code == 204
    assert [a["id"] for a in client.get("/me/alerts").json()["alerts"]] == [zone["id"]]


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
    answer = client.post("/me/alerts", json=body, headers=client.csrf)
    assert answer.status_code == 422, answer.text
    assert answer.json()["details"][0]["where"] == where


def test_the_twenty_first_alert_is_refused(client):
    for i in range(20):
        ok = client.post("/me/alerts", json={"side": "above", "level": 40 + i}, headers=client.csrf)
        assert ok.status_code == 201
    refused = client.post("/me/alerts", json={"side": "above", "level": 99}, headers=client.csrf)
    assert refused.status_code == 409 and "the most allowed is 20" in refused.json()["message"]


def test_unsubscribe_link_is_open_one_click_and_idempotent(client):
    uid = client.get("/session").json()["user"]["id"]  # Ana's digest
    digest.set_cadence(client.store, uid, "daily")
    token, hashed = outbox.new_token()
    with client.store.transaction() as tx:
        tx.execute(
            "UPDATE digest_subscriptions SET unsubscribe_token_hash = ? WHERE user_id = ?",
            (hashed, uid),
        )
    anyone = TestClient(client.app)  # no session: the token in the link is the credential
    # Opening the link (what a mail scanner does too) changes nothing: a page with a button.
    opened = anyone.get(f"/unsubscribe?token={token}")
    assert opened.status_code == 200 and opened.headers["content-type"].startswith("text/html")
    assert f'<form method="post" action="/unsubscribe?token={token}">' in opened.text
    assert digest.subscription(client.store, uid)["cadence"] == "daily"
    first = anyone.post(f"/unsubscribe?token={token}")  # the button
    again = anyone.post(f"/unsubscribe?token={token}")
    assert first.status_code == again.status_code == 200
    assert "no more digests" in first.text and first.headers["content-type"].startswith("text/html")
    assert digest.subscription(client.store, uid)["cadence"] == "off"
    hostile = anyone.get('/unsubscribe?token="><script>alert(1)</script>')
    assert hostile.status_code == 200 and "<script>" not in hostile.text
    unknown = anyone.post("/unsubscribe?token=<script>alert(1)</script>")
    assert unknown.status_code == 404 and "<script>" not in unknown.text
    assert anyone.get("/unsubscribe").status_code == 422
    # RFC 8058: a mail client's one-click POST to the List-Unsubscribe URL does the same.
    digest.set_cadence(client.store, uid, "weekly")
    posted = anyone.post(
        f"/unsubscribe?token={token}",
        content="List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200 and digest.subscription(client.store, uid)["cadence"] == "off"
