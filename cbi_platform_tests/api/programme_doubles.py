"""TEST DOUBLES for the signed-in user (helper A's api.sessions provides the real ones): the
programme routes take `current_user` and `require_csrf` as dependencies, and these tests
override them with FastAPI's dependency_overrides. The user double reads the user's email from
the `X-Test-User` header (API tests) or the `cbi_test_user` cookie (the browser) and loads him
from the accounts store; the CSRF double wants `X-CSRF-Token: test-csrf` (API tests) or
accepts every write (the browser, whose apiSend carries no token yet)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request

from cbi_platform.accounts.store import AccountStore
from cbi_platform.api import programme

CSRF = "test-csrf"


@dataclass(frozen=True)
class TestUser:
    id: int
    email: str
    name: str
    role: str


def user_from_header_test_double(home: Path):
    store = AccountStore.for_home(home, env={})

    def current_user(request: Request) -> TestUser:
        email = request.headers.get("x-test-user") or request.cookies.get("cbi_test_user")
        if not email:
            raise HTTPException(401, "not signed in (test double)")
        with store.transaction() as tx:
            row = tx.execute("SELECT * FROM users WHERE email = ?", (email,)).one()
        if row is None:
            raise HTTPException(401, "unknown user (test double)")
        return TestUser(row["id"], row["email"], row["name"], row["role"])

    return current_user


def csrf_header_test_double(request: Request) -> None:
    if request.headers.get("x-csrf-token") != CSRF:
        raise HTTPException(403, "CSRF token missing or wrong (test double)")


def accept_any_csrf_test_double(request: Request) -> None:
    return None


def with_test_doubles(app: FastAPI, home: Path, csrf=csrf_header_test_double) -> FastAPI:
    """Override the app's programme dependencies (whatever signed_in_dependencies gave it)."""
    user_dep, csrf_dep = programme.signed_in_dependencies()
    app.dependency_overrides[user_dep] = user_from_header_test_double(home)
    app.dependency_overrides[csrf_dep] = csrf
    return app
