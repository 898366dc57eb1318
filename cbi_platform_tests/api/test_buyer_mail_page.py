"""The "Your mail" card in a real headless Chromium, and the digest's HTML rendered there.

The page's /me routes get TEST-DOUBLE sign-in dependencies (from test_buyer_mail_api: the
user named by the X-Test-User header, which the browser context sends) until the real
sessions are wired in; everything else is the real app over a real home.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from cbi_platform.accounts import digest, price_alerts
from cbi_platform.accounts.mail_ticks import digest_tick
from cbi_platform.accounts.store import AccountStore
from cbi_platform.api import buyer_mail, create_app
from cbi_platform.api.keys import create_key
from cbi_platform_tests.accounts.mail_helpers import add_user, html_with_inline_images, send_to
from cbi_platform_tests.api import test_page
from cbi_platform_tests.api.conftest import ServerThread, build_home
from cbi_platform_tests.api.test_buyer_mail_api import (
    test_double_current_user,
    test_double_require_csrf,
)
from cbi_platform_tests.operations import conftest as smtp_fixtures

browser = test_page.browser  # the page tests' headless Chromium (skips without one)
smtp_server = smtp_fixtures.smtp_server
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


@pytest.fixture(scope="module")
def mail_site(tmp_path_factory):
    home = build_home(tmp_path_factory.mktemp("mail_home"), n_days=30)
    key, _ = create_key(home.path, "tests")
    store = AccountStore.for_home(home.path, env={})
    add_user(store, "ana@example.com", "Ana")
    app = create_app(home.path, max_business_days_behind=2)
    app.dependency_overrides[buyer_mail.not_signed_in] = test_double_current_user
    app.dependency_overrides[buyer_mail.no_csrf_check_yet] = test_double_require_csrf
    with ServerThread(app) as server:
        yield server, key, store


def test_the_mail_card_sets_the_digest_and_alerts_by_label(browser, mail_site):
    server, key, store = mail_site
    run = test_page.PageRun(
        browser,
        server.url,
        viewport={"width": 390, "height": 844},
        extra_http_headers={"X-Test-User": "ana@example.com", "X-CSRF-Token": "test-csrf"},
    )
    try:
        run.open_with_key(key)
        page = run.page
        assert page.locator("#mail-card").is_hidden()  # a key alone is no person: no card
        assert not [u for u in run.requests if "/me/" in u]
        # Stands in for the sign-in of api.sessions (it sets app.js's state.user and loads).
        page.evaluate(
            "state.user = {name: 'Ana'};"
            "document.dispatchEvent(new CustomEvent('cbi:loaded', {detail: state.data}))"
        )
        page.wait_for_selector("#mail-card:not([hidden])")
        assert page.inner_text("#mail-status") == "No digest by mail."
        page.get_by_label("Digest by mail").select_option("weekly")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#mail-status")).to_contain_text("weekly")
        assert digest.subscription(store, 1)["cadence"] == "weekly"
        # A fixed level with a hostile note: shown as text, never run.
        page.get_by_label("Mail me when ZL settles").select_option("below")
        page.get_by_label("Price in c/lb").fill("42.5")
        page.get_by_label("Note (optional)").fill(HOSTILE)
        page.get_by_role("button", name="Add alert").click()
        page.wait_for_selector("#alert-list li[data-alert-id]")
        # A zone rule: the price field is not needed then.
        page.get_by_label("Level").select_option("1m:p30")
        assert page.get_by_label("Price in c/lb").is_disabled()
        page.get_by_role("button", name="Add alert").click()
        expect(page.locator("#alert-list li[data-alert-id]")).to_have_count(2)
        items = page.locator("#alert-list li[data-alert-id]").all_inner_texts()
        assert items[0].startswith(f"ZL settles below 42.50 c/lb — {HOSTILE}")
        assert items[1].startswith("ZL settles below the day's 1m P30")
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#alert-list img, #alert-list script").count() == 0
        stored = price_alerts.list_alerts(store, 1)
        assert [(a.level, a.zone) for a in stored] == [(42.5, None), (None, "p30")]
        # Remove the first by its accessible name.
        page.get_by_role("button", name="Remove alert: ZL settles below 42.50 c/lb").click()
        expect(page.locator("#alert-list li[data-alert-id]")).to_have_count(1)
        assert [a.zone for a in price_alerts.list_alerts(store, 1)] == ["p30"]
        # A refused alert shows the API's message.
        page.get_by_label("Level").select_option("level")
        page.get_by_label("Price in c/lb").fill("0")
        page.evaluate("document.getElementById('alert-level').removeAttribute('min')")
        page.get_by_role("button", name="Add alert").click()
        expect(page.locator("#mail-error")).not_to_be_empty()
        assert "level" in page.inner_text("#mail-error")
        assert not run.errors or all("422" in e for e in run.errors), run.errors
        # Nothing sideways on a phone.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        run.close()


def test_the_digest_html_renders_offline_and_shows_the_zones(browser, smtp_server, tmp_path):
    inbox, port = smtp_server
    home = build_home(tmp_path / "home", n_days=30)
    store = AccountStore.for_home(tmp_path, env={})
    digest.set_cadence(store, add_user(store, "ana@example.com", "Ana"), "daily")
    digest_tick(store, home.path, send_to(port), None, max_business_days_behind=2)
    mail = inbox.mails[0][2]
    context = browser.new_context(viewport={"width": 390, "height": 844})
    requests: list[str] = []
    try:
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.set_content(html_with_inline_images(mail), wait_until="load")
        text = page.inner_text("body")
        one_month = next(f for f in digest.read_inputs(home.path, 2).forecasts if f.horizon == "1m")
        assert f"{one_month.zones['p50']:.2f}" in text and "Target zones" in text
        assert page.locator('[data-notice="provisional"]').is_visible()
        width = page.evaluate("document.querySelector('img').naturalWidth")
        assert width == 640  # the chart PNG decoded
        assert [u for u in requests if not u.startswith(("data:", "about:"))] == []
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    finally:
        context.close()
