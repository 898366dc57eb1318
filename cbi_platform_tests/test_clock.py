"""The platform clock (issue 21's soak): a simulated calendar from a file, re-read each call,
and every "what day is it" path following it."""

from __future__ import annotations

import datetime as dt

import pytest

from cbi_platform import clock
from cbi_platform.market.sources import SourceConfig, reference_date, simulator_end


@pytest.fixture
def clock_file(tmp_path, monkeypatch):
    path = tmp_path / "clock"
    clock.write_clock_file(path, dt.date(2025, 6, 2))
    monkeypatch.setenv(clock.CLOCK_ENV, str(path))
    monkeypatch.delenv(clock.DATA_CLOCK_ENV, raising=False)
    return path


def test_unset_clock_is_the_real_calendar(monkeypatch):
    monkeypatch.delenv(clock.CLOCK_ENV, raising=False)
    assert not clock.simulated()
    assert clock.today() == dt.date.today()
    assert abs((clock.now() - dt.datetime.now()).total_seconds()) < 5
    assert clock.data_through() == dt.date.today()


def test_simulated_clock_is_reread_on_every_call(clock_file):
    assert clock.simulated()
    assert clock.today() == dt.date(2025, 6, 2)
    clock.write_clock_file(clock_file, dt.date(2025, 6, 3))
    assert clock.today() == dt.date(2025, 6, 3)
    assert not list(clock_file.parent.glob(".clock.*"))  # no partial file left behind


def test_now_is_the_real_time_of_day_on_the_simulated_date(clock_file):
    utc = clock.now(dt.UTC)
    real = dt.datetime.now(dt.UTC)
    assert utc.date() == dt.date(2025, 6, 2) and utc.tzinfo is not None
    assert abs(utc.replace(year=real.year, month=real.month, day=real.day) - real).seconds < 5
    assert clock.now().date() == dt.date(2025, 6, 2)


@pytest.mark.parametrize("content", ["", "tomorrow", "2025-13-01", "2025-06-02 2025-06-03"])
def test_a_malformed_clock_file_names_itself(clock_file, content):
    clock_file.write_text(content)
    with pytest.raises(clock.ClockError, match=str(clock_file)):
        clock.today()


def test_a_missing_clock_file_names_itself(tmp_path, monkeypatch):
    monkeypatch.setenv(clock.CLOCK_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(clock.ClockError, match="nowhere"):
        clock.now()


def test_the_data_clock_holds_the_feed_but_never_runs_ahead(clock_file, tmp_path, monkeypatch):
    held = tmp_path / "data_clock"
    clock.write_clock_file(held, dt.date(2025, 5, 30))
    monkeypatch.setenv(clock.DATA_CLOCK_ENV, str(held))
    assert clock.data_through() == dt.date(2025, 5, 30)
    clock.write_clock_file(held, dt.date(2025, 7, 1))
    assert clock.data_through() == dt.date(2025, 6, 2)
    held.unlink()  # released: data through the calendar day again
    assert clock.data_through() == dt.date(2025, 6, 2)
    held.write_text("yesterday")
    with pytest.raises(clock.ClockError, match="data_clock"):
        clock.data_through()


def test_sources_read_the_clock(clock_file):
    live = SourceConfig(kind="simulated", simulator_live=True)
    assert simulator_end(live) == dt.date(2025, 6, 2)
    assert reference_date(live) == dt.date(2025, 6, 2)
    assert reference_date(SourceConfig(kind="bigquery")) == dt.date(2025, 6, 2)
    clock.write_clock_file(clock_file, dt.date(2025, 6, 4))
    assert simulator_end(live) == dt.date(2025, 6, 4)
    fixed = SourceConfig(kind="simulated", simulator_end=dt.date(2020, 1, 3))
    assert simulator_end(fixed) == dt.date(2020, 1, 3)


def test_market_source_resource_delivers_what_the_feed_published_by_the_clock(
    clock_file, tmp_path, monkeypatch
):
    from cbi_platform.defs.resources import MarketSourceResource

    source = MarketSourceResource(kind="simulated", simulator_live=True)  # built once
    assert source.source_config().replay_through == dt.date(2025, 6, 2)
    clock.write_clock_file(clock_file, dt.date(2025, 6, 3))  # read at call time
    assert source.source_config().replay_through == dt.date(2025, 6, 3)
    bundle = source.load()
    assert bundle.prices["published_at"].max() <= dt.date(2025, 6, 3)
    assert bundle.prices["date"].max() == dt.date(2025, 6, 3)

    held = tmp_path / "data_clock"
    clock.write_clock_file(held, dt.date(2025, 5, 30))
    monkeypatch.setenv(clock.DATA_CLOCK_ENV, str(held))
    assert source.load().prices["date"].max() == dt.date(2025, 5, 30)
    assert source.reference_date() == dt.date(2025, 6, 3)  # the held feed reads as stale

    replay = MarketSourceResource(kind="simulated", replay_through="2024-01-05")
    assert replay.source_config().replay_through == dt.date(2024, 1, 5)  # explicit wins


def test_unset_clock_leaves_the_source_as_configured(monkeypatch):
    from cbi_platform.defs.resources import MarketSourceResource

    monkeypatch.delenv(clock.CLOCK_ENV, raising=False)
    assert MarketSourceResource(kind="simulated").source_config().replay_through is None


def test_planted_bias_from_the_environment(tmp_path):
    from cbi_platform.defs.resources import build_resources

    env = {"CBI_HOME": str(tmp_path), "CBI_PLANTED_BIAS": "1w:pm0.05:2025-06-10"}
    assert build_resources(env)["operations"].planted_bias == "1w:pm0.05:2025-06-10"
    assert build_resources({"CBI_HOME": str(tmp_path)})["operations"].planted_bias is None


def test_alert_book_defaults_today_to_the_clock(clock_file, tmp_path):
    from cbi_platform.conditions import Condition
    from cbi_platform.operations.alerts import AlertAnswerError, AlertBook

    book = AlertBook(tmp_path / "operations.duckdb")
    book.update(
        [Condition(key="k", kind="stale_data", firing=True, title="t", as_of=dt.date(2025, 6, 2))]
    )
    # Snoozing until a real-calendar day before the simulated today is "in the past".
    with pytest.raises(AlertAnswerError, match="today is 2025-06-02"):
        book.snooze("k", by="me", reason="r", until=dt.date(2025, 6, 1))
    book.snooze("k", by="me", reason="r", until=dt.date(2025, 6, 2))
    assert book.open_alerts_answered()["status"].to_list() == ["snoozed"]
    clock.write_clock_file(clock_file, dt.date(2025, 6, 3))
    assert book.open_alerts_answered()["status"].to_list() == ["open"]


def test_sensor_interval_is_short_under_the_simulated_clock():
    assert clock.sensor_interval_seconds(60, env={}) == 60
    assert clock.sensor_interval_seconds(600, env={clock.CLOCK_ENV: "/tmp/clock"}) == 5
    setting = {clock.CLOCK_ENV: "/tmp/clock", clock.SENSOR_INTERVAL_ENV: "12"}
    assert clock.sensor_interval_seconds(60, env=setting) == 12
    assert clock.sensor_interval_seconds(60, env={clock.SENSOR_INTERVAL_ENV: "30"}) == 30
    with pytest.raises(ValueError, match=clock.SENSOR_INTERVAL_ENV):
        clock.sensor_interval_seconds(60, env={clock.SENSOR_INTERVAL_ENV: "0"})
