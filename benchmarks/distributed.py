"""The shared-assets job (market data, regimes, volatility) on the simulator: in-process vs the
celery executor with a local Redis and two default-queue workers (plus the gpu worker).

Usage: .venv/bin/python benchmarks/distributed.py
Results: benchmarks/results/distributed.{md,json}, with per-step durations from the event log
and the scaling they imply on N machines.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

JOB = "shared_data_job_celery"


def shared_celery_job():
    """The shared assets and their checks, as a celery job (reconstructed in every worker)."""
    import dagster as dg

    from cbi_platform.defs.distributed import celery_asset_job, route_pool_to_queue
    from cbi_platform.defs.pipeline import ALL_ASSETS, ALL_CHECKS, SHARED_STAGE
    from cbi_platform.defs.resources import build_resources

    job = celery_asset_job(JOB, SHARED_STAGE, broker=os.environ["CBI_CELERY_BROKER"])
    defs = dg.Definitions(
        assets=route_pool_to_queue(ALL_ASSETS),
        asset_checks=ALL_CHECKS,
        jobs=[job],
        resources=build_resources(),
    )
    return defs.resolve_job_def(JOB)


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    import dagster as dg

    starts, ends = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type in (
            dg.DagsterEventType.STEP_SUCCESS,
            dg.DagsterEventType.STEP_FAILURE,
        ):
            ends[event.step_key] = record.timestamp
    return {k: round(ends[k] - starts[k], 2) for k in starts if k in ends}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    warnings.filterwarnings("ignore")
    import dagster as dg

    from cbi_platform import workers

    tmp = Path(tempfile.mkdtemp(prefix="cbi-distributed-"))
    results: dict = {"machine": machine_stamp(), "command": " ".join([sys.executable, *sys.argv])}

    # In-process: one process, steps one after another.
    os.environ["CBI_HOME"] = str(tmp / "inproc")
    from cbi_platform.defs.pipeline import SHARED_STAGE
    from cbi_platform.defs.resources import build_resources
    from cbi_platform.runner import materialize

    (tmp / "dagster_inproc").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp / "dagster_inproc")) as instance:
        t0 = time.perf_counter()
        run = materialize(SHARED_STAGE, resources=build_resources(), instance=instance)
        results["in_process_s"] = round(time.perf_counter() - t0, 2)
        results["in_process_success"] = run.success
        results["in_process_steps_s"] = _step_seconds(instance, run.run_id)

    # Celery: a fresh warehouse, Redis, two default workers and the gpu worker.
    if not workers.redis_available():
        print("redis-server is not installed; skipping the celery run")
        return 1
    os.environ["CBI_HOME"] = str(tmp / "celery")
    port = _free_port()
    broker = workers.broker_url(port)
    os.environ["CBI_CELERY_BROKER"] = broker
    services = tmp / "services"
    try:
        t0 = time.perf_counter()
        workers.start_all(services, port=port, broker=broker)
        results["workers_start_s"] = round(time.perf_counter() - t0, 2)
        (tmp / "dagster_celery").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp / "dagster_celery")) as instance:
            # Run 1: cold workers (each worker process imports the platform on its first step);
            # run 2: the same workers, warm.
            for label in ("cold", "warm"):
                t0 = time.perf_counter()
                run = dg.execute_job(dg.reconstructable(shared_celery_job), instance=instance)
                results[f"celery_{label}_s"] = round(time.perf_counter() - t0, 2)
                results[f"celery_{label}_success"] = run.success
                results[f"celery_{label}_steps_s"] = _step_seconds(instance, run.run_id)
    finally:
        workers.stop_all(services)

    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "distributed.json").write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    steps = results["celery_warm_steps_s"]
    inproc = results["in_process_steps_s"]
    total = sum(inproc.values())
    # The longest dependency chain of the job: raw data -> prices -> the slowest consumer.
    chain = inproc.get("raw_market_data", 0) + inproc.get("market_prices", 0)
    critical = chain + max(inproc.get("volatility_forecasts", 0), inproc.get("detected_regimes", 0))
    overhead = results["celery_warm_s"] - max(critical, total / 2)
    per_step = overhead / max(len(steps), 1)
    results["scaling"] = {
        "sum_of_steps_s": round(total, 2),
        "critical_path_s": round(critical, 2),
        "celery_overhead_s": round(overhead, 2),
    }
    (out / "distributed.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Shared-assets job: in-process vs celery (2 default workers)",
        "",
        f"{m['date']} on {m['machine']} ({m['cpus']} CPUs, {m['memory_gib']} GiB), "
        f"Python {m['python']}. Command: `{results['command']}`",
        "",
        "| executor | wall (s) | success |",
        "|---|---|---|",
        f"| in-process | {results['in_process_s']} | {results['in_process_success']} |",
        f"| celery, 2 workers (+1 gpu), first run (cold workers) | {results['celery_cold_s']} "
        f"| {results['celery_cold_success']} |",
        f"| celery, 2 workers (+1 gpu), second run (warm workers) | {results['celery_warm_s']} "
        f"| {results['celery_warm_success']} |",
        "",
        f"Starting Redis and the three workers (not in the wall times): "
        f"{results['workers_start_s']} s.",
        "",
        "| step | in-process (s) | celery worker, warm (s) |",
        "|---|---|---|",
        *[
            f"| {k} | {inproc.get(k, '')} | {steps.get(k, '')} |"
            for k in sorted(set(inproc) | set(steps))
        ],
        "",
        "## Scaling on N machines (on paper, from the measured step costs)",
        "",
        f"The steps add up to {total:.1f} s; the longest chain (raw_market_data -> "
        f"market_prices -> volatility_forecasts) is {critical:.1f} s. With N workers on N "
        f"machines the wall time is about max({critical:.1f}, {total:.1f}/N) + the celery "
        f"overhead, measured here at {overhead:.1f} s for {len(steps)} steps "
        f"(~{per_step:.2f} s a step: the executor polls every 1 s, each step loads the run and "
        "rebuilds the plan in its worker, events return through Redis), and 2 cores shared by "
        "the orchestrator and the workers. This job is bound by its critical path already at "
        f"N = 2 (total/2 = {total / 2:.1f} s): more machines do not shorten it, and in-process "
        "stays the right executor for it. Celery pays off for jobs of many independent, long "
        "steps (the per-horizon walk-forward, neural training on the one-worker `gpu` queue), "
        "where the sum of step costs divided by N exceeds the longest chain.",
        "",
    ]
    (out / "distributed.md").write_text("\n".join(lines))
    record_run(out / "distributed.md")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
