"""Screenshots of the buyer's page for the docs, in headless Chromium (not a test).

Usage: .venv/bin/python benchmarks/page_screenshots.py [--home DIR] [--out benchmarks/results]

Without --home it builds two small homes in a temporary folder through the platform's own writers
(`cbi_platform_tests/api/insight_home.py`: the API tests' forecasts, the market state from the
simulator, the news state and the walk-forward's past zones), one fresh and one whose daily
refresh found the data stale (for the notices). With --home it photographs that home (e.g. the
`.cbi_home` of `make run`). The page is opened as a person opens it: a buyer signs in on its
form (a temporary user, removed at the end when the home is not a built one).

Each shot is one entry of SHOTS: a file name, the viewport, the horizon to show and the element
to photograph (None: the whole page). The server is uvicorn in a thread of this process, on
loopback; everything stops when the script ends.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844, "device_scale_factor": 2, "is_mobile": True}


@dataclass(frozen=True)
class Shot:
    name: str
    viewport: dict
    horizon: str
    selector: str | None  # None: the whole page
    stale: bool = False  # photograph the home whose data is stale (built homes only)


SHOTS = (
    Shot("buyer_page.png", DESKTOP, "1m", None),
    Shot("buyer_page_phone.png", PHONE, "1m", None),
    Shot("page_history_desktop.png", DESKTOP, "1m", "#past-zones-card"),
    Shot("page_history_phone.png", PHONE, "1m", "#past-zones-card"),
    Shot("page_history_walk_forward.png", DESKTOP, "12m", "#past-zones-card"),
    Shot("page_intelligence_desktop.png", DESKTOP, "1m", "#intel-card"),
    Shot("page_intelligence_phone.png", PHONE, "1m", "#intel-card"),
    Shot("page_notices.png", DESKTOP, "12m", None, stale=True),
)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    raise SystemExit("no chromium binary on PATH (apt-get install chromium)")


EMAIL, PASSWORD = "screenshots@example.com", "shots-password-2026"


def _photograph(browser, url: str, shot: Shot, out: Path) -> Path:
    viewport = {k: v for k, v in shot.viewport.items() if k in ("width", "height")}
    extra = {k: v for k, v in shot.viewport.items() if k not in ("width", "height")}
    context = browser.new_context(viewport=viewport, **extra)
    try:
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#signin-panel:not([hidden])")
        page.get_by_label("Email").fill(EMAIL)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("body[data-ready=true]", timeout=20000)
        page.click(f"#horizons button[data-horizon='{shot.horizon}']")
        page.wait_for_selector(f"#past-zones-card[data-horizon='{shot.horizon}'][data-ready=true]")
        page.wait_for_selector("#intel-card[data-ready=true]")
        page.wait_for_timeout(200)  # the chart's resize handler settles
        target = out / shot.name
        if shot.selector:
            page.locator(shot.selector).screenshot(path=str(target))
        else:
            page.screenshot(path=str(target), full_page=True)
        return target
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="an existing platform home (default: build)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from cbi_platform.accounts.store import AccountStore
    from cbi_platform.accounts.users import Users
    from cbi_platform.api import create_app
    from cbi_platform_tests.api.conftest import ServerThread
    from cbi_platform_tests.api.insight_home import build_insight_home

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cbi-shots-") as tmp:
        if args.home:  # one home for every shot
            groups = [(args.home, list(SHOTS))]
        else:
            groups = [
                (build_insight_home(Path(tmp) / "fresh").path, [s for s in SHOTS if not s.stale]),
                (
                    build_insight_home(Path(tmp) / "stale", stale=True).path,
                    [s for s in SHOTS if s.stale],
                ),
            ]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=_chromium(), headless=True, args=["--no-sandbox"]
            )
            try:
                for home, shots in groups:
                    users = Users(AccountStore.for_home(home))
                    users.add(EMAIL, "Sam Buyer", "buyer", PASSWORD)
                    try:
                        with ServerThread(create_app(home, max_business_days_behind=2)) as server:
                            for shot in shots:
                                path = _photograph(browser, server.url, shot, args.out)
                                print(f"wrote {path}")
                    finally:
                        if args.home:  # a built home goes away with the folder
                            users.remove(EMAIL)
            finally:
                browser.close()


if __name__ == "__main__":
    main()
