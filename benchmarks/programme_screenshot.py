"""Screenshots of the signed-in page with the buyer's programme card: desktop and phone.

Usage: .venv/bin/python benchmarks/programme_screenshot.py
Writes benchmarks/results/page_programme_desktop.png and page_programme_phone.png.

The page runs on a small home (the API tests' served forecasts and recommendation; ZL closes
ending on the same day and random-walk decision forecasts in the warehouse), behind real
uvicorn, in headless Chromium. The buyer signs in on the page's own form (a user of the home's
accounts store) and sets a programme through the form; the queued backtest runs as the Dagster
job in process (what the daemon does after the sensor asks), and the page shows it ready.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"


def aligned_closes(last_day: dt.date, last_price: float, n: int = 500):
    """A seeded random walk of n business-day closes ending on last_day at last_price."""
    import numpy as np
    import polars as pl

    days, day = [], last_day
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day -= dt.timedelta(days=1)
    walk = np.exp(np.cumsum(0.015 * np.random.default_rng(4).standard_normal(n)))
    return pl.DataFrame({"date": days[::-1], "price": last_price * walk / walk[-1]})


def main() -> None:
    import tempfile

    from playwright.sync_api import sync_playwright

    from cbi_platform.accounts.store import AccountStore
    from cbi_platform.accounts.users import Users
    from cbi_platform.api import create_app
    from cbi_platform_tests.accounts.programme_home import write_warehouse
    from cbi_platform_tests.api.conftest import ServerThread, build_home
    from cbi_platform_tests.api.test_page import PageRun, _chromium
    from cbi_platform_tests.api.test_programme_page import run_queued_backtests

    buyer = ("buyer@example.com", "the screenshot buyer's password")

    with tempfile.TemporaryDirectory() as tmp:
        home = build_home(Path(tmp) / "home")
        write_warehouse(
            home.path,
            prices=aligned_closes(home.last_day, home.prices[-1]),
            forecasts_from=200,
        )
        # the server signs in from CBI_ACCOUNTS_DSN when set: the home's store here
        os.environ.pop("CBI_ACCOUNTS_DSN", None)
        Users(AccountStore.for_home(home.path, env={})).add(buyer[0], "Buyer", "buyer", buyer[1])
        app = create_app(home.path, max_business_days_behind=2)
        with ServerThread(app) as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=_chromium(), headless=True, args=["--no-sandbox"]
            )
            shots = (
                ("page_programme_desktop.png", {"viewport": {"width": 1280, "height": 900}}),
                (
                    "page_programme_phone.png",
                    {
                        "viewport": {"width": 390, "height": 844},
                        "device_scale_factor": 2,
                        "is_mobile": True,
                        "has_touch": True,
                    },
                ),
            )
            for i, (name, context) in enumerate(shots):
                run = PageRun(browser, server.url, **context)
                run.sign_in(buyer)  # the page's own sign-in form
                page = run.page
                page.wait_for_selector("#programme-form:not([hidden])")
                if i == 0:  # set the programme once; the phone opens it set
                    for selector, value in (
                        ("#pg-railcars", "6"),
                        ("#pg-railcar-lb", "185000"),
                        ("#pg-window", "42"),
                        ("#pg-carry", "0.3"),
                        ("#pg-tolerance", "1.5"),
                    ):
                        page.fill(selector, value)
                    page.click("#programme-save")
                    page.locator("#programme-origin", has_text="Your programme:").wait_for()
                    page.wait_for_selector("#programme-status[data-status=queued]")
                    run_queued_backtests(home.path)
                page.wait_for_selector("#programme-status[data-status=ready]", timeout=20_000)
                page.locator("#programme-card").scroll_into_view_if_needed()
                RESULTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(RESULTS / name), full_page=True)
                if run.errors:
                    raise SystemExit(f"page errors: {run.errors}")
                print(f"wrote {RESULTS / name}")
                run.close()
            browser.close()


if __name__ == "__main__":
    main()
