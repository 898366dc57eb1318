"""Load test of the forecast API: uvicorn on loopback, 20 concurrent keep-alive clients, a
bounded number of requests to /forecast/1m; p50/p95/p99 latency, throughput and errors
(target: p95 <= 50 ms at 20 clients).

Usage: .venv/bin/python benchmarks/api_load.py --home DIR [--requests 2000] [--clients 20]
`DIR` is a platform home with published forecasts (e.g. the `.cbi_home` of `make run`). The
server is `cbi serve` in its own process on 127.0.0.1 (a free port); the clients are one
asyncio loop in this process speaking plain HTTP/1.1 over keep-alive connections, so the
client costs little next to the server (both share this machine's cores). A temporary API
key is created for the run and revoked at the end (its revoked hash stays in the home's key
file, named `api-load-<time>`). Everything stops by itself: the request count is bounded and
the whole run times out after --timeout seconds.
With `--auth cookie` the clients are signed-in people instead: a temporary buyer is added to
the home's accounts store and each client signs in once through `POST /session` (email and
password, argon2 verified, before the timed requests; 20 clients stay within the sign-in limit of
20 tries per address in 5 minutes) and sends the `cbi_session` cookie it got; the buyer and
his sessions are removed at the end.
Results: benchmarks/results/api_load.{md,json} (api_load_cookie.{md,json} with --auth cookie).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

TARGET_P95_MS = 50.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not answer /health in time")


async def _exchange(reader, writer, request: bytes) -> tuple[int, bytes]:
    """Send one keep-alive HTTP/1.1 request and read its answer: (status, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def _client(
    port: int, path: str, auth: str, claim, latencies: list[float], statuses: dict, errors: list
) -> None:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while claim():
            started = time.perf_counter()
            try:
                status, body = await _exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(repr(exc))
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200:
                errors.append(f"{status}: {body[:200]!r}")
    finally:
        writer.close()


async def _load(port: int, path: str, auths: list[str], requests: int) -> dict:
    remaining = [requests]

    def claim() -> bool:
        if remaining[0] <= 0:
            return False
        remaining[0] -= 1
        return True

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(port, path, auth, claim, latencies, statuses, errors) for auth in auths)
    )
    wall = time.perf_counter() - started
    return {"latencies": latencies, "statuses": statuses, "errors": errors, "wall": wall}


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of sorted values."""
    rank = max(1, int(-(-q * len(sorted_values) // 100)))
    return sorted_values[rank - 1]


def _sign_in(port: int, email: str, password: str) -> str:
    """POST /session as the page does; the `Cookie:` header line of the session it set."""
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/session",
        data=json.dumps({"email": email, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        cookie = response.headers["set-cookie"].split(";", 1)[0]
    if not cookie.startswith("cbi_session="):
        raise SystemExit(f"sign-in set no session cookie: {cookie!r}")
    return f"Cookie: {cookie}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, help="platform home with published forecasts")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--path", default="/forecast/1m")
    parser.add_argument("--timeout", type=float, default=300.0, help="whole-run limit, seconds")
    parser.add_argument("--auth", choices=["key", "cookie"], default="key")
    parser.add_argument("--out", help="default: benchmarks/results/api_load[_cookie]")
    args = parser.parse_args()
    suffix = "_cookie" if args.auth == "cookie" else ""
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"api_load{suffix}")
    if not 1 <= args.requests <= 100_000 or not 1 <= args.clients <= 200:
        parser.error("--requests must be 1..100000 and --clients 1..200")
    home = Path(args.home).resolve()
    from cbi_platform.api.keys import create_key, revoke_key
    from cbi_platform.api.sessions import SESSION_CACHE_S

    name = f"api-load-{int(time.time())}"
    key, record = create_key(home, name)
    auths = [f"X-API-Key: {key}"] * args.clients
    if args.auth == "cookie":
        import secrets as random_secrets

        from cbi_platform.accounts.store import AccountStore
        from cbi_platform.accounts.users import Users

        accounts = AccountStore.for_home(home)
        users = Users(accounts)
        password = random_secrets.token_urlsafe(24)
        buyer = users.add(f"{name}@example.com", name, "buyer", password)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cbi_platform.cli", "serve", "--home", str(home), "--port",
         str(port), "--log-level", "warning"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_ready(port, server)
        if args.auth == "cookie":
            auths = [_sign_in(port, buyer.email, password) for _ in range(args.clients)]

        async def run() -> tuple[dict, dict]:
            warm = await _load(port, args.path, auths, args.warmup)
            measured = await _load(port, args.path, auths, args.requests)
            return warm, measured

        warm, measured = asyncio.run(asyncio.wait_for(run(), timeout=args.timeout))
        cpu = None
        try:
            fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        revoke_key(home, name)
        if args.auth == "cookie":
            users.remove(buyer.email)  # his sessions go with him
            with accounts.transaction() as tx:  # and his sign-ins: the next run signs in again
                tx.execute("DELETE FROM signin_attempts WHERE email = ?", (buyer.email,))

    lat_ms = sorted(1000 * v for v in measured["latencies"])
    n_ok = measured["statuses"].get(200, 0)
    result = {
        "benchmark": "api_load",
        "command": " ".join([".venv/bin/python", "benchmarks/api_load.py", *sys.argv[1:]]),
        **machine_stamp(),
        "home": str(home),
        "endpoint": args.path,
        "server": "uvicorn, 1 worker process (`cbi serve`), loopback",
        "clients": args.clients,
        "requests": args.requests,
        "warmup_requests": args.warmup,
        "completed": len(lat_ms),
        "ok_200": n_ok,
        "errors": len(measured["errors"]),
        "error_samples": measured["errors"][:5],
        "statuses": {str(k): v for k, v in sorted(measured["statuses"].items())},
        "wall_s": round(measured["wall"], 3),
        "throughput_rps": round(len(lat_ms) / measured["wall"], 1),
        "latency_ms": {
            "p50": round(_percentile(lat_ms, 50), 2),
            "p95": round(_percentile(lat_ms, 95), 2),
            "p99": round(_percentile(lat_ms, 99), 2),
            "mean": round(statistics.fmean(lat_ms), 2),
            "max": round(lat_ms[-1], 2),
        },
        "server_cpu_s_total": cpu,
        "target_p95_ms": TARGET_P95_MS,
        "auth": "a session cookie per client, each signed in once through POST /session "
        "(a temporary buyer, removed after the run)"
        if args.auth == "cookie"
        else "an API key",
        "key": f"temporary key {record.prefix}... ({name}), revoked after the run",
    }
    result["target_met"] = result["latency_ms"]["p95"] <= TARGET_P95_MS and result["errors"] == 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lat = result["latency_ms"]
    verdict = "met" if result["target_met"] else "missed"
    md = f"""# Forecast API load test

