"""The buyer's insight cards in a real headless Chromium (issue 22 §3, §4, §7): the past-zones
chart draws the bands and the realised line with the API's sentences, the intelligence card
shows each item with its freshness, and a provisional forecast, stale data and the random walk
each look different (class, icon and label, not colour alone) with the API's sentence.

The home's daily refresh found the data stale, so the 12m forecast (provisional, the random
walk) carries all three notices. The buyer signs in on the page's own form (a user of the
home's accounts store); the test reads the API with a key. Skips like test_page.py without
Playwright or Chromium.
"""

from __future__ import annotations

import pytest

from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import Users
from cbi_platform.api import create_app
from cbi_platform.api.keys import create_key
from cbi_platform_tests.api.conftest import ServerThread, cheaper_argon2
from cbi_platform_tests.api.insight_home import build_insight_home
from cbi_platform_tests.api.test_page import PageRun, browser  # noqa: F401  (a fixture)

BUYER = ("bea@example.com", "bea's long password")


@pytest.fixture(scope="module")
def insight_site(tmp_path_factory):
    home = build_insight_home(tmp_path_factory.mktemp("insight_page"), stale=True)
    key, _ = create_key(home.path, "tests")  # the test's own reads of the API
    with pytest.MonkeyPatch.context() as patch, cheaper_argon2():
        patch.delenv("CBI_ACCOUNTS_DSN", raising=False)  # the app signs in from the home's store
        Users(AccountStore.for_home(home.path, env={})).add(BUYER[0], "Bea", "buyer", BUYER[1])
        app = create_app(home.path, max_business_days_behind=2)
        with ServerThread(app) as server:
            from fastapi.testclient import TestClient

            with TestClient(app) as client:
                client.headers["X-API-Key"] = key
                yield server, client


def _open(browser, server, **context) -> PageRun:  # noqa: F811
    run = PageRun(browser, server.url, **context)
    run.sign_in(BUYER)  # the page's own sign-in form
    run.page.wait_for_selector("#intel-card[data-ready=true]")
    return run


def _show(page, horizon: str) -> None:
    page.click(f"#horizons button[data-horizon='{horizon}']")
    page.wait_for_selector(f"#past-zones-card[data-horizon='{horizon}'][data-ready=true]")
    page.wait_for_selector(f"#notices[data-horizon='{horizon}'][data-ready=true]")


def test_past_zones_intelligence_and_notices_on_the_desktop(browser, insight_site):  # noqa: F811
    server, client = insight_site
    run = _open(browser, server, viewport={"width": 1280, "height": 900})
    try:
        page = run.page
        # Past zones at 1w: the bands, the realised line through every matured outcome, and
        # the API's sentences word for word.
        _show(page, "1w")
        api = client.get("/calibration/1w").json()
        chart = page.locator("#past-zones-chart")
        assert chart.get_attribute("role") == "img"
        assert chart.get_attribute("aria-label") == api["summary"]
        assert page.locator("#past-zones-chart path.past-band-outer").count() == 1
        assert page.locator("#past-zones-chart path.past-band-inner").count() == 1
        line = page.locator("#past-zones-chart path.past-realised")
        assert line.count() == 1 and int(line.get_attribute("data-points")) == len(api["zones"])
        assert line.get_attribute("d").count("L") == len(api["zones"]) - 1
        misses = sum(not (z["p10"] <= z["actual"] <= z["p90"]) for z in api["zones"])
        assert page.locator("#past-zones-chart circle.past-miss").count() == misses > 0
        rates = page.locator("#past-zones-rates li").all_inner_texts()
        assert rates == [r["sentence"] for r in api["hit_rates"]]
        assert page.inner_text("#past-zones-label") == api["label"]

        # 12m has no matured served forecast: the walk-forward's zones, labelled as such.
        _show(page, "12m")
        api12 = client.get("/calibration/12m").json()
        assert page.locator("#past-zones-label").get_attribute("data-source") == "walk_forward"
        assert page.inner_text("#past-zones-label") == api12["label"]
        assert (
            page.locator("#past-zones-rates li")
            .first.inner_text()
            .startswith("The walk-forward 12m P30–P70 range held 20 of the last 60")
        )

        # The three notices of the 12m forecast: each its own class, icon, label and sentence.
        notices = client.get("/notices").json()
        expected = next(h for h in notices["horizons"] if h["horizon"] == "12m")["notices"]
        items = page.locator("#notices .notice-item")
        assert items.count() == 3
        shown = [
            {
                "class": items.nth(i).get_attribute("class"),
                "icon": items.nth(i).locator(".notice-icon").inner_text(),
                "label": items.nth(i).locator(".notice-label").inner_text(),
                "sentence": items.nth(i).locator(".notice-text").inner_text(),
                "border": items.nth(i).evaluate("e => getComputedStyle(e).borderTopStyle"),
            }
            for i in range(3)
        ]
        assert [s["class"] for s in shown] == [
            "notice-item notice-stale",
            "notice-item notice-provisional",
            "notice-item notice-random_walk",
        ]
        assert [s["sentence"] for s in shown] == [n["sentence"] for n in expected]
        assert [s["label"].lower() for s in shown] == [n["label"].lower() for n in expected]
        assert len({s["icon"] for s in shown}) == 3  # not colour alone: an icon each
        assert len({s["border"] for s in shown}) == 3  # dashed, solid, dotted
        assert shown[0]["sentence"].startswith("Data are stale")
        assert shown[1]["sentence"].startswith("This forecast is provisional")
        assert shown[2]["sentence"].startswith("This forecast is the random walk")
        # 1w is a model forecast: only the stale-data notice.
        _show(page, "1w")
        assert page.locator("#notices .notice-item").count() == 1
        assert page.locator("#notices .notice-stale").count() == 1

        # Market intelligence: every item with its text and its freshness, as the API says.
        intel = client.get("/intelligence").json()["items"]
        rows = page.locator("#intel-list .intel-item")
        assert rows.count() == len(intel) == 6
        for i, item in enumerate(intel):
            row = rows.nth(i)
            assert row.get_attribute("data-key") == item["key"]
            assert row.locator(".intel-title").inner_text() == item["title"]
            assert row.locator(".intel-text").inner_text() == item["text"]
            assert row.locator(".intel-fresh").inner_text().endswith(item["freshness"])
        assert run.errors == []  # a CSP violation or a script error would be one
        assert all(url.startswith(server.url) for url in run.requests)

        # Accessible names and contrast of the three parts, by axe-core.
        _show(page, "12m")
        from axe_playwright_python.sync_playwright import Axe

        parts = [["#notices"], ["#past-zones-card"], ["#intel-card"]]
        report = Axe().run(page, context={"include": parts})
        assert report.violations_count == 0, report.generate_report()
    finally:
        run.close()


def test_the_cards_fit_a_phone(browser, insight_site):  # noqa: F811
    server, _ = insight_site
    run = _open(
        browser,
        server,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        page = run.page
        _show(page, "12m")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        for selector in ("#past-zones-chart", "#intel-card", "#notices"):
            box = page.locator(selector).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 391, selector
        assert page.locator("#past-zones-chart path.past-realised").count() == 1
        assert run.errors == []
    finally:
        run.close()
