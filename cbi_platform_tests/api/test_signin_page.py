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
        assert run.errors == [] and other.errors == []
    finally:
        run.close()
        other.close()