`{result["command"]}`

{result["date"]} on {result["machine"]} ({result["cpus"]} CPUs, {result["memory_gib"]} GiB,
{result["platform"]}, Python {result["python"]}).

{result["server"]}; {args.clients} concurrent keep-alive clients (one asyncio loop in the
benchmark process, on the same cores) sending {args.requests} GET `{args.path}` with
{result["auth"]},
after {args.warmup} warm-up requests; home `{home}`.

| metric | value |
|---|---|
| requests completed | {len(lat_ms)} ({n_ok} x 200) |
| errors | {result["errors"]} |
| latency p50 | {lat["p50"]} ms |
| latency p95 | **{lat["p95"]} ms** (target <= {TARGET_P95_MS:.0f} ms: {verdict}) |
| latency p99 | {lat["p99"]} ms |
| latency mean / max | {lat["mean"]} / {lat["max"]} ms |
| throughput | {result["throughput_rps"]} requests/s |
| wall time | {result["wall_s"]} s |
| server CPU (whole run incl. start-up) | {cpu if cpu is None else round(cpu, 1)} s |

Each answer comes from memory: the snapshot is parsed once, and each request costs one
`os.stat` of it plus the key check (one SHA-256 and a constant-time compare per stored key),
or with a cookie one SHA-256 of the session id and a lookup in the in-memory session cache
(the accounts store is read once per session per {SESSION_CACHE_S:.0f} s).
"""
    out.with_suffix(".md").write_text(md)
    record_run(out.with_suffix(".md"))
    print(md)
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
