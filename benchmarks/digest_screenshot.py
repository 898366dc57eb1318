"""Screenshots of the buyer's digest as a mail client shows it (issue 22 §5): the digest of a
small platform home (the API tests' home: served forecasts at every horizon, a provisional 12m,
random-walk 3m/6m/12m, a recommendation), sent through the platform's SMTP path to a real local
SMTP server (aiosmtpd), then its HTML rendered in headless Chromium with the cid: chart inlined.

    PYTHONPATH=. python benchmarks/digest_screenshot.py [--out benchmarks/results]

Writes digest_desktop.png (900 px wide) and digest_phone.png (390 px), and the mail itself as
digest.eml beside them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
from pathlib import Path

from aiosmtpd.controller import Controller

from cbi_platform.accounts import digest
from cbi_platform.accounts.mail_ticks import digest_tick
from cbi_platform.accounts.store import AccountStore
from cbi_platform_tests.accounts.mail_helpers import (
    add_user,
    html_with_inline_images,
    send_to,
    serve_day,
)
from cbi_platform_tests.api.conftest import build_home
from cbi_platform_tests.operations.conftest import Inbox, free_port

RESULTS = Path(__file__).resolve().parent / "results"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    raise SystemExit("no chromium binary on PATH")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            home = build_home(Path(folder) / "home", n_days=60)
            store = AccountStore.for_home(home.path, env={})
            digest.set_cadence(store, add_user(store, "buyer@example.com", "Dana Buyer"), "daily")
            digest_tick(store, home.path, send_to(port), None, max_business_days_behind=2)
            # A second as-of date so the digest shows what changed since the first.
            monday = home.last_day + dt.timedelta(days=3)
            serve_day(home.path, monday, home.prices[-1] * 1.015, shift=1.02)
            digest_tick(store, home.path, send_to(port), None, max_business_days_behind=2)
    finally:
        controller.stop()
    mail = inbox.mails[-1][2]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "digest.eml").write_bytes(mail.as_bytes())
    page_html = html_with_inline_images(mail)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=_chromium(), headless=True, args=["--no-sandbox"]
        )
        for name, width in (("digest_desktop.png", 900), ("digest_phone.png", 390)):
            context = browser.new_context(viewport={"width": width, "height": 900})
            page = context.new_page()
            page.set_content(page_html, wait_until="load")
            page.screenshot(path=str(args.out / name), full_page=True)
            context.close()
            print(f"wrote {args.out / name}")
        browser.close()


if __name__ == "__main__":
    main()
