"""The soak's day loop through a real `dagster-daemon` (issue 21): the simulated clock moves
over three business days and the soak sensor launches exactly one daily refresh per day, each
a success that serves that day's forecast; the daemon killed (SIGKILL) between days and
restarted, as a supervisor would, launches no day twice. A buyer with a daily digest (issue 22
§5) gets it from the same daemon's `buyer_digest_sensor` through a real SMTP server: never two
for one as-of date across the kills, and the last day's arrives."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from cbi_platform.operations.soak import SOAK_DAY_TAG
from cbi_platform_tests.deployment import Deployment, prepare, wait_for
from cbi_platform_tests.operations.conftest import Inbox, free_port

pytestmark = pytest.mark.slow

FRIDAY = dt.date(2025, 6, 6)
DAYS = [FRIDAY, dt.date(2025, 6, 9), dt.date(2025, 6, 10)]  # Fri, (weekend), Mon, Tue


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    from aiosmtpd.controller import Controller

    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, inbox) -> Iterator[Deployment]:
    from cbi_platform.accounts.digest import set_cadence
    from cbi_platform.accounts.store import AccountStore
    from cbi_platform_tests.accounts.mail_helpers import add_user

    smtp = {
        "CBI_SMTP_HOST": "127.0.0.1",
        "CBI_SMTP_PORT": str(inbox[1]),
        "CBI_SMTP_SECURITY": "none",
        "CBI_SMTP_SENDER": "cbi@localhost",
    }
    deployment = prepare(tmp_path_factory.mktemp("soak"), FRIDAY, horizons=("1w",), extra_env=smtp)
    store = AccountStore.for_home(deployment.home, env={})
    set_cadence(store, add_user(store, "buyer@example.com"), "daily")
    try:
        deployment.start("code_server")
        deployment.start("daemon")
        yield deployment
    finally:
        deployment.stop_all()


def _soak_runs(instance) -> list:
    import dagster as dg

    return instance.get_runs(dg.RunsFilter(job_name="daily_refresh_job"))


def _succeeded(instance, day: dt.date):
    import dagster as dg

    runs = instance.get_runs(
        dg.RunsFilter(job_name="daily_refresh_job", tags={SOAK_DAY_TAG: day.isoformat()})
    )
    finished = [r for r in runs if r.is_finished]
    if finished and finished[0].status != dg.DagsterRunStatus.SUCCESS:
        raise AssertionError(f"the refresh for {day} ended {finished[0].status}")
    return finished[0] if finished else None


def test_one_refresh_per_simulated_day_across_daemon_restarts(deployment, inbox):
    import dagster as dg

    from cbi_platform.serving.store import ForecastStore

    instance = deployment.instance()
    for i, day in enumerate(DAYS):
        if i > 0:
            # Between days the daemon dies hard and comes back, as a supervisor would, first on
            # the day before (Sunday: nothing to do; Monday: already refreshed), then on `day`.
            deployment.kill("daemon")
            deployment.set_day(day - dt.timedelta(days=1))
            deployment.start("daemon")
            time.sleep(5)  # sensor ticks on the day before (every 3 s)
        deployment.set_day(day)
        wait_for(
            f"the refresh for {day}",
            lambda d=day: _succeeded(instance, d),
            120,
            deployment.log_tail,
        )
    # One more daemon death after the last request, and a few more sensor ticks: no repeat.
    deployment.kill("daemon")
    deployment.start("daemon")
    ticks = instance.get_ticks(_sensor_origin_id(instance), _sensor_selector_id(instance))
    wait_for(
        "two more soak sensor ticks",
        lambda: (
            len(instance.get_ticks(_sensor_origin_id(instance), _sensor_selector_id(instance)))
            >= len(ticks) + 2
        ),
        60,
        deployment.log_tail,
    )
    runs = _soak_runs(instance)
    assert sorted(r.tags[SOAK_DAY_TAG] for r in runs) == [d.isoformat() for d in DAYS]
    assert sorted(r.tags["dagster/run_key"] for r in runs) == [d.isoformat() for d in DAYS]
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}

    served = ForecastStore(deployment.home / "forecasts.duckdb").history(role="served")
    assert set(served["horizon"]) == {"1w"}
    assert set(DAYS) <= set(served["as_of"].to_list()), served.select("as_of", "created_at")

    # The buyer's digest, from the daemon's own sensor ticks: the last day's arrives, and no
    # as-of date is mailed twice however often the daemon died and its sensors re-ran.
    def digests() -> list[str]:
        return [
            m["X-CBI-Digest-As-Of"]
            for _, rcpt, m in inbox[0].mails
            if m["X-CBI-Digest-As-Of"] and rcpt == ["buyer@example.com"]
        ]

    wait_for(
        "the digest of the last day",
        lambda: DAYS[-1].isoformat() in digests(),
        90,
        deployment.log_tail,
    )
    assert len(digests()) == len(set(digests())), digests()
    assert set(digests()) <= {d.isoformat() for d in served["as_of"].to_list()}


def _sensor_state(instance):
    return next(
        s for s in instance.all_instigator_state() if s.instigator_name == "soak_day_sensor"
    )


def _sensor_origin_id(instance) -> str:
    return _sensor_state(instance).instigator_origin_id


def _sensor_selector_id(instance) -> str:
    return _sensor_state(instance).selector_id
