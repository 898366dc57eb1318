"""Health checks: each answers (ok, a short detail) within a couple of seconds, never raises."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


def http_get(url: str, timeout: float = 3.0) -> Health:
    """2xx from GET `url`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return Health(200 <= response.status < 300, f"GET {url}: HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        return Health(False, f"GET {url}: HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        return Health(False, f"GET {url}: {exc}")


def tcp_connect(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> Health:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return Health(True, f"tcp {host}:{port} accepts")
    except OSError as exc:
        return Health(False, f"tcp {host}:{port}: {exc}")


def redis_ping(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> Health:
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(b"PING\r\n")
            reply = connection.recv(64)
    except OSError as exc:
        return Health(False, f"redis {host}:{port}: {exc}")
    return Health(
        reply.startswith(b"+PONG"), f"redis PING: {reply.strip().decode(errors='replace')}"
    )


def grpc_serving(port: int, host: str = "127.0.0.1", timeout: float = 3.0) -> Health:
    """The standard gRPC health service (Dagster's code server registers it)."""
    try:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:  # pragma: no cover - dagster depends on both
        return tcp_connect(port, host)
    try:
        with grpc.insecure_channel(f"{host}:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.RpcError as exc:
        return Health(False, f"grpc {host}:{port}: {exc.code().name}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return Health(status == "SERVING", f"grpc health: {status}")


def dagster_daemon_heartbeat(
    port: int, user: str, password: str, database: str, max_age_seconds: float = 150.0
) -> Health:
    """The daemon's newest heartbeat in the instance database is recent (it beats every 30 s)."""
    try:
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1",
            port=port,
            user=user,
            password=password,
            dbname=database,
            connect_timeout=3,
        )
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        return Health(False, f"instance database: {type(exc).__name__}")
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT EXTRACT(EPOCH FROM (now() AT TIME ZONE 'UTC') - max(timestamp)) "
                "FROM daemon_heartbeats"
            )
            (age,) = cursor.fetchone()
    except Exception as exc:  # noqa: BLE001
        return Health(False, f"daemon heartbeats: {type(exc).__name__}")
    finally:
        connection.close()
    if age is None:
        return Health(False, "no daemon heartbeat yet")
    age = float(age)
    return Health(age <= max_age_seconds, f"last daemon heartbeat {age:.0f} s ago")
