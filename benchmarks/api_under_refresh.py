"""The forecast API under load while a launched daily refresh writes to the same home (issue 19:
p95 <= 50 ms at 20 clients, 0 errors).

Usage: .venv/bin/python benchmarks/api_under_refresh.py --home DIR [--clients 20]
`DIR` is a trained simulator home (e.g. the speed run's, as `make results-api` uses); it is
copied first, so it is left as it was. On the copy:
* `cbi serve` answers GET /forecast/1m to `--clients` keep-alive clients (api_load.py's
  client), which send requests without pause from before the launch until the run has ended;
* a real `dagster-daemon` (queued run coordinator, this checkout's dagster.yaml) runs one
  `daily_refresh_job` submitted with `dagster job launch` for the next simulated business day
  (refresh.py's `launched`), which writes the warehouse and publishes the new snapshot the
  API serves.
Latency is reported for the requests sent while the run's worker was running (from the run's
start to its end in the instance: the writing window) and for the whole load. The answer to
/forecast/1m is compared before and after, to show the writer published while the API served.
Results: benchmarks/results/api_under_refresh.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402
from api_load import (  # noqa: E402
    TARGET_P95_MS,
    _exchange,
    _free_port,
    _percentile,
    _wait_ready,
)
from refresh import FIRST_DAY, business_days, launched  # noqa: E402

MAX_REQUESTS = 500_000  # a bound, whatever happens to the run


async def _client(port, path, auth, stop, samples, errors) -> None:
    """Send requests back to back until `stop` is set; (wall-clock start, latency, status)."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while not stop.is_set() and len(samples) < MAX_REQUESTS:
            at, started = time.time(), time.perf_counter()
            try:
                status, body = await _exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append((at, repr(exc)))
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            samples.append((at, time.perf_counter() - started, status))
            if status != 200:
                errors.append((at, f"{status}: {body[:200]!r}"))
    finally:
        writer.close()


def _get(port: int, path: str, key: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": key})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _stats(samples: list[tuple[float, float, int]]) -> dict:
    lat = sorted(1000 * s[1] for s in samples)
    if not lat:
        return {"n": 0}
    return {
        "n": len(lat),
        "p50": round(_percentile(lat, 50), 2),
        "p95": round(_percentile(lat, 95), 2),
        "p99": round(_percentile(lat, 99), 2),
        "mean": round(statistics.fmean(lat), 2),
        "max": round(lat[-1], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--path", default="/forecast/1m")
    args = parser.parse_args()
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from cbi_platform.api.keys import create_key

    work = Path(tempfile.mkdtemp(prefix="cbi-api-refresh-"))
    home = work / "home"
    shutil.copytree(args.home.resolve(), home)
    key, _ = create_key(home, f"api-under-refresh-{int(time.time())}")
    day = business_days(FIRST_DAY, 1)[0]
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cbi_platform.cli", "serve", "--home", str(home), "--port",
         str(port), "--log-level", "warning"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    samples: list[tuple[float, float, int]] = []
    errors: list[tuple[float, str]] = []
    stop = threading.Event()
    try:
        _wait_ready(port, server)
        before = _get(port, args.path, key)
        auth = f"X-API-Key: {key}"

        async def load() -> None:
            one = (port, args.path, auth, stop, samples, errors)
            await asyncio.gather(*(_client(*one) for _ in range(args.clients)))

        loader = threading.Thread(target=lambda: asyncio.run(load()), daemon=True)
        load_started = time.time()
        loader.start()
        try:
            refresh = launched(ROOT, home, day, 1)
        finally:
            stop.set()
            loader.join(timeout=60)
        load_ended = time.time()
        after = _get(port, args.path, key)
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(refresh["instance"]))
        (record,) = instance.get_run_records()
        run_start, run_end = record.start_time, record.end_time
        shutil.rmtree(refresh["instance"], ignore_errors=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)  # the home's copy, also when the run failed

    writing = [s for s in samples if run_start <= s[0] <= run_end]
    window_errors = [e for e in errors if run_start <= e[0] <= run_end]
    published = before != after
    stats_writing, stats_all = _stats(writing), _stats(samples)
    met = (
        stats_writing.get("n", 0) > 0
        and stats_writing["p95"] <= TARGET_P95_MS
        and not window_errors
        and published
    )
    result = {
        "benchmark": "api_under_refresh",
        "command": ".venv/bin/python benchmarks/api_under_refresh.py --home <trained home> "
        f"--clients {args.clients} --path {args.path}",
        **machine_stamp(),
        "clients": args.clients,
        "endpoint": args.path,
        "refresh_day": day.isoformat(),
        "refresh": refresh["runs"][0],
        "writing_window_seconds": round(run_end - run_start, 1),
        "load_seconds": round(load_ended - load_started, 1),
        "latency_ms_while_writing": stats_writing,
        "latency_ms_whole_load": stats_all,
        "errors_while_writing": len(window_errors),
        "errors_total": len(errors),
        "error_samples": [e[1] for e in errors[:5]],
        "answer_changed_by_the_refresh": published,
        "target_p95_ms": TARGET_P95_MS,
        "target_met": met,
    }
    out = ROOT / "benchmarks" / "results" / "api_under_refresh"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    w, a = stats_writing, stats_all
    md = f"""# Forecast API under load while a launched refresh writes

`{result["command"]}`

{result["date"]} on {result["machine"]} ({result["cpus"]} CPUs, {result["memory_gib"]} GiB).
`cbi serve` (uvicorn, 1 worker process) on a copy of the trained home; {args.clients}
keep-alive clients with an API key send GET `{args.path}` back to back; meanwhile a real
`dagster-daemon` runs one `daily_refresh_job` for {day}, submitted with `dagster job launch`,
which writes the warehouse and publishes the snapshot the API serves. All on the same cores.

- the refresh: {refresh["runs"][0]["status"]}, {refresh["runs"][0]["submitted_to_success_seconds"]} s
  from submission to RUN_SUCCESS; its worker ran {result["writing_window_seconds"]} s (the
  writing window)
- the answer to `{args.path}` changed across the refresh (the new day was published while the
  API served): {published}
- **target (p95 <= {TARGET_P95_MS:g} ms while the refresh writes, 0 errors): {"met" if met else "missed"}**

| requests | n | p50 ms | p95 ms | p99 ms | mean ms | max ms | errors |
|---|---|---|---|---|---|---|---|
| sent while the refresh's worker ran | {w.get("n")} | {w.get("p50")} | **{w.get("p95")}** | {w.get("p99")} | {w.get("mean")} | {w.get("max")} | {len(window_errors)} |
| the whole load ({result["load_seconds"]} s) | {a.get("n")} | {a.get("p50")} | {a.get("p95")} | {a.get("p99")} | {a.get("mean")} | {a.get("max")} | {len(errors)} |
"""  # noqa: E501
    out.with_suffix(".md").write_text(md)
    record_run(out.with_suffix(".md"))
    print(md)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
