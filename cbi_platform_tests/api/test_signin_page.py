"""Signing in as a person would, in a real headless Chromium: keyboard only, accessible names
checked by axe, a hostile name shown as text, a password change. Each test has an accounts
store of its own beside the shared home's forecasts, served by a real uvicorn."""

from __future__ import annotations

import pytest

from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import Users
from cbi_platform.api import create_app
from cbi_platform_tests.api.conftest import ServerThread
from cbi_platform_tests.api.test_page import PageRun, _save, browser  # noqa: F401 (fixture)

expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect

HOSTILE_NAME = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
PASSWORD = "a long enough password"


@pytest.fixture
def server(shared_home, tmp_path, monkeypatch):
    monkeypatch.setenv("CBI_ACCOUNTS_DSN", str(tmp_path / "accounts.sqlite3"))
    users = Users(AccountStore(tmp_path / "accounts.sqlite3"))
    users.add("mallory@example.com", HOSTILE_NAME, "buyer", PASSWORD)
    users.add("kim@example.com", "Kim", "buyer", PASSWORD)
    with ServerThread(create_app(shared_home.path, max_business_days_behind=2)) as running:
        yield running


def _open(browser, server, **context):  # noqa: F811 (the fixture's value)
    run = PageRun(browser, server.url, viewport={"width": 1100, "height": 800}, **context)
    run.dialogs = []
    run.page.on("dialog", lambda d: (run.dialogs.append(d.message), d.dismiss()))
    run.page.goto(server.url + "/")
    run.page.wait_for_selector("#signin-panel:not([hidden])")
    return run


def test_a_script_in_a_name_is_shown_as_text_and_runs_nothing(browser, server):  # noqa: F811
    run = _open(browser, server)
    try:
        page = run.page
        page.get_by_label("Email").fill("mallory@example.com")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("body[data-ready=true]")
        assert page.inner_text("#signed-in-as") == f"Signed in as {HOSTILE_NAME}"
        assert page.locator("#account img, #account script").count() == 0
        # A script typed into the sign-in fields is sent as data and answered as text.
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_selector("#signin-panel:not([hidden])")
        page.get_by_label("Email").fill("kim@example.com")
        page.get_by_label("Password", exact=True).fill("<script>alert(3)</script>")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#signin-error")).to_have_text("wrong email or password")
        assert page.locator("#signin-panel script, #signin-panel img").count() == 0
        assert run.dialogs == []
        assert run.errors == []
    finally:
        run.close()


def test_sign_in_with_the_keyboard_only_and_axe_finds_no_violation(
    browser,  # noqa: F811
    server,
    tmp_path,
):
    from axe_playwright_python.sync_playwright import Axe

    run = _open(browser, server)
    try:
        page = run.page
        _save(page, tmp_path, "signin_page.png", min_bytes=5_000)
        axe = Axe()
        results = axe.run(page, context="#signin-panel")
        assert results.violations_count == 0, results.generate_report()
        assert page.evaluate("document.activeElement.id") == "signin-email"  # focus starts here
        page.keyboard.type("kim@example.com")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "signin-password"
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-ready=true]")
        assert page.get_by_role("button", name="Sign out").is_visible()
        page.get_by_text("Change password", exact=True).first.click()
        results = axe.run(page, context="#account")
        assert results.violations_count == 0, results.generate_report()
        _save(page, tmp_path, "signin_account_bar.png")
        assert run.errors == []
    finally:
        run.close()


def test_change_password_on_the_page_ends_the_other_session(browser, server):  # noqa: F811
    other = _open(browser, server)
    run = _open(browser, server)
    refused: list[str] = []  # the URLs the other browser got 401 for
    other.page.on("response", lambda r: refused.append(r.url) if r.status == 401 else None)
    try:
        for r in (other, run):
            r.page.get_by_label("Email").fill("kim@example.com")
            r.page.get_by_label("Password", exact=True).fill(PASSWORD)
            r.page.get_by_role("button", name="Sign in").click()
            r.page.wait_for_selector("body[data-ready=true]")
        page = run.page
        page.get_by_text("Change password", exact=True).first.click()
        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password (at least 10 characters)").fill("short")
        page.get_by_role("button", name="Change password").click()
        # The browser's own check (minlength) keeps a short password from being sent.
        assert page.inner_text("#password-message") == ""
        page.get_by_label("New password (at least 10 characters)").fill("kim's brand new password")
        page.get_by_role("button", name="Change password").click()
        expect(page.locator("#password-message")).to_contain_text("Password changed")
        page.reload()
        page.wait_for_selector("body[data-ready=true]")  # this browser's new session works
        other.page.reload()
        other.page.wait_for_selector("#signin-panel:not([hidden])")  # the other one ended
        assert run.errors == []
        # The other browser's programme card polls its queued backtest every few seconds: a
        # poll after the change is answered 401 (its session ended), which Chromium logs. That
        # is the only error it may have, and only from /me/ and /session requests.
        assert all("status of 401" in e for e in other.errors), other.errors
        assert all("/me/" in u or u.endswith("/session") for u in refused), refused
    finally:
        run.close()
        other.close()


def test_the_cards_stop_on_sign_out_and_when_the_session_ends_elsewhere(
    browser,  # noqa: F811
    server,
):
    import time

    import httpx

    run = _open(browser, server)
    try:
        page = run.page
        run.sign_in(("kim@example.com", PASSWORD))
        # Signed in: the programme card polls its queued backtest; the mail card is his.
        page.wait_for_selector("#programme-status[data-status=queued]")
        page.wait_for_selector("#mail-card:not([hidden])")
        assert page.input_value("#pg-railcars") != ""
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_selector("#signin-panel:not([hidden])")
        signed_out_at = len(run.requests)
        # Nothing of his is left in the cards, and no /me request follows the sign-out.
        for field in ("#pg-railcars", "#pg-railcar-lb", "#pg-window", "#pg-carry", "#pg-tolerance"):
            assert page.input_value(field) == ""
        assert page.inner_text("#programme-status") == ""
        assert page.get_attribute("#programme-status", "data-status") is None
        assert page.locator("#programme-table").is_hidden()
        assert page.locator("#mail-card").is_hidden()
        assert page.locator("#alert-list li").count() == 0
        time.sleep(3.5)  # longer than the programme card's poll (3 s)
        assert [u for u in run.requests[signed_out_at:] if "/me/" in u] == []
        # Signed in again: the cards are back, polling.
        run.sign_in(("kim@example.com", PASSWORD))
        page.wait_for_selector("#programme-status[data-status=queued]")
        page.wait_for_selector("#mail-card:not([hidden])")
        # His session ends elsewhere (a password change in another client): the card's next
        # poll is answered 401 and the page shows its sign-in, with no reload.
        with httpx.Client(base_url=server.url) as elsewhere:
            signed_in = elsewhere.post(
                "/session", json={"email": "kim@example.com", "password": PASSWORD}
            )
            change = {"current_password": PASSWORD, "new_password": "kim's brand new password"}
            headers = {"X-CSRF-Token": signed_in.json()["csrf_token"]}
            assert elsewhere.post("/me/password", json=change, headers=headers).status_code == 200
        page.wait_for_selector("#signin-panel:not([hidden])", timeout=10_000)
        assert "session ended" in page.inner_text("#signin-error")
        assert page.locator("#dashboard").is_hidden()
        assert all("status of 401" in e for e in run.errors), run.errors  # that poll's 401
    finally:
        run.close()
