"""The buyer's digest over a real SMTP server (aiosmtpd on 127.0.0.1): content, what changed,
once per as-of date, weekly cadence, unsubscribe, an SMTP outage and a crash mid-send."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from cbi_platform.accounts import digest, outbox
from cbi_platform.accounts.mail_ticks import digest_tick
from cbi_platform.accounts.store import AccountStore
from cbi_platform.conditions import Condition
from cbi_platform.operations.alerts import AlertDeliveryError
from cbi_platform.operations.condition_log import ConditionLog
from cbi_platform_tests.accounts.mail_helpers import (
    add_user,
    html_of,
    send_to,
    serve_day,
    text_of,
    unsubscribe_token,
)
from cbi_platform_tests.api.conftest import build_home
from cbi_platform_tests.operations import conftest as smtp_fixtures
from cbi_platform_tests.operations.conftest import free_port

smtp_server = smtp_fixtures.smtp_server  # the alert tests' real SMTP server (aiosmtpd)

HOSTILE_NAME = "Ana <script>alert('x')</script>"


@pytest.fixture
def home(tmp_path):
    return build_home(tmp_path / "home", n_days=30)


def _tick(store, home, port, cursor=None):
    return digest_tick(store, home.path, send_to(port), cursor, max_business_days_behind=2)


def test_the_digest_arrives_as_html_with_text_chart_unsubscribe_and_notices(
    home, smtp_server, tmp_path
):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com", HOSTILE_NAME)
    digest.set_cadence(store, uid, "daily")

    tick = _tick(store, home, port)
    assert json.loads(tick.cursor) == {"as_of": home.last_day.isoformat()}
    assert len(inbox.mails) == 1
    sender, recipients, mail = inbox.mails[0]
    assert (sender, recipients) == ("cbi@example.com", ["ana@example.com"])
    # multipart/alternative: text, then the HTML with its chart in multipart/related.
    types = [p.get_content_type() for p in mail.walk()]
    assert types == [
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
    ]
    page, text = html_of(mail), text_of(mail)
    png = next(p for p in mail.walk() if p.get_content_type() == "image/png")
    assert png.get_payload(decode=True).startswith(b"\x89PNG\r\n\x1a\n")
    cid = png["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in page
    # Mail-client HTML: inline CSS, no script, no stylesheet, nothing fetched from outside.
    assert "<script" not in page.lower() and "<style" not in page.lower()
    assert "<link" not in page.lower()
    assert not re.findall(r'src="(?!cid:)', page)
    # A hostile name is text, not markup.
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    # The unsubscribe link: in the HTML, the text and the List-Unsubscribe header.
    token = unsubscribe_token(mail)
    url = f"http://127.0.0.1:8000/unsubscribe?token={token}"
    assert "".join(mail["List-Unsubscribe"].split()) == f"<{url}>"
    assert url in text and url in page
    assert mail["Message-ID"] == f"<cbi-buyer-digest.{uid}.{home.last_day}@cbi-platform>"
    # The zones, the statement, the drivers, the recommendation, regime and freshness.
    inputs = digest.read_inputs(home.path, 2)
    one_month = next(f for f in inputs.forecasts if f.horizon == "1m")
    for z in ("p10", "p30", "p50", "p70", "p90"):
        assert f"{one_month.zones[z]:.2f}" in page and f"{one_month.zones[z]:.2f}" in text
    assert "41% probability ZL is between" in page
    assert "this range held in 60 of 150" in page  # the buyer's words, as on the page
    assert not re.search(r"\bbands?\b", page + text, re.IGNORECASE)
    # The random-walk horizons list no driver (their drivers are of a model not used).
    assert page.count("No driver moves this forecast: it is the random walk.") == 3
    assert "not used: ridge" not in page
    assert "ZL 63-day volatility (31% annualised) pushes the 1m forecast up" in page
    assert "BUY 180,000 lb" in page and "BUY 180,000 lb" in text
    assert "Detected regime: <strong>bull</strong>" in page
    assert f"Data through {home.last_day}" in page and "up to date" in page
    assert "This is your first digest." in page
    # The test home serves a provisional 12m and random-walk 3m/6m/12m; its data are fresh.
    notices = re.findall(r'data-notice="(\w+)"', page)
    assert notices == ["provisional", "random_walk"]
    assert "The 12m forecast is provisional" in page and "The 3m, 6m, 12m forecast is" in page
    assert "[PROVISIONAL] [RANDOM WALK]" in " ".join(mail["Subject"].split())


def test_stale_data_is_its_own_labelled_block(home, smtp_server, tmp_path):
    inbox, port = smtp_server
    ConditionLog(home.path / "operations.duckdb").record(
        [
            Condition(
                key="stale_data/target",
                kind="stale_data",
                firing=True,
                title="the feed stopped",
                as_of=home.last_day + dt.timedelta(days=3),
                evidence={"behind": 3},
            )
        ],
        run_id="test-run",
    )
    store = AccountStore.for_home(tmp_path, env={})
    digest.set_cadence(store, add_user(store, "ben@example.com", "Ben"), "daily")
    _tick(store, home, port)
    page = html_of(inbox.mails[0][2])
    assert re.findall(r'data-notice="(\w+)"', page) == ["provisional", "stale", "random_walk"]
    assert "these forecasts do not know the latest prices" in page and "— stale" in page
    border = {
        state: re.search(rf'data-notice="{state}" style="border-left:4px solid (#\w+)', page)[1]
        for state in ("provisional", "stale", "random_walk")
    }
    assert len(set(border.values())) == 3  # each state looks different


def test_what_changed_and_never_twice_for_one_as_of_date(home, smtp_server, tmp_path):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com", "Ana")
    digest.set_cadence(store, uid, "daily")
    first = _tick(store, home, port)
    before = {f.horizon: f.zones for f in digest.read_inputs(home.path, 2).forecasts}
    again = _tick(store, home, port, first.cursor)
    restarted = _tick(store, home, port, None)  # a lost cursor changes nothing
    assert len(inbox.mails) == 1, (again.summary, restarted.summary)
    assert digest.subscription(store, uid)["last_sent_as_of"] == home.last_day.isoformat()

    next_day = home.last_day + dt.timedelta(days=3)  # Friday -> Monday
    serve_day(home.path, next_day, home.prices[-1] * 1.02, shift=1.05)
    _tick(store, home, port, again.cursor)
    assert len(inbox.mails) == 2
    after = {f.horizon: f.zones for f in digest.read_inputs(home.path, 2).forecasts}
    page = html_of(inbox.mails[1][2])
    b, a = before["1m"], after["1m"]
    expected = (
        f"1m: P50 {b['p50']:.2f} → {a['p50']:.2f} c/lb ({a['p50'] - b['p50']:+.2f}); "
        f"P30–P70 {b['p30']:.2f}–{b['p70']:.2f} → {a['p30']:.2f}–{a['p70']:.2f}"
    )
    assert expected in page and expected in text_of(inbox.mails[1][2])
    assert inbox.mails[1][2]["Message-ID"] != inbox.mails[0][2]["Message-ID"]
    _tick(store, home, port)
    assert len(inbox.mails) == 2


def test_weekly_goes_on_the_first_as_of_of_a_week_only():
    monday, tuesday, friday = dt.date(2025, 3, 31), dt.date(2025, 4, 1), dt.date(2025, 4, 4)
    week = [monday, tuesday, dt.date(2025, 4, 2), dt.date(2025, 4, 3), friday]
    assert digest.is_due("weekly", None, monday, week)
    assert not digest.is_due("weekly", None, tuesday, week)  # a new subscriber waits for Monday
    assert not digest.is_due("weekly", monday, tuesday, week)
    assert not digest.is_due("weekly", monday, friday, week)
    # A Monday that never got its digest (the sensor was down) is made up on Tuesday.
    assert digest.is_due("weekly", monday - dt.timedelta(days=7), tuesday, week)
    # A week whose Monday is a holiday: its first as-of is Tuesday.
    assert digest.is_due("weekly", monday - dt.timedelta(days=7), tuesday, week[1:])
    assert digest.is_due("daily", monday, tuesday, week)
    assert not digest.is_due("daily", tuesday, tuesday, week)
    assert not digest.is_due("off", None, monday, week)


def test_weekly_subscriber_skips_midweek_days(home, smtp_server, tmp_path):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    weekly = add_user(store, "wes@example.com", "Wes")
    daily = add_user(store, "dai@example.com", "Dai")
    digest.set_cadence(store, weekly, "weekly")
    digest.set_cadence(store, daily, "daily")
    assert home.last_day.weekday() == 4  # a Friday: mid-week for a weekly digest
    _tick(store, home, port)
    monday = home.last_day + dt.timedelta(days=3)
    for i, day in enumerate([monday, monday + dt.timedelta(days=1)]):
        serve_day(home.path, day, home.prices[-1] + i)
        _tick(store, home, port)
    got = [(rcpt[0], m["X-CBI-Digest-As-Of"]) for _, rcpt, m in inbox.mails]
    assert got == [
        ("dai@example.com", str(home.last_day)),
        ("wes@example.com", str(monday)),
        ("dai@example.com", str(monday)),
        ("dai@example.com", str(monday + dt.timedelta(days=1))),
    ]


def test_unsubscribe_by_token_stops_the_next_digest(home, smtp_server, tmp_path):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com", "Ana")
    digest.set_cadence(store, uid, "daily")
    _tick(store, home, port)
    token = unsubscribe_token(inbox.mails[0][2])
    with store.transaction() as tx:  # only the token's hash is stored
        stored = tx.execute("SELECT message, unsubscribe_token_hash FROM mail_outbox").one()
    assert stored["unsubscribe_token_hash"] == outbox.token_hash(token)
    assert stored["unsubscribe_token_hash"] != token
    said = digest.unsubscribe(store, token)
    assert said and "no more digests" in said
    assert digest.unsubscribe(store, token) == said  # idempotent
    assert digest.unsubscribe(store, "not-a-token") is None
    assert digest.subscription(store, uid)["cadence"] == "off"
    serve_day(home.path, home.last_day + dt.timedelta(days=3), home.prices[-1])
    _tick(store, home, port)
    assert len(inbox.mails) == 1


def test_smtp_down_queues_the_digest_and_delivers_it_once_later(home, smtp_server, tmp_path):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com", "Ana")
    digest.set_cadence(store, uid, "daily")
    down = _tick(store, home, free_port())  # nothing listens there
    assert "queued again after a failure" in down.summary and not inbox.mails
    [row] = outbox.mails(store)
    assert row["status"] == "queued" and row["attempts"] == 1 and "failed" in row["last_error"]
    assert digest.subscription(store, uid)["last_sent_as_of"] is None  # not sent yet
    _tick(store, home, port)
    _tick(store, home, port)
    assert len(inbox.mails) == 1
    [row] = outbox.mails(store)
    assert row["status"] == "sent" and row["attempts"] == 2 and row["sent_at"]
    assert digest.subscription(store, uid)["last_sent_as_of"] == home.last_day.isoformat()


def test_a_digest_waiting_for_the_server_is_dropped_once_unsubscribed(home, smtp_server, tmp_path):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com", "Ana")
    digest.set_cadence(store, uid, "daily")
    _tick(store, home, free_port())  # the server is down: the digest waits
    digest.set_cadence(store, uid, "off")  # e.g. he unsubscribed from an earlier digest
    result = outbox.deliver(store, send_to(port))
    assert result.sent == [] and not inbox.mails
    [row] = outbox.mails(store)
    assert (row["status"], row["last_error"]) == ("superseded", "unsubscribed before delivery")


def test_a_crash_mid_send_is_not_resent(home, smtp_server, tmp_path):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    digest.set_cadence(store, add_user(store, "ana@example.com", "Ana"), "daily")
    digest.queue_due_digests(store, digest.read_inputs(home.path, 2))
    real = send_to(port)

    def send_then_crash(message, recipient, label):
        real(message, recipient, label)  # the server accepted it ...
        raise SystemExit("killed before the outbox recorded it")  # ... and the process died

    with pytest.raises(SystemExit):
        outbox.deliver(store, send_then_crash)
    assert [r["status"] for r in outbox.mails(store)] == ["sending"]
    soon = outbox.deliver(store, real)  # within the lease: not touched
    later = outbox.deliver(store, real, now=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=11))
    assert soon.sent == [] and later.in_doubt == [f"digest:1:{home.last_day}"]
    assert [r["status"] for r in outbox.mails(store)] == ["in_doubt"]
    assert len(inbox.mails) == 1
    # The day's digest is not queued again either.
    assert digest.queue_due_digests(store, digest.read_inputs(home.path, 2)) == []


def test_a_rejected_mail_stays_queued_while_the_server_refuses(home, tmp_path):
    store = AccountStore.for_home(tmp_path, env={})
    digest.set_cadence(store, add_user(store, "ana@example.com", "Ana"), "daily")
    digest.set_cadence(store, add_user(store, "ben@example.com", "Ben"), "daily")
    digest.queue_due_digests(store, digest.read_inputs(home.path, 2))
    tried = []

    def refuse(message, recipient, label):
        tried.append(recipient)
        raise AlertDeliveryError("SMTP 127.0.0.1:1 failed: ConnectionRefusedError")

    result = outbox.deliver(store, refuse)
    assert tried == ["ana@example.com"]  # the server is down: the second is not attempted
    assert len(result.failed) == 1
    assert [r["status"] for r in outbox.mails(store)] == ["queued", "queued"]


def test_set_cadence_refuses_an_unknown_cadence(tmp_path):
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com")
    with pytest.raises(digest.DigestError, match="cadence: 'hourly' is not one of"):
        digest.set_cadence(store, uid, "hourly")
    assert digest.subscription(store, uid)["cadence"] == "off"
    assert digest.set_cadence(store, uid, "weekly")["cadence"] == "weekly"
