"""The programme card in a real headless Chromium: a buyer signed in on the page's own form (a
user of the home's accounts store; the page keeps his session's CSRF token) sees the default,
a bad field refused with its name, sets his programme through the form, sees the backtest
queued, and — after the test runs the Dagster job the sensor asks for, in process — ready with
the cost table; the recommendation in his volume; the phone layout fits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from cbi_platform.accounts import programmes as pg
from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import Users
from cbi_platform.api import create_app
from cbi_platform.defs.procurement.programme import (
    programme_backtest_job,
    programme_backtest_sensor,
)
from cbi_platform.defs.resources import build_resources
from cbi_platform_tests.accounts.programme_home import write_warehouse
from cbi_platform_tests.api.conftest import ServerThread, build_home, cheaper_argon2
from cbi_platform_tests.api.test_page import PageRun, browser  # noqa: F401 (the fixture)

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
ALICE = ("alice@example.com", "alice's long password")


@pytest.fixture(scope="module")
def programme_server(tmp_path_factory):
    home = build_home(tmp_path_factory.mktemp("programme_page"))
    write_warehouse(home.path)
    store = AccountStore.for_home(home.path, env={})
    with pytest.MonkeyPatch.context() as patch, cheaper_argon2():
        patch.delenv("CBI_ACCOUNTS_DSN", raising=False)  # the app signs in from the home's store
        Users(store).add(ALICE[0], "Alice", "buyer", ALICE[1])
        with ServerThread(create_app(home.path, max_business_days_behind=2)) as server:
            yield server, home, store


def run_queued_backtests(home: Path) -> list[dg.RunRequest]:
    """What the daemon would do: the sensor's run requests, each run in process."""
    resources = build_resources({"CBI_HOME": str(home), "CBI_SOURCE": "simulated"})
    context = dg.build_sensor_context(
        resources={"home": resources["home"]}, instance=dg.DagsterInstance.ephemeral()
    )
    requests = programme_backtest_sensor(context).run_requests
    for request in requests:
        result = programme_backtest_job.execute_in_process(
            run_config=request.run_config,
            resources={k: resources[k] for k in ("home", "market_source", "forecast_store")},
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
    return requests


def open_signed_in(browser, server, **viewport) -> PageRun:  # noqa: F811
    run = PageRun(browser, server.url, **viewport)
    run.page.goto(server.url + "/")
    run.page.wait_for_selector("#signin-panel:not([hidden])")
    assert not [u for u in run.requests if "/me/" in u]  # before the sign-in: no /me request
    run.sign_in(ALICE)  # the page's own sign-in form
    run.page.wait_for_selector("#programme-form:not([hidden])")
    return run


def _save(page, tmp_path: Path, name: str) -> None:
    """`page`: a page or a locator (its screenshot is the element's)."""
    shot = tmp_path / name
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("CBI_SAVE_SCREENSHOT") == "1":
        shutil.copyfile(shot, RESULTS / name)


def test_set_a_programme_see_it_queued_then_ready_with_the_table(
    browser,  # noqa: F811
    programme_server,
    tmp_path,
):
    server, home, store = programme_server
    run = open_signed_in(browser, server, viewport={"width": 1280, "height": 1000})
    page = run.page
    try:
        # the default, labelled so, and its backtest asked for on opening the card
        assert page.input_value("#pg-railcars") == "10"
        assert page.input_value("#pg-railcar-lb") == "180000"
        assert "not set a programme" in page.inner_text("#programme-origin")
        assert page.inner_text("#pg-window-hint") == "5 to 126 trading days"
        page.wait_for_selector("#programme-status[data-status=queued]")
        assert page.inner_text("#programme-status") == "Backtest queued…"
        # a bad field: refused with its name, marked, focused; nothing stored
        page.fill("#pg-window", "200")
        page.click("#programme-save")
        page.wait_for_selector("#pg-window[aria-invalid=true]")
        assert "window_days must be between 5 and 126 trading days" in page.inner_text(
            "#programme-error"
        )
        assert page.evaluate("document.activeElement.id") == "pg-window"
        assert pg.get_programme(store, 1)[1] is True
        # his programme through the form
        for selector, value in (
            ("#pg-railcars", "4"),
            ("#pg-railcar-lb", "190000"),
            ("#pg-window", "42"),
            ("#pg-carry", "0.3"),
            ("#pg-tolerance", "1.5"),
        ):
            page.fill(selector, value)
        page.click("#programme-save")
        page.locator("#programme-origin", has_text="Your programme:").wait_for()
        mine = pg.validate_programme(
            {
                "railcars_per_window": 4,
                "railcar_lb": 190000,
                "window_days": 42,
                "carry_cents_per_lb_month": 0.3,
                "max_worst_shortfall_cents": 1.5,
            }
        )
        assert pg.get_programme(store, 1) == (mine, False)
        page.wait_for_selector("#programme-status[data-status=queued]")
        assert page.locator("#programme-error").inner_text() == ""
        # the recommendation card in his volume: a tenth of 760,000 lb
        assert "76,000 lb" in page.inner_text("#rec-action")
        assert "your programme" in page.inner_text("#rec-action")
        assert "(0.4 railcars)" in page.inner_text("#rec-programme")
        # this home logged the cvar policy; his tolerance shows even buying: said so
        assert "for your tolerance the backtest shows even" in page.inner_text("#rec-programme")
        # the daemon's part, in process; the page polls and shows the result
        requests = run_queued_backtests(home.path)
        hashes = {
            r.run_config["ops"]["programme_backtest"]["config"]["programme_hash"] for r in requests
        }
        assert pg.programme_hash(mine) in hashes
        page.wait_for_selector("#programme-status[data-status=ready]", timeout=15_000)
        assert (
            page.inner_text("#programme-status") == f"Backtest ready (data as of {home.last_day})."
        )
        result = pg.backtest_status(store, mine, str(home.last_day))["result"]
        rows = page.locator("#programme-table tbody tr")
        assert rows.count() == 3
        even = page.locator("#programme-table tr.even td[data-level=p50] .cents").inner_text()
        assert even == f"{result['record']['even']['p50_cents']:.2f} c/lb"
        p90 = page.locator("#programme-table tr.coming td[data-level=p90] .dollars").inner_text()
        assert p90 == f"${round(result['coming_window']['even']['p90_dollars']):,}"
        assert "the coming 42 trading days" in rows.nth(2).inner_text()
        assert "frozen from the development period" in page.inner_text("#programme-caption")
        # accessible names, contrast, table headers: axe finds nothing in the card
        from axe_playwright_python.sync_playwright import Axe

        axe = Axe().run(page, context="#programme-card")
        assert axe.violations_count == 0, axe.generate_report()
        # the one error: the refused field's 422, as the browser logs it
        assert [e for e in run.errors if "status of 422" not in e] == []
        assert len(run.errors) == 1
        _save(page.locator("#programme-card"), tmp_path, "page_programme_desktop.png")
    finally:
        run.close()


def test_the_card_fits_a_phone(browser, programme_server, tmp_path):  # noqa: F811
    server, home, store = programme_server
    run = open_signed_in(
        browser,
        server,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page = run.page
    try:
        page.wait_for_selector("#programme-status[data-status]")
        if page.get_attribute("#programme-status", "data-status") != "ready":
            run_queued_backtests(home.path)
        page.wait_for_selector("#programme-status[data-status=ready]", timeout=15_000)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        scroll = page.locator("#programme-card .scroll")
        widths = page.evaluate(
            "e => [e.scrollWidth, e.clientWidth, [...e.querySelectorAll('tr:last-child td')]"
            ".map(td => td.getBoundingClientRect().width)]",
            scroll.element_handle(),
        )
        assert widths[0] <= widths[1], widths
        for label in ("pg-railcars", "pg-railcar-lb", "pg-window", "pg-carry", "pg-tolerance"):
            box = page.locator(f"#{label}").bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 391, label
            assert page.locator(f"label[for={label}]").count() == 1
        assert run.errors == []
        _save(page.locator("#programme-card"), tmp_path, "page_programme_phone.png")
    finally:
        run.close()
