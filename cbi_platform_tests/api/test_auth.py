"""API keys on every data endpoint, open health/docs/page, and hostile input refused."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cbi_platform.api import create_app
from cbi_platform.api.keys import create_key, revoke_key

DATA_PATHS = (
    "/forecast/1m",
    "/predictions",
    "/regime/current",
    "/explain/1m",
    "/history",
    "/monitoring/performance",
    "/recommendation",
    "/backtest",
)


@pytest.fixture(scope="module")
def anonymous(shared_home):
    return TestClient(create_app(shared_home.path, max_business_days_behind=2))


@pytest.mark.parametrize("path", DATA_PATHS)
def test_data_needs_a_key_401(anonymous, path):
    response = anonymous.get(path)
    assert response.status_code == 401
    assert response.json()["error"] == "missing_key"
    assert "X-API-Key" in response.json()["message"]
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", DATA_PATHS)
def test_unknown_key_403(anonymous, path):
    response = anonymous.get(path, headers={"X-API-Key": "cbi_not-a-real-key"})
    assert response.status_code == 403
    assert response.json() == {"error": "unknown_key", "message": "unknown API key", "status": 403}


def test_key_in_either_header(anonymous, shared_key):
    assert anonymous.get("/forecast/1w", headers={"X-API-Key": shared_key}).status_code == 200
    bearer = {"Authorization": f"Bearer {shared_key}"}
    assert anonymous.get("/forecast/1w", headers=bearer).status_code == 200
    basic = {"Authorization": f"Basic {shared_key}"}
    assert anonymous.get("/forecast/1w", headers=basic).status_code == 401


def test_oversized_or_near_miss_keys_are_unknown(anonymous, shared_key):
    for bad in (shared_key[:-1], shared_key + "x", "x" * 5000, shared_key.upper()):
        assert anonymous.get("/predictions", headers={"X-API-Key": bad}).status_code == 403


def test_revoked_key_403_on_the_next_request(tmp_path, shared_home):
    # A home of its own: revoking must not touch the shared key file.
    home = tmp_path
    (home / "forecasts.snapshots").mkdir()
    src = shared_home.path / "forecasts.snapshots" / "cbi.forecast_history.parquet"
    (home / "forecasts.snapshots" / src.name).write_bytes(src.read_bytes())
    key, record = create_key(home, "buyer")
    client = TestClient(create_app(home, max_business_days_behind=2))
    assert client.get("/forecast/1m", headers={"X-API-Key": key}).status_code == 200
    revoke_key(home, record.prefix)
    response = client.get("/forecast/1m", headers={"X-API-Key": key})
    assert response.status_code == 403
    assert response.json()["error"] == "revoked_key"


@pytest.mark.parametrize("path", ["/health", "/docs", "/openapi.json", "/", "/static/app.js"])
def test_open_paths(anonymous, path):
    assert anonymous.get(path).status_code == 200


@pytest.mark.parametrize(
    "horizon",
    [
        "1w' OR 1=1--",
        "1w; DROP TABLE cbi.forecast_history",
        "2w",
        "1W",
        "../1m",
        "1m%00",
        "<script>alert(1)</script>",
        "%27%20OR%20%271%27=%271",
    ],
)
def test_injection_horizons_are_422(shared_client, horizon):
    for endpoint in ("forecast", "explain"):
        response = shared_client.get(f"/{endpoint}/{horizon}")
        assert response.status_code in (404, 422), (endpoint, horizon)
        if response.status_code == 422:
            body = response.json()
            assert body["error"] == "invalid_request"
            assert "'1w', '1m', '3m', '6m' or '12m'" in body["message"]
            assert "DROP" not in response.text and "<script>" not in response.text


def test_sql_injection_horizon_is_exactly_422(shared_client):
    response = shared_client.get("/forecast/1w' OR 1=1--")
    assert response.status_code == 422


@pytest.mark.parametrize(
    "path",
    [
        "/static/../keys.py",
        "/static/%2e%2e/keys.py",
        "/static/%2e%2e/%2e%2e/settings.py",
        "/static/..%2fapp.py",
        "/static/....//....//etc/passwd",
        "/static/%2e%2e%2f%2e%2e%2fapi_keys.json",
        "/static//etc/passwd",
        "/api_keys.json",
        "/static/api_keys.json",
    ],
)
def test_static_path_traversal_is_refused(anonymous, path):
    response = anonymous.get(path)
    assert response.status_code == 404, path
    assert "sha256" not in response.text and "import" not in response.text


def test_limits_are_validated(shared_client):
    assert shared_client.get("/history", params={"limit": 0}).status_code == 422
    assert shared_client.get("/history", params={"limit": "1; DROP"}).status_code == 422
    assert shared_client.get("/history", params={"limit": 10**9}).status_code == 422


def test_read_only_and_json_errors(shared_client):
    response = shared_client.post("/forecast/1m", json={})
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"
    response = shared_client.get("/no/such/thing")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_page_headers_forbid_foreign_scripts(anonymous):
    csp = anonymous.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert anonymous.get("/static/app.js").headers["x-content-type-options"] == "nosniff"
    assert anonymous.get("/health").headers["x-frame-options"] == "DENY"
