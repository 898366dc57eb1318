"""The buyer's mail on PostgreSQL (the production stack's accounts store): the same outbox,
digest, price-alert and unsubscribe SQL as on SQLite, against a throwaway cluster."""

from __future__ import annotations

import datetime as dt

from cbi_platform.accounts import digest, outbox, price_alerts
from cbi_platform.accounts.price_alerts import Day
from cbi_platform.accounts.store import AccountStore
from cbi_platform_tests.accounts.mail_helpers import add_user, send_to, unsubscribe_token
from cbi_platform_tests.api.conftest import build_home
from cbi_platform_tests.operations import conftest as smtp_fixtures
from cbi_platform_tests.operations import test_backup

smtp_server = smtp_fixtures.smtp_server
postgres_server = test_backup.postgres_server  # skips without PostgreSQL binaries


def test_digest_alerts_and_unsubscribe_on_postgres(postgres_server, smtp_server, tmp_path):
    url, _ = postgres_server
    inbox, port = smtp_server
    store = AccountStore(url("postgres"))
    assert store.dialect == "postgresql" and store.migrate() == 0
    uid = add_user(store, "ana@example.com", "Ana")
    digest.set_cadence(store, uid, "daily")
    home = build_home(tmp_path / "home", n_days=25)
    inputs = digest.read_inputs(home.path, 2)
    assert digest.queue_due_digests(store, inputs) == [uid]
    assert digest.queue_due_digests(store, inputs) == []
    alert = price_alerts.add_alert(store, uid, "below", level=42.0, note="50% of the month")
    for i, close in enumerate([43.0, 41.0, 40.0, 43.0, 41.0]):
        price_alerts.evaluate(store, Day(dt.date(2025, 5, 5 + i), close, None))
    delivery = outbox.deliver(store, send_to(port))
    assert len(delivery.sent) == 3 and len(inbox.mails) == 3
    assert digest.subscription(store, uid)["last_sent_as_of"] == inputs.as_of.isoformat()
    with store.transaction() as tx:
        crossings = tx.execute(
            "SELECT crossing_as_of FROM price_alert_mails WHERE alert_id = ? ORDER BY 1",
            (alert.id,),
        ).all()
    assert [r["crossing_as_of"] for r in crossings] == ["2025-05-06", "2025-05-09"]
    assert digest.unsubscribe(store, unsubscribe_token(inbox.mails[0][2]))
    assert digest.subscription(store, uid)["cadence"] == "off"
    assert store.table_counts()["mail_outbox"] == 3
