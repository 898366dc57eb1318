"""Sensors of the buyer's mail (issue 22 §5-§6): the digest and the price alerts. Thin: the logic
is `cbi_platform.accounts.mail_ticks`; mails go through the outbox of the accounts store."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from cbi_platform import clock
from cbi_platform.accounts.mail_ticks import digest_tick, price_alert_tick
from cbi_platform.accounts.outbox import Send, smtp_send
from cbi_platform.accounts.store import AccountStore
from cbi_platform.defs.resources import OperationsResource


def buyer_send(operations: OperationsResource) -> Send | None:
    """The platform's SMTP settings (the engineers' alert path), each mail to one buyer; None
    when no SMTP host is configured."""
    if not operations.smtp_host:
        return None
    from cbi_platform.operations.alerts import SmtpSettings

    settings = SmtpSettings(
        host=operations.smtp_host,
        port=operations.smtp_port,
        security=operations.smtp_security,
        sender=operations.smtp_sender or "",
        recipients=(operations.smtp_sender or "",),  # replaced by the buyer's address per mail
        username=operations.smtp_username,
        password=operations.smtp_password,
    )
    return smtp_send(settings)


def _home(operations: OperationsResource) -> Path:
    return Path(operations.database).parent


def build_buyer_mail_sensors() -> list[dg.SensorDefinition]:
    @dg.sensor(
        name="buyer_digest_sensor",
        minimum_interval_seconds=clock.sensor_interval_seconds(300),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When the served forecasts' as-of date advances: each buyer's digest (daily "
        "or weekly, his choice), once per as-of date, through the accounts outbox (SMTP).",
    )
    def buyer_digest_sensor(context: dg.SensorEvaluationContext, operations: OperationsResource):
        home = _home(operations)
        tick = digest_tick(
            AccountStore.for_home(home),
            home,
            buyer_send(operations),
            context.cursor,
            max_business_days_behind=operations.config().refresh.max_business_days_behind,
        )
        return dg.SensorResult(cursor=tick.cursor, skip_reason=tick.summary)

    @dg.sensor(
        name="price_alert_sensor",
        minimum_interval_seconds=clock.sensor_interval_seconds(300),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Each buyer's price alerts against the newest settle: one mail per "
        "crossing (dedup: alert and as-of date), through the accounts outbox (SMTP).",
    )
    def price_alert_sensor(context: dg.SensorEvaluationContext, operations: OperationsResource):
        home = _home(operations)
        tick = price_alert_tick(
            AccountStore.for_home(home), home, buyer_send(operations), context.cursor
        )
        return dg.SensorResult(cursor=tick.cursor, skip_reason=tick.summary)

    return [buyer_digest_sensor, price_alert_sensor]
