"""The API under real uvicorn on a loopback port: keys, content, raw hostile requests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from cbi_platform_tests.api.conftest import free_port


def _get(url: str, key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _raw(port: int, target: str) -> tuple[int, bytes]:
    """One request with `target` sent byte for byte (no client-side normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_uvicorn_serves_the_api(live_server, shared_key, shared_home):
    status, body = _get(f"{live_server.url}/forecast/1m", shared_key)
    assert status == 200 and body["as_of"] == str(shared_home.last_day)
    assert _get(f"{live_server.url}/forecast/1m")[0] == 401
    assert _get(f"{live_server.url}/forecast/1m", "cbi_wrong")[0] == 403
    status, body = _get(f"{live_server.url}/health")
    assert status == 200 and body["status"] == "ok"


@pytest.mark.parametrize(
    "target",
    [
        "/static/../keys.py",
        "/static/../../settings.py",
        "/static/..%2fkeys.py",
        "/static/%2e%2e/%2e%2e/storage.py",
        "/static/%2e%2e%2f%2e%2e%2fapi_keys.json",
        "/static/../../../../../../etc/passwd",
    ],
)
def test_raw_path_traversal_is_refused(live_server, target):
    status, body = _raw(live_server.port, target)
    assert status == 404, target
    assert b"import" not in body and b"root:" not in body


def test_raw_sql_injection_horizon_is_422(live_server, shared_key):
    target = "/forecast/1w'%20OR%201=1--"
    request = (
        f"GET {target} HTTP/1.1\r\nHost: x\r\nX-API-Key: {shared_key}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as conn:
        conn.sendall(request.encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 422")
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"] == "invalid_request"


def test_cbi_serve_starts_uvicorn_on_the_home(shared_home, tmp_path):
    port = free_port()
    env = {**os.environ, "CBI_HOME": str(shared_home.path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "cbi_platform.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/health")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"cbi serve did not start: {process.stdout.read().decode()}")
                time.sleep(0.2)
        assert status == 200 and body["data_last_date"] == str(shared_home.last_day)
    finally:
        process.terminate()
        process.wait(timeout=10)
