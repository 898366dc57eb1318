"""The "Your mail" card in a real headless Chromium, and the digest's HTML rendered there.

The buyer signs in on the page's own form (a user of the home's accounts store): the real app
over a real home, the session cookie and the CSRF token the page keeps.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from cbi_platform.accounts import digest, price_alerts
from cbi_platform.accounts.mail_ticks import digest_tick
from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import Users
from cbi_platform.api import create_app
from cbi_platform_tests.accounts.mail_helpers import add_user, html_with_inline_images, send_to
from cbi_platform_tests.api import test_page
from cbi_platform_tests.api.conftest import ServerThread, build_home, cheaper_argon2
from cbi_platform_tests.operations import conftest as smtp_fixtures

browser = test_page.browser  # the page tests' headless Chromium (skips without one)
smtp_server = smtp_fixtures.smtp_server
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
ANA = ("ana@example.com", "ana's long password")


@pytest.fixture(scope="module")
def mail_site(tmp_path_factory):
    home = build_home(tmp_path_factory.mktemp("mail_home"), n_days=30)
    store = AccountStore.for_home(home.path, env={})
    with pytest.MonkeyPatch.context() as patch, cheaper_argon2():
        patch.delenv("CBI_ACCOUNTS_DSN", raising=False)  # the app signs in from the home's store
        Users(store).add(ANA[0], "Ana", "buyer", ANA[1])
        with ServerThread(create_app(home.path, max_business_days_behind=2)) as server:
            yield server, store


def test_the_mail_card_sets_the_digest_and_alerts_by_label(browser, mail_site):
    server, store = mail_site
    run = test_page.PageRun(browser, server.url, viewport={"width": 390, "height": 844})
    try:
        page = run.page
        page.goto(server.url + "/")
        page.wait_for_selector("#signin-panel:not([hidden])")
        assert page.locator("#mail-card").is_hidden()  # nobody signed in: no card
        assert not [u for u in run.requests if "/me/" in u]  # and no /me request
        run.sign_in(ANA)  # the page's own sign-in form
        page.wait_for_selector("#mail-card:not([hidden])")
        assert page.inner_text("#mail-status") == "No digest by mail."
        page.get_by_label("Digest by mail").select_option("weekly")
        page.get_by_role("button", name="Save", exact=True).click()  # not "Save and backtest"
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
