"""The buyer's page in a real headless Chromium (Debian's, through Playwright; no download).

Skips, with the reason printed, when Playwright or a Chromium binary is missing. Screenshots go
to a tmp folder; with CBI_SAVE_SCREENSHOT=1 also to benchmarks/results/buyer_page*.png.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
FORBIDDEN_WORDS = re.compile(r"\b(cones?|bands?)\b", re.IGNORECASE)


def _chromium() -> str | None:
    for candidate in (os.environ.get("CBI_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]'): browser tests skipped"
        print(reason)
        pytest.skip(reason)
    executable = _chromium()
    if executable is None:
        reason = (
            "no chromium binary (apt-get install chromium, or set CBI_CHROMIUM): "
            "browser tests skipped"
        )
        print(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


class PageRun:
    """A page on the live server, with every request, console error and CSP report kept."""

    def __init__(self, browser, base: str, **context):
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.base = base

    def _console(self, message) -> None:
        # GET /session answers 401 before sign-in, by design: Chromium logs that as an error.
        expected = "status of 401" in message.text and message.location.get("url", "").endswith(
            "/session"
        )
        if message.type == "error" and not expected:
            self.errors.append(message.text)

    def sign_in(self, user: tuple[str, str]) -> None:
        email, password = user
        self.page.goto(self.base + "/")
        self.page.wait_for_selector("#signin-panel:not([hidden])")
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password", exact=True).fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_selector("body[data-ready=true]", timeout=15000)
        self.page.wait_for_selector("#drivers li")

    def close(self) -> None:
        self.context.close()


def _save(page, tmp_path: Path, name: str, min_bytes: int = 10_000) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > min_bytes
    if os.environ.get("CBI_SAVE_SCREENSHOT") == "1":
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, RESULTS / name)
    return shot


def _overflowing_tables(page) -> list[str]:
    return page.evaluate(
        "[...document.querySelectorAll('.scroll')].filter(e => e.scrollWidth > e.clientWidth)"
        ".map(e => e.firstElementChild.id)"
    )


def _zone_lines(page) -> dict[str, str]:
    lines = page.locator("#chart line.zone")
    return {
        lines.nth(i).get_attribute("data-level"): lines.nth(i).get_attribute("data-value")
        for i in range(lines.count())
    }


def test_desktop_page_shows_zones_statements_drivers_and_advice(
    browser, live_server, shared_user, shared_home, shared_client, tmp_path
):
    run = PageRun(browser, live_server.url, viewport={"width": 1280, "height": 900})
    try:
        run.sign_in(shared_user)
        page = run.page
        # Target zones of the default horizon (1m), as served by the API.
        api = shared_client.get("/forecast/1m").json()
        assert _zone_lines(page) == {z: f"{v:.2f}" for z, v in api["target_zones"].items()}
        labels = page.locator("#chart text.zone-label").all_text_contents()
        assert labels and all(re.fullmatch(r"P(10|30|50|70|90) \d+\.\d\d", t) for t in labels)
        assert page.locator("#chart .price-line").count() == 1  # the served closes
        # The probability statement, in the buyer's words.
        statement = page.inner_text("#statement")
        assert statement.startswith("41% probability ZL is between")
        assert "this range held in 60 of 150" in statement
        assert page.locator("#zones-table tr").count() == 6
        # Why prices are moving: the four largest drivers with their % contributions.
        drivers = page.locator("#drivers li")
        assert drivers.count() == 4
        assert "ZL 63-day volatility" in drivers.nth(0).inner_text()
        assert page.locator("#drivers .pct").all_inner_texts() == [
            "+0.69%",
            "+0.45%",
            "−0.39%",
            "−0.28%",
        ]
        # Regime chip, freshness, accuracy next to the random walk, the recommendation.
        assert page.inner_text("#regime-chip") == "Regime: bull"
        freshness = page.locator("#freshness")
        assert freshness.inner_text() == f"Data through {shared_home.last_day} · up to date"
        assert freshness.get_attribute("data-status") == "ok"
        assert "random walk" in page.inner_text("#accuracy-verdict")
        assert page.locator("#accuracy-table tr").count() == 6
        assert (
            page.inner_text("#rec-action") == f"BUY 180,000 lb at {shared_home.prices[-1]:.2f} c/lb"
        )
        assert "the cvar policy says BUY" in page.inner_text("#rec-text")
        assert "72 buying windows" in page.inner_text("#rec-record")
        # The buyer's vocabulary, offline, and no error (a CSP violation would be one).
        assert not FORBIDDEN_WORDS.search(page.inner_text("body"))
        assert all(url.startswith(live_server.url) for url in run.requests), run.requests
        assert run.errors == []
        assert _overflowing_tables(page) == []
        _save(page, tmp_path, "buyer_page.png")

        # Another horizon: the served random walk is said plainly, and the zones follow.
        page.click("#horizons button[data-horizon='3m']")
        page.wait_for_selector("#drivers-summary[data-random-walk=true]")
        assert "random walk" in page.inner_text("#drivers-summary")
        api = shared_client.get("/forecast/3m").json()
        assert _zone_lines(page) == {z: f"{v:.2f}" for z, v in api["target_zones"].items()}
        assert page.locator("#drivers li .tag").first.inner_text() == "model not used"

        # The session cookie stays in this browser: a reload opens the page without asking.
        assert page.inner_text("#signed-in-as") == "Signed in as Bea Buyer"
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert page.locator("#signin-panel").is_hidden()
        assert page.inner_text("#signed-in-as") == "Signed in as Bea Buyer"
        # No script can read the session: the cookie is HttpOnly, and nothing is stored.
        assert page.evaluate("document.cookie") == ""
        assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    finally:
        run.close()


def test_phone_layout_fits_390px(browser, live_server, shared_user, tmp_path):
    run = PageRun(
        browser,
        live_server.url,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        run.sign_in(shared_user)
        page = run.page
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        chart = page.locator("#chart").bounding_box()
        assert chart["width"] <= 390 and chart["height"] > 200
        assert page.locator("#chart line.zone").count() == 5
        assert page.locator("#drivers li").count() == 4
        for selector in ("#statement", "#rec-action", "#regime-chip", "#freshness"):
            box = page.locator(selector).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 391, selector
        assert _overflowing_tables(page) == []  # the tables fit without sideways scrolling
        assert run.errors == []
        _save(page, tmp_path, "buyer_page_phone.png")
    finally:
        run.close()


def test_wrong_password_is_refused_and_asked_again(browser, live_server, shared_user):
    run = PageRun(browser, live_server.url, viewport={"width": 1000, "height": 700})
    try:
        page = run.page
        page.goto(live_server.url + "/")
        page.get_by_label("Email").fill(shared_user[0])
        page.get_by_label("Password", exact=True).fill("not the password at all")
        page.get_by_role("button", name="Sign in").click()
        alert = page.get_by_role("alert").filter(has_text="wrong")
        alert.wait_for()
        assert alert.inner_text() == "wrong email or password"
        assert page.locator("#dashboard").is_hidden()
        assert page.get_by_label("Password", exact=True).input_value() == ""
        assert run.context.cookies() == []
    finally:
        run.close()


def test_sign_out_ends_the_session_and_shows_the_form(browser, live_server, shared_user):
    run = PageRun(browser, live_server.url, viewport={"width": 1000, "height": 700})
    try:
        run.sign_in(shared_user)
        page = run.page
        [cookie] = run.context.cookies()
        assert cookie["name"] == "cbi_session" and cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_selector("#signin-panel:not([hidden])")
        assert page.locator("#dashboard").is_hidden()
        assert page.inner_text("#signin-error") == "You are signed out."
        # The old cookie value is useless on the server now.
        import httpx

        response = httpx.get(
            live_server.url + "/predictions", cookies={"cbi_session": cookie["value"]}
        )
        assert response.status_code == 401
        assert run.errors == []
    finally:
        run.close()
