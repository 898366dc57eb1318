"""Price alerts over a real SMTP server (aiosmtpd on 127.0.0.1): one mail per crossing, zone
rules re-read each day, validation, isolation between buyers, escaping, and the sensors."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from cbi_platform.accounts import digest, outbox, price_alerts
from cbi_platform.accounts.price_alerts import Day, PriceAlertError
from cbi_platform.accounts.store import AccountStore
from cbi_platform.defs.operations.buyer_mail import build_buyer_mail_sensors
from cbi_platform.defs.resources import OperationsResource
from cbi_platform_tests.accounts.mail_helpers import add_user, html_of, send_to, serve_day
from cbi_platform_tests.api.conftest import build_home
from cbi_platform_tests.operations import conftest as smtp_fixtures

smtp_server = smtp_fixtures.smtp_server  # the alert tests' real SMTP server (aiosmtpd)
D0 = dt.date(2025, 3, 3)


def _day(i: int, close: float, zones=None) -> Day:
    return Day(as_of=D0 + dt.timedelta(days=i), close=close, zones=zones)


def _mails_sent(store) -> list[tuple[int, str]]:
    with store.transaction() as tx:
        rows = tx.execute(
            "SELECT alert_id, crossing_as_of FROM price_alert_mails ORDER BY crossing_as_of"
        ).all()
    return [(r["alert_id"], r["crossing_as_of"]) for r in rows]


def test_a_level_alert_mails_once_per_crossing(smtp_server, tmp_path):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com", "Ana")
    alert = price_alerts.add_alert(store, uid, "below", level=42.0)
    send = send_to(port)
    days = [(0, 43.0), (1, 41.0), (2, 40.0), (3, 42.0), (4, 43.5), (5, 41.5)]
    for i, close in days:
        price_alerts.evaluate(store, _day(i, close))
        price_alerts.evaluate(store, _day(i, close))  # a repeated tick: nothing more
        outbox.deliver(store, send)
    # Crossed below on day 1; stayed below on day 2; 42.00 is not below 42; back above on day
    # 4; below again on day 5.
    crossings = [str(D0 + dt.timedelta(days=1)), str(D0 + dt.timedelta(days=5))]
    assert _mails_sent(store) == [(alert.id, d) for d in crossings]
    assert [m["X-CBI-Price-Alert"] for _, _, m in inbox.mails] == [str(alert.id)] * 2
    assert all(rcpt == ["ana@example.com"] for _, rcpt, _ in inbox.mails)
    subject = " ".join(inbox.mails[0][2]["Subject"].split())
    assert (
        subject == f"[CBI ZL] Price alert: ZL settled at 41.00 c/lb on {crossings[0]}, below 42.00"
    )
    assert price_alerts.list_alerts(store, uid)[0].last_side == "below"


def test_an_alert_whose_condition_holds_when_set_mails_on_its_first_day(smtp_server, tmp_path):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com", "Ana")
    price_alerts.add_alert(store, uid, "above", level=40.0)
    price_alerts.evaluate(store, _day(0, 41.0))
    price_alerts.evaluate(store, _day(1, 40.0))  # 40 is not above 40: back below, no mail
    price_alerts.evaluate(store, _day(2, 40.01))
    outbox.deliver(store, send_to(port))
    assert [" ".join(m["Subject"].split()).split(" on ")[0] for _, _, m in inbox.mails] == [
        "[CBI ZL] Price alert: ZL settled at 41.00 c/lb",
        "[CBI ZL] Price alert: ZL settled at 40.01 c/lb",
    ]


def test_a_zone_rule_is_reread_against_each_days_zone(smtp_server, tmp_path):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com", "Ana")
    alert = price_alerts.add_alert(store, uid, "below", horizon="1m", zone="p30")
    zones = lambda p30: {"1m": {"p10": p30 - 2, "p30": p30, "p50": p30 + 1}}  # noqa: E731
    assert price_alerts.evaluate(store, _day(0, 45.0, None)).unknown_level == 1
    # The settle stays at 45; the zone moves up past it, then down, then up again.
    for i, p30 in [(1, 44.0), (2, 45.5), (3, 46.0), (4, 44.5), (5, 46.5)]:
        price_alerts.evaluate(store, _day(i, 45.0, zones(p30)))
    outbox.deliver(store, send_to(port))
    assert _mails_sent(store) == [
        (alert.id, str(D0 + dt.timedelta(days=2))),
        (alert.id, str(D0 + dt.timedelta(days=5))),
    ]
    body = " ".join(inbox.mails[1][2]["Subject"].split())
    assert body.endswith("below 46.50")  # that day's P30, not the one of the day it was set


def test_the_days_zone_is_the_one_served_the_day_before():
    rows = []
    for i, (close, p30) in enumerate([(45.0, 44.0), (46.0, 47.0), (44.0, 43.0)]):
        for h in ("1w", "1m"):
            rows.append(
                {
                    "as_of": D0 + dt.timedelta(days=i),
                    "horizon": h,
                    "price": close,
                    "p10": p30 - 2,
                    "p30": p30 + (0 if h == "1m" else 10),
                    "p50": p30 + 1,
                    "p70": p30 + 2,
                    "p90": p30 + 3,
                    "role": "served",
                    "created_at": dt.datetime(2025, 3, 3 + i, 20),
                }
            )
    history = pl.DataFrame(rows)
    day = price_alerts.day_from_history(history)
    assert day.as_of == D0 + dt.timedelta(days=2) and day.close == 44.0
    assert day.zones["1m"]["p30"] == 47.0  # served at the previous as-of
    assert price_alerts.day_from_history(history, D0).zones is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"side": "under", "level": 42.0}, "side"),
        ({"side": "below", "level": 0.0}, "level"),
        ({"side": "below", "level": -3.0}, "level"),
        ({"side": "below", "level": float("nan")}, "level"),
        ({"side": "below"}, "level"),
        ({"side": "below", "horizon": "2m", "zone": "p30"}, "horizon"),
        ({"side": "below", "horizon": "1m", "zone": "p25"}, "zone"),
        ({"side": "below", "horizon": "1m", "zone": "p30", "level": 40.0}, "level"),
        ({"side": "below", "level": 40.0, "note": "x" * 201}, "note"),
    ],
)
def test_bad_alerts_are_refused_naming_the_field(tmp_path, kwargs, field):
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com")
    with pytest.raises(PriceAlertError) as refused:
        price_alerts.add_alert(store, uid, **kwargs)
    assert refused.value.field == field and str(refused.value).startswith(f"{field}: ")
    assert price_alerts.list_alerts(store, uid) == []


def test_at_most_twenty_alerts_and_one_buyer_cannot_touch_anothers(tmp_path):
    store = AccountStore.for_home(tmp_path, env={})
    ana, ben = add_user(store, "ana@example.com"), add_user(store, "ben@example.com")
    for i in range(price_alerts.MAX_ALERTS_PER_USER):
        price_alerts.add_alert(store, ana, "above", level=40.0 + i)
    with pytest.raises(PriceAlertError, match="the most allowed is 20") as refused:
        price_alerts.add_alert(store, ana, "above", level=99.0)
    assert refused.value.status == 409
    bens = price_alerts.add_alert(store, ben, "below", level=30.0)
    assert [a.id for a in price_alerts.list_alerts(store, ben)] == [bens.id]
    anas = price_alerts.list_alerts(store, ana)
    assert not price_alerts.remove_alert(store, ana, bens.id)  # Ana cannot remove Ben's
    assert price_alerts.list_alerts(store, ben)[0].id == bens.id
    assert price_alerts.remove_alert(store, ana, anas[0].id)
    assert not price_alerts.remove_alert(store, ana, anas[0].id)  # already removed
    price_alerts.add_alert(store, ana, "above", level=99.0)  # room again


def test_a_hostile_note_and_name_are_escaped_and_the_link_removes_the_alert(smtp_server, tmp_path):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com", "<img src=x onerror=alert(1)>")
    alert = price_alerts.add_alert(
        store, uid, "below", level=42.0, note="<script>alert('buy')</script>"
    )
    price_alerts.evaluate(store, _day(0, 41.0))
    outbox.deliver(store, send_to(port))
    page = html_of(inbox.mails[0][2])
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#x27;buy&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    token = inbox.mails[0][2]["List-Unsubscribe"].split("token=")[1].strip().rstrip(">")
    assert "price alert is removed" in digest.unsubscribe(store, token)
    assert price_alerts.list_alerts(store, uid) == []
    price_alerts.evaluate(store, _day(1, 43.0))
    price_alerts.evaluate(store, _day(2, 41.0))
    outbox.deliver(store, send_to(port))
    assert len(inbox.mails) == 1 and alert.id


def test_the_sensors_mail_digests_and_alerts_once_and_are_registered(smtp_server, tmp_path):
    inbox, port = smtp_server
    home = build_home(tmp_path / "home", n_days=25)
    store = AccountStore.for_home(home.path, env={})
    uid = add_user(store, "ana@example.com", "Ana")
    digest.set_cadence(store, uid, "daily")
    price_alerts.add_alert(store, uid, "above", level=home.prices[-1] - 1)
    resources = {
        "operations": OperationsResource(
            database=str(home.path / "operations.duckdb"),
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security="none",
            smtp_sender="cbi@example.com",
        )
    }
    sensors = {s.name: s for s in build_buyer_mail_sensors()}
    instance = dg.DagsterInstance.ephemeral()
    results = []
    for _ in range(2):
        for name in ("buyer_digest_sensor", "price_alert_sensor"):
            results.append(
                sensors[name](dg.build_sensor_context(instance=instance, resources=resources))
            )
    assert results[0].cursor == f'{{"as_of": "{home.last_day}"}}'
    assert "1 queued; sent 1" in results[0].skip_reason.skip_message
    assert "1 crossed" in results[1].skip_reason.skip_message
    assert "0 queued; no mail to deliver" in results[2].skip_reason.skip_message
    assert "0 crossed" in results[3].skip_reason.skip_message
    kinds = sorted(
        "digest" if m["X-CBI-Digest-As-Of"] else "price_alert" for _, _, m in inbox.mails
    )
    assert kinds == ["digest", "price_alert"]
    # A new as-of date where the price falls back below: no alert mail, a second digest.
    serve_day(home.path, home.last_day + dt.timedelta(days=3), home.prices[-1] - 2)
    for name in ("buyer_digest_sensor", "price_alert_sensor"):
        sensors[name](dg.build_sensor_context(instance=instance, resources=resources))
    assert len(inbox.mails) == 3 and inbox.mails[2][2]["X-CBI-Digest-As-Of"]
    from cbi_platform.definitions import defs

    names = {s.name for s in defs.sensors}
    assert {"buyer_digest_sensor", "price_alert_sensor"} <= names


def test_without_an_smtp_host_nothing_is_queued(tmp_path):
    home = build_home(tmp_path / "home", n_days=25)
    store = AccountStore.for_home(home.path, env={})
    digest.set_cadence(store, add_user(store, "ana@example.com"), "daily")
    resources = {"operations": OperationsResource(database=str(home.path / "operations.duckdb"))}
    sensor = {s.name: s for s in build_buyer_mail_sensors()}["buyer_digest_sensor"]
    result = sensor(dg.build_sensor_context(resources=resources))
    assert "no SMTP host configured" in result.skip_reason.skip_message
    assert outbox.mails(store) == []


def test_an_alert_removed_while_its_mail_waits_is_not_mailed(smtp_server, tmp_path):
    inbox, port = smtp_server
    store = AccountStore.for_home(tmp_path, env={})
    uid = add_user(store, "ana@example.com", "Ana")
    alert = price_alerts.add_alert(store, uid, "below", level=42.0)
    assert price_alerts.evaluate(store, _day(0, 41.0)).queued == [alert.id]
    assert price_alerts.remove_alert(store, uid, alert.id)
    assert outbox.deliver(store, send_to(port)).sent == [] and not inbox.mails
    assert [r["status"] for r in outbox.mails(store)] == ["superseded"]
    assert _mails_sent(store) == []
