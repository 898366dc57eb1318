"""Security of sign-in, sessions, CSRF and roles: each test is a real HTTP request to the app
(TestClient), or a real Chromium for what a page does with hostile text. The list, with what
each tries, is in docs/security.md.

Each test has an accounts store of its own (CBI_ACCOUNTS_DSN set to a SQLite file in the
test's folder) beside the shared home's forecasts, and a hand-moved clock (no sleeping).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time

import pytest
from fastapi.testclient import TestClient

from cbi_platform.accounts.sessions import IDLE_TIMEOUT
from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import (
    LOCKOUT,
    MAX_FAILED_SIGNINS,
    MAX_TRIES_PER_CLIENT,
    SIGNIN_FAILED,
    Users,
)
from cbi_platform.api import create_app
from cbi_platform.api.sessions import COOKIE
from cbi_platform_tests.accounts.test_users import ManualClock

ANN = ("ann@example.com", "ann's long password")
BOB = ("bob@example.com", "bob's long password")
ENGINEER = ("eve@example.com", "eve's long password")


@pytest.fixture(autouse=True)
def cheaper_argon2(monkeypatch):
    """Real argon2id with a small cost (1 pass, 8 MiB): these tests hash a hundred times on
    two shared cores. The production parameters and their rehash are tested in
    cbi_platform_tests/accounts/test_users.py."""
    from argon2 import PasswordHasher

    from cbi_platform.accounts import users as users_module

    monkeypatch.setattr(
        users_module, "HASHER", PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    )


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("CBI_ACCOUNTS_DSN", str(tmp_path / "accounts.sqlite3"))
    monkeypatch.delenv("CBI_TRUST_PROXY", raising=False)
    return AccountStore(tmp_path / "accounts.sqlite3")


@pytest.fixture
def users(store, clock):
    users = Users(store, clock)
    users.add(ANN[0], "Ann", "buyer", ANN[1])
    users.add(BOB[0], "Bob", "buyer", BOB[1])
    users.add(ENGINEER[0], "Eve", "engineer", ENGINEER[1])
    return users


@pytest.fixture
def make_client(shared_home, users, clock):
    def make(**kwargs) -> TestClient:
        app = create_app(
            shared_home.path,
            max_business_days_behind=2,
            clock=clock,
            release_control=kwargs.pop("release_control", None),
        )
        return TestClient(app, **kwargs)

    return make


def sign_in(client: TestClient, who: tuple[str, str], **headers) -> dict:
    response = client.post("/session", json={"email": who[0], "password": who[1]}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_session_fixation_a_planted_cookie_is_never_the_session(make_client):
    client = make_client()
    planted = "attacker-chosen-session-id"
    response = client.post(
        "/session",
        json={"email": ANN[0], "password": ANN[1]},
        headers={"cookie": f"{COOKIE}={planted}"},
    )
    issued = response.cookies.get(COOKIE)
    assert response.status_code == 200
    assert issued and issued != planted and len(issued) >= 40
    assert client.get("/session").json()["user"]["email"] == ANN[0]
    attacker = make_client()
    attacker.cookies.set(COOKIE, planted)
    assert attacker.get("/session").status_code == 401
    assert attacker.get("/predictions").status_code == 401


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_login_csrf_a_cross_site_form_cannot_sign_a_victim_in(make_client, content_type):
    # A page on another site can POST a form (these content types need no CORS preflight);
    # the JSON body of such a post must not be read as credentials.
    client = make_client()
    body = json.dumps({"email": ANN[0], "password": ANN[1]})
    response = client.post("/session", content=body, headers={"content-type": content_type})
    assert response.status_code == 422
    assert COOKIE not in client.cookies


def test_signing_in_again_makes_a_new_id_and_the_old_one_is_useless(make_client):
    client = make_client()
    sign_in(client, ANN)
    first = client.cookies.get(COOKIE)
    sign_in(client, ANN)
    second = client.cookies.get(COOKIE)
    assert second != first
    old = make_client()
    old.cookies.set(COOKIE, first)
    assert old.get("/session").status_code == 401


def test_cookie_flags_httponly_samesite_strict_and_secure_over_https(make_client, monkeypatch):
    def flags(client, **headers) -> set[str]:
        response = client.post(
            "/session", json={"email": ANN[0], "password": ANN[1]}, headers=headers
        )
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        return {
            part.strip().split("=")[0].lower()
            + (
                "=" + part.strip().split("=")[1].lower()
                if part.strip().lower().startswith(("samesite", "path"))
                else ""
            )
            for part in cookie.split(";")[1:]
        }

    plain = flags(make_client())
    assert {"httponly", "samesite=strict", "path=/"} <= plain and "secure" not in plain
    assert "secure" in flags(make_client(base_url="https://testserver"))
    # X-Forwarded-Proto is believed only behind a trusted proxy (CBI_TRUST_PROXY=1).
    assert "secure" not in flags(make_client(), **{"X-Forwarded-Proto": "https"})
    monkeypatch.setenv("CBI_TRUST_PROXY", "1")
    assert "secure" in flags(make_client(), **{"X-Forwarded-Proto": "https"})


def test_writes_without_the_csrf_token_are_refused_and_change_nothing(make_client, shared_home):
    ann = make_client()
    token = sign_in(ann, ANN)["csrf_token"]
    bob = make_client()
    bob_token = sign_in(bob, BOB)["csrf_token"]
    # Sign-out without a token, or with another session's token: refused, still signed in.
    for headers in ({}, {"X-CSRF-Token": bob_token}, {"X-CSRF-Token": ""}):
        response = ann.delete("/session", headers=headers)
        assert response.status_code == 403 and response.json()["error"] == "csrf"
        assert ann.get("/session").status_code == 200
    # Password change without the token: refused, the old password still signs in.
    change = {"current_password": ANN[1], "new_password": "a new long password"}
    assert ann.post("/me/password", json=change).status_code == 403
    assert (
        ann.post("/me/password", json=change, headers={"X-CSRF-Token": bob_token}).status_code
        == 403
    )
    sign_in(make_client(), ANN)
    # A data write through the cookie (answering an alert) needs the token too.
    response = ann.post("/alerts/ack", json={"key": "stale_data/target", "reason": "seen"})
    assert response.status_code == 403 and response.json()["error"] == "csrf"
    # With the token, answering an operating alert is still an engineer's job, not a buyer's.
    response = ann.post(
        "/alerts/ack",
        json={"key": "stale_data/target", "reason": "seen"},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 403 and response.json()["error"] == "engineer_only"
    # With its own token the same sign-out works.
    assert ann.delete("/session", headers={"X-CSRF-Token": token}).status_code == 200
    assert ann.get("/session").status_code == 401


def test_brute_force_locks_the_account_even_for_the_right_password(make_client, clock, users):
    client = make_client()
    statuses = []
    for i in range(MAX_FAILED_SIGNINS):
        r = client.post("/session", json={"email": ANN[0], "password": f"guess number {i}"})
        statuses.append(r.status_code)
    assert statuses == [401] * (MAX_FAILED_SIGNINS - 1) + [423]
    right = client.post("/session", json={"email": ANN[0], "password": ANN[1]})
    assert right.status_code == 423 and right.json()["error"] == "locked"
    assert int(right.headers["retry-after"]) > 60 and "locked" in right.json()["message"]
    assert COOKIE not in client.cookies
    assert users.list()[0].locked_until is not None  # ann is first by email
    # Another account is not locked by ann's failures.
    sign_in(make_client(), BOB)
    clock.advance(LOCKOUT + dt.timedelta(seconds=1))
    assert sign_in(client, ANN)["user"]["email"] == ANN[0]


def test_rate_limit_per_client_address(make_client, monkeypatch):
    monkeypatch.setenv("CBI_TRUST_PROXY", "1")
    client = make_client()
    spray = {"X-Forwarded-For": "203.0.113.7"}
    for i in range(MAX_TRIES_PER_CLIENT):
        r = client.post(
            "/session", json={"email": f"u{i}@example.com", "password": "x" * 12}, headers=spray
        )
        assert r.status_code == 401
    refused = client.post("/session", json={"email": ANN[0], "password": ANN[1]}, headers=spray)
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert 0 < int(refused.headers["retry-after"]) <= 301
    assert COOKIE not in client.cookies
    sign_in(make_client(), ANN, **{"X-Forwarded-For": "198.51.100.1"})  # another address


def test_a_forged_forwarded_for_does_not_escape_the_limit_without_a_trusted_proxy(make_client):
    client = make_client()
    for i in range(MAX_TRIES_PER_CLIENT):
        client.post(
            "/session",
            json={"email": f"u{i}@example.com", "password": "x" * 12},
            headers={"X-Forwarded-For": f"10.0.0.{i}"},
        )
    refused = client.post(
        "/session",
        json={"email": ANN[0], "password": ANN[1]},
        headers={"X-Forwarded-For": "10.9.9.9"},
    )
    assert refused.status_code == 429


def test_no_account_enumeration_same_answer_and_comparable_time(make_client, users, monkeypatch):
    from argon2 import PasswordHasher

    from cbi_platform.accounts import users as users_module

    # A cost well above a request's own time, so a missing dummy hash would show (~10x).
    monkeypatch.setattr(
        users_module, "HASHER", PasswordHasher(time_cost=2, memory_cost=32768, parallelism=1)
    )
    users.reset(ANN[0], ANN[1])  # ann's hash at this cost
    client = make_client()
    wrong, unknown = [], []
    bodies = set()
    for i in range(3):  # below the lock-out
        for email, times in ((ANN[0], wrong), (f"nobody{i}@example.com", unknown)):
            start = time.perf_counter()
            r = client.post("/session", json={"email": email, "password": "not the password"})
            times.append(time.perf_counter() - start)
            bodies.add((r.status_code, r.text))
    assert bodies == {
        (401, f'{{"error":"signin_failed","message":"{SIGNIN_FAILED}","status":401}}')
    }
    # An unknown email hashes a dummy password: the same order of time, not a fast path.
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 < ratio < 2.0, (wrong, unknown)


def test_an_idle_session_expires(make_client, clock):
    client = make_client()
    sign_in(client, ANN)
    clock.advance(IDLE_TIMEOUT - dt.timedelta(minutes=5))
    assert client.get("/predictions").status_code == 200
    clock.advance(IDLE_TIMEOUT + dt.timedelta(seconds=1))
    assert client.get("/session").status_code == 401
    response = client.get("/predictions")
    assert response.status_code == 401 and response.json()["error"] == "missing_key"


def test_password_change_ends_every_other_session(make_client):
    phone, desk = make_client(), make_client()
    sign_in(phone, ANN)
    token = sign_in(desk, ANN)["csrf_token"]
    old_cookie = desk.cookies.get(COOKIE)
    change = {"current_password": ANN[1], "new_password": "ann's newer password"}
    response = desk.post("/me/password", json=change, headers={"X-CSRF-Token": token})
    assert response.status_code == 200
    assert desk.cookies.get(COOKIE) != old_cookie  # this browser got a new session
    assert desk.get("/session").status_code == 200
    assert phone.get("/session").status_code == 401
    assert (
        make_client().post("/session", json={"email": ANN[0], "password": ANN[1]}).status_code
        == 401
    )
    sign_in(make_client(), (ANN[0], "ann's newer password"))


def test_password_change_refuses_bad_input_naming_the_field(make_client):
    client = make_client()
    token = sign_in(client, ANN)["csrf_token"]
    cases = [
        (
            {"current_password": "wrong one!!", "new_password": "a new long password"},
            "current_password",
        ),
        ({"current_password": ANN[1], "new_password": "short"}, "new_password"),
        ({"current_password": ANN[1], "new_password": ANN[0]}, "new_password"),
    ]
    for body, field in cases:
        response = client.post("/me/password", json=body, headers={"X-CSRF-Token": token})
        assert response.status_code == 422 and response.json()["field"] == field, response.text
    response = client.post(
        "/me/password", json={"current_password": ANN[1]}, headers={"X-CSRF-Token": token}
    )
    assert response.status_code == 422 and "new_password" in response.json()["message"]
    assert client.get("/session").status_code == 200  # nothing changed, still signed in


def test_one_buyer_cannot_act_as_another(make_client):
    ann, bob = make_client(), make_client()
    ann_token = sign_in(ann, ANN)["csrf_token"]
    bob_token = sign_in(bob, BOB)["csrf_token"]
    assert ann.get("/session").json()["user"]["email"] == ANN[0]
    # Ann's cookie with Bob's token is refused; /me/password changes only the caller's own
    # password, and Bob's password does not pass as Ann's current one.
    steal = {"current_password": BOB[1], "new_password": "taken over password"}
    assert (
        ann.post("/me/password", json=steal, headers={"X-CSRF-Token": bob_token}).status_code == 403
    )
    response = ann.post("/me/password", json=steal, headers={"X-CSRF-Token": ann_token})
    assert response.status_code == 422 and response.json()["field"] == "current_password"
    assert bob.get("/session").json()["user"]["email"] == BOB[0]
    sign_in(make_client(), BOB)


@pytest.mark.parametrize(
    "body",
    [
        {"email": "<script>alert(1)</script>", "password": "<script>alert(1)</script>"},
        {"email": "a@b.c' OR '1'='1", "password": "' OR 1=1 --"},
        {"email": "x" * 5000, "password": "y"},
        {"email": ANN[0], "password": "z" * 5000},
        {"email": ["list"], "password": {"a": 1}},
        {"email": ANN[0]},
        {},
    ],
)
def test_hostile_sign_in_input_is_a_clear_refusal_never_a_500(make_client, body):
    client = make_client()
    response = client.post("/session", json=body)
    assert response.status_code in (401, 422), response.text
    assert response.headers["content-type"] == "application/json"
    if response.status_code == 422:
        assert {"email", "password"} & {
            d["where"].split(".")[-1] for d in response.json()["details"]
        }
    assert COOKIE not in client.cookies


def test_a_session_reads_the_data_endpoints_and_keys_still_work(make_client, shared_key):
    client = make_client()
    assert client.get("/predictions").status_code == 401
    sign_in(client, ANN)
    assert client.get("/predictions").status_code == 200
    assert client.get("/forecast/1m").json()["horizon"] == "1m"
    machine = make_client()
    assert machine.get("/predictions", headers={"X-API-Key": shared_key}).status_code == 200


def test_engineer_only_routes_refuse_buyers_and_keys_and_write_no_audit_row(
    make_client, tmp_path, shared_key
):
    from cbi_platform.release.control import AuditLog
    from cbi_platform.tracking import Tracker, registered_model_name
    from cbi_platform_tests.release.test_control import register

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    audit = AuditLog(tmp_path / "operations.duckdb")
    card = tmp_path / "ensemble.json"
    card.write_text('{"combiner": "test"}')
    register(tracker, card, "1w", 2)
    control = lambda: (tracker, audit)  # noqa: E731
    promote = {"horizon": "1w", "version": "1", "reason": "first champion"}

    anonymous = make_client(release_control=control)
    assert anonymous.post("/release/promote", json=promote).status_code == 401
    keyed = anonymous.post("/release/promote", json=promote, headers={"X-API-Key": shared_key})
    assert keyed.status_code == 401  # a machine's key cannot promote: a person answers for it
    buyer = make_client(release_control=control)
    token = sign_in(buyer, ANN)["csrf_token"]
    for path, body in (
        ("/release/promote", promote),
        ("/release/rollback", {"horizon": "1w", "reason": "x"}),
    ):
        refused = buyer.post(path, json=body, headers={"X-CSRF-Token": token})
        assert refused.status_code == 403 and refused.json()["error"] == "engineer_only"
    assert audit.rows().height == 0
    assert tracker.alias_version(registered_model_name("1w"), "champion") is None

    engineer = make_client(release_control=control)
    token = sign_in(engineer, ENGINEER)["csrf_token"]
    assert engineer.post("/release/promote", json=promote).status_code == 403  # no CSRF token
    assert audit.rows().height == 0
    first = engineer.post("/release/promote", json=promote, headers={"X-CSRF-Token": token})
    assert first.status_code == 200, first.text
    second = engineer.post(
        "/release/promote",
        json={**promote, "version": "v2", "reason": "better"},
        headers={"X-CSRF-Token": token},
    )
    assert second.json()["from_version"] == "1" and second.json()["to_version"] == "2"
    back = engineer.post(
        "/release/rollback",
        json={"horizon": "1w", "reason": "worse live"},
        headers={"X-CSRF-Token": token},
    )
    assert back.status_code == 200 and back.json()["to_version"] == "1"
    rows = audit.rows()
    assert rows["actor"].to_list() == [ENGINEER[0]] * 3
    assert rows["action"].to_list() == ["promote", "promote", "rollback"]
    unknown = engineer.post(
        "/release/promote", json={**promote, "version": "9"}, headers={"X-CSRF-Token": token}
    )
    assert unknown.status_code == 409 and "9" in unknown.json()["message"]
    bad = engineer.post(
        "/release/promote", json={**promote, "horizon": "2y"}, headers={"X-CSRF-Token": token}
    )
    assert bad.status_code == 422 and "horizon" in bad.json()["message"]
