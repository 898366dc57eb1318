"""Served from memory, refreshed when a snapshot changes; never a DuckDB connection."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest
from fastapi.testclient import TestClient

from cbi_platform.api import create_app
from cbi_platform.api.cache import CachedFile
from cbi_platform.api.keys import create_key
from cbi_platform.settings import HORIZONS
from cbi_platform_tests.api.conftest import build_home, forecast_row

ALL_PATHS = (
    "/forecast/1m",
    "/predictions",
    "/regime/current",
    "/explain/3m",
    "/history",
    "/monitoring/performance",
    "/recommendation",
    "/backtest",
    "/health",
)


@pytest.fixture
def fresh(tmp_path):
    home = build_home(tmp_path / "home", n_days=30)
    key, _ = create_key(home.path, "cache")
    client = TestClient(create_app(home.path, max_business_days_behind=2))
    client.headers["X-API-Key"] = key
    return home, client


def test_a_new_forecast_is_served_on_the_next_request(fresh):
    home, client = fresh
    reader = client.app.state.reader
    assert client.get("/forecast/1m").json()["as_of"] == str(home.last_day)
    for _ in range(20):
        client.get("/forecast/1m")
    assert reader.forecasts.loads == 1  # unchanged file: parsed once
    new_day = home.last_day + dt.timedelta(days=3 if home.last_day.weekday() == 4 else 1)
    home.store.append([forecast_row(new_day, h, 51.23) for h in HORIZONS])
    body = client.get("/forecast/1m").json()
    assert body["as_of"] == str(new_day) and body["price"] == 51.23
    assert client.get("/history").json()["closes"][-1] == {"date": str(new_day), "price": 51.23}
    assert reader.forecasts.loads == 2


def test_a_new_recommendation_is_served_on_the_next_request(fresh):
    from cbi_platform.procurement.live import RecommendationLog

    home, client = fresh
    before = client.get("/recommendation").json()
    new_day = home.last_day + dt.timedelta(days=7)
    RecommendationLog(home.path / "operations.duckdb").append(
        {
            **{k: before[k] for k in ("policy", "price", "total_lb", "reason", "text")},
            "as_of": new_day,
            "window_start": new_day,
            "window_end": new_day,
            "action": "wait",
            "buy_lb": 0.0,
            "remaining_lb": 1.0,
            "days_left": 5,
            "record": before["record"],
            "forecast_versions": {},
        }
    )
    after = client.get("/recommendation").json()
    assert after["as_of"] == str(new_day) and after["action"] == "wait"


def test_no_request_opens_a_duckdb_file(fresh, monkeypatch):
    home, client = fresh

    def refuse(*args, **kwargs):
        raise AssertionError("the API opened a DuckDB connection")

    monkeypatch.setattr(duckdb, "connect", refuse)
    fresh_client = TestClient(create_app(home.path, max_business_days_behind=2))
    fresh_client.headers.update(client.headers)
    for path in ALL_PATHS:
        assert fresh_client.get(path).status_code == 200, path


def test_cached_file_reloads_on_replace_and_forgets_a_removed_file(tmp_path):
    path = tmp_path / "x.json"
    cached = CachedFile(path, lambda data: data.decode())
    assert cached.get() is None
    path.write_text("one")
    assert cached.get() == "one" and cached.get() == "one"
    assert cached.loads == 1
    tmp = tmp_path / "x.tmp"
    tmp.write_text("two")
    tmp.replace(path)
    assert cached.get() == "two" and cached.loads == 2
    path.unlink()
    assert cached.get() is None
