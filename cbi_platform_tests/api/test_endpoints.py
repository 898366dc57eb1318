"""Every endpoint's content on a small home written through the platform's writers."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from cbi_platform.api import create_app
from cbi_platform.api.keys import create_key
from cbi_platform.serving.store import ForecastStore
from cbi_platform.settings import HORIZONS
from cbi_platform_tests.api.conftest import DRIVERS_1M, forecast_row


def test_forecast_carries_price_zones_statement_and_version(shared_client, shared_home):
    body = shared_client.get("/forecast/1m").json()
    price = shared_home.prices[-1]
    assert body["horizon"] == "1m" and body["horizon_days"] == 21
    assert body["as_of"] == str(shared_home.last_day)
    assert body["price"] == pytest.approx(price)
    assert body["forecast"] == pytest.approx(price * 0.97)  # the served row, not the shadow's
    zones = body["target_zones"]
    assert list(zones) == ["p10", "p30", "p50", "p70", "p90"]
    assert zones["p10"] < zones["p30"] < zones["p50"] < zones["p70"] < zones["p90"]
    assert zones["p50"] == pytest.approx(price * 0.97)
    assert body["statement"].startswith("41% probability ZL is between")
    assert body["band"]["probability"] == pytest.approx(0.41)
    assert body["model_version"] == "cbi-zl-1m/v1"
    assert body["provisional"] is False and body["failed_gates"] == []
    assert body["served_is_random_walk"] is False


def test_provisional_forecast_says_which_gates_failed(shared_client):
    body = shared_client.get("/forecast/12m").json()
    assert body["provisional"] is True
    assert body["failed_gates"] == ["90% coverage 0.740 is not within 5% of 0.90"]
    assert body["statement"].startswith("PROVISIONAL")
    assert body["served_is_random_walk"] is True


def test_predictions_list_every_horizon_and_never_a_shadow_row(shared_client, shared_home):
    body = shared_client.get("/predictions").json()
    assert [f["horizon"] for f in body["forecasts"]] == list(HORIZONS)
    assert body["as_of"] == str(shared_home.last_day)
    assert all(f["forecast"] != 999.0 for f in body["forecasts"])


def test_regime_current(shared_client, shared_home):
    body = shared_client.get("/regime/current").json()
    assert body["regime"] == "bull"
    assert body["probabilities"] == pytest.approx(
        {"bull": 0.70, "normal": 0.20, "bear": 0.08, "crisis": 0.02}
    )
    assert "bull" in body["text"] and str(shared_home.last_day) in body["text"]


def test_explain_lists_drivers_in_words_largest_first(shared_client):
    body = shared_client.get("/explain/1m").json()
    assert body["served_is_random_walk"] is False
    pcts = [d["contribution_pct"] for d in body["drivers"]]
    assert pcts == sorted(pcts, key=abs, reverse=True)
    assert len(body["drivers"]) == len(DRIVERS_1M)
    first = body["drivers"][0]
    assert first["feature"] == "f_zl_vol63" and first["direction"] == "up"
    assert first["description"].startswith("ZL 63-day volatility")
    assert "up by 0.69%" in first["description"]
    down = next(d for d in body["drivers"] if d["feature"] == "f_zl_mom63")
    assert down["direction"] == "down" and "down by 0.39%" in down["description"]
    assert "largest driver" in body["summary"]


def test_explain_says_plainly_when_the_served_forecast_is_the_random_walk(shared_client):
    body = shared_client.get("/explain/3m").json()
    assert body["served_is_random_walk"] is True
    assert body["summary"].startswith("The served 3m forecast is the random walk")
    assert "not used (ridge)" in body["summary"]
    assert [d["used"] for d in body["drivers"]] == [False]
    # The note the platform writes is not mistaken for a driver.
    assert all("random walk here" not in d["description"] for d in body["drivers"])


def test_monitoring_scores_matured_forecasts_next_to_the_random_walk(shared_client, shared_home):
    body = shared_client.get("/monitoring/performance").json()
    rows = {r["horizon"]: r for r in body["horizons"]}
    assert list(rows) == list(HORIZONS)
    # 60 business days of daily forecasts: 55 1w and 39 1m forecasts have a close on their
    # target date; 3m and longer cannot have matured.
    assert rows["1w"]["n"] == 55 and rows["1m"]["n"] == 39
    assert rows["3m"]["n"] == 0 and rows["3m"]["verdict"] == "no served forecast has matured yet"
    # Independent check of 1w: forecast = 1.005 x price, actual = the close 5 days later.
    prices = shared_home.prices
    errors = [abs(1.005 * prices[i] - prices[i + 5]) for i in range(len(prices) - 5)]
    rw_errors = [abs(prices[i] - prices[i + 5]) for i in range(len(prices) - 5)]
    mape = sum(e / prices[i + 5] for i, e in enumerate(errors)) / len(errors) * 100
    one = rows["1w"]
    assert one["mape"] == pytest.approx(mape)
    assert one["rel_mae"] == pytest.approx(sum(errors) / sum(rw_errors))
    assert one["rw_mape"] == pytest.approx(
        sum(e / prices[i + 5] for i, e in enumerate(rw_errors)) / len(errors) * 100
    )
    assert 0 <= one["coverage80"] <= 1 and one["mase"] > 0
    assert "random walk" in one["verdict"]
    assert body["closes_through"] == str(shared_home.last_day)


def test_recommendation_is_the_latest_logged_row(shared_client, shared_home):
    body = shared_client.get("/recommendation").json()
    assert body["as_of"] == str(shared_home.last_day)
    assert body["action"] == "buy" and body["buy_lb"] == 180000.0
    assert body["reason"].startswith("Price is inside the lower target zone")
    assert body["text"].startswith(f"Today ({shared_home.last_day}) the cvar policy says BUY")
    assert body["record"]["n_windows"] == 72
    assert body["forecast_versions"]["1m"] == "cbi-zl-1m/v1"


def test_backtest_reads_the_policy_record_and_says_where_the_report_is(shared_client, shared_home):
    body = shared_client.get("/backtest").json()
    assert body["recommended_policy"] == "cvar"
    assert body["recommended"]["mean_savings_cents"] == pytest.approx(-0.024)
    even = next(p for p in body["policies"] if p["policy"] == "even")
    assert even["p_bootstrap"] is None  # NaN in the file: null in JSON
    assert body["report_path"] == str(shared_home.path / "procurement" / "backtest.md")
    assert body["report_exists"] is True and body["plot_exists"] is False


def test_history_gives_the_served_closes(shared_client, shared_home):
    body = shared_client.get("/history", params={"limit": 10}).json()
    assert [c["date"] for c in body["closes"]] == [str(d) for d in shared_home.days[-10:]]
    assert [c["price"] for c in body["closes"]] == pytest.approx(shared_home.prices[-10:])


def test_health_is_open_and_reports_freshness(shared_client, shared_home):
    body = shared_client.get("/health", headers={"X-API-Key": ""}).json()
    assert body["status"] == "ok"
    assert body["data_last_date"] == str(shared_home.last_day)
    assert body["business_days_behind"] == 0 and body["max_business_days_behind"] == 2
    assert body["last_refresh_at"] is not None and body["last_forecast_at"] is not None


def test_health_says_stale_with_200(tmp_path):
    row = forecast_row(dt.date(2025, 3, 3), "1w", 44.0)
    row.update(data_last_date=dt.date(2025, 2, 24), data_business_days_behind=5)
    ForecastStore(tmp_path / "forecasts.duckdb").append([row])
    client = TestClient(create_app(tmp_path, max_business_days_behind=2))
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "stale" and "5 business day(s) behind" in body["message"]


def test_empty_home_answers_404_with_what_to_run(tmp_path):
    key, _ = create_key(tmp_path, "empty")
    client = TestClient(create_app(tmp_path, max_business_days_behind=2))
    client.headers["X-API-Key"] = key
    for path in ("/forecast/1m", "/predictions", "/explain/1w", "/monitoring/performance"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {
            "error": "not_published",
            "message": "no forecasts yet: run `make run`",
            "status": 404,
        }
    assert client.get("/recommendation").json()["message"].startswith("no recommendation yet")
    assert client.get("/backtest").status_code == 404
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "no_data"


def test_json_has_no_nan(shared_client):
    for path in ("/predictions", "/monitoring/performance", "/backtest", "/recommendation"):
        text = shared_client.get(path).text
        assert "NaN" not in text and "Infinity" not in text, path


def test_openapi_documents_every_endpoint(shared_client):
    assert shared_client.get("/docs").status_code == 200
    spec = shared_client.get("/openapi.json").json()
    for path in (
        "/forecast/{horizon}",
        "/predictions",
        "/regime/current",
        "/explain/{horizon}",
        "/monitoring/performance",
        "/recommendation",
        "/backtest",
        "/health",
    ):
        assert path in spec["paths"], path
    horizon = spec["components"]["schemas"]["Horizon"]
    assert horizon["enum"] == list(HORIZONS)
    assert {"APIKeyHeader", "HTTPBearer"} <= set(spec["components"]["securitySchemes"])


def test_meta_serves_the_one_horizon_table_to_the_page_without_a_key(tmp_path):
    from cbi_platform.settings import HORIZON_NAMES

    client = TestClient(create_app(tmp_path, max_business_days_behind=2))  # an empty home
    body = client.get("/meta").json()
    assert [(h["key"], h["days"], h["name"]) for h in body["horizons"]] == [
        (h, days, HORIZON_NAMES[h]) for h, days in HORIZONS.items()
    ]
    assert body["zone_levels"] == ["p10", "p30", "p50", "p70", "p90"]
    assert "/meta" in client.get("/openapi.json").json()["paths"]
