"""One horizon x every model group: in-process vs the celery executor (local Redis, two
default-queue workers and the one-worker `gpu` queue), with per-step durations from the event
log, the worker each step ran on, and the scaling they imply on N machines.

The upstream assets (market data, news, regimes and `features` for the horizon) are materialized
in-process once (not timed) in a home folder that is then copied twice, so both runs start from
the same warehouse. Each group step runs its members with the protocol's n_workers=1 in both
runs: what is compared is the executor's parallelism across steps, not the pool inside one.

Usage:
  .venv/bin/python benchmarks/distributed_groups.py [--horizon 1m] [--specs FILE] [--warm]
  .venv/bin/python benchmarks/distributed_groups.py --small \
      --specs cbi_platform_tests/defs/tiny_neural_specs.yaml          # smoke run, ~minutes
--small: the test suite's small manifest (900 business days) with a small protocol; default:
the simulator with the frozen protocol. --specs: default the zoo (cbi_platform/models/specs.yaml).
--warm: a second celery run on the same (now warm) workers.
Results: benchmarks/results/distributed_groups_<small|simulated>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402
from distributed import _free_port, _step_seconds  # noqa: E402

JOB = "member_groups_job_celery"
GPU_STEP = "members_neural"
UNION_STEP = "member_models"
# Like SMALL in cbi_platform_tests/defs/test_model_assets.py (n_workers is always 1 here).
SMALL_PROTOCOL = dict(
    n_scored=12,
    span=240,
    end_offset=5,
    n_development=20,
    n_calibration=20,
    min_first_origin_row=100,
    min_history=5,
    regime_folds=2,
)
UPSTREAM = [
    "news_articles",
    "raw_market_prices",
    "market_prices",
    "news_sentiment",
    "regime_calendar",
    "detected_regimes",
]
# Dagster's console logger at WARNING (the event log keeps every event): progress stays readable.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# Set by main() before the workers start; read by bench_resources() in every process.
PROTOCOL_VAR = "CBI_BENCH_PROTOCOL"  # "small" or unset (the frozen protocol)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def bench_resources() -> dict:
    """`build_resources()` from the environment (CBI_HOME, CBI_MANIFEST, CBI_SPECS, ...), with
    the protocol shrunk when CBI_BENCH_PROTOCOL=small, one process inside each step, and no
    cache of fitted networks (when the protocol has one)."""
    from cbi_platform.defs.resources import ProtocolResource, build_resources

    resources = build_resources()
    base = resources["protocol"]
    fields = {name: getattr(base, name) for name in type(base).model_fields}
    fields["n_workers"] = 1
    if os.environ.get(PROTOCOL_VAR) == "small":
        fields.update(SMALL_PROTOCOL)
    if "fit_cache" in fields:
        # Every run fits its networks: a warm run must not be served the cold run's fits.
        fields["fit_cache"] = None
    resources["protocol"] = ProtocolResource(**fields)
    return resources


def group_assets() -> list:
    from cbi_platform.defs.models.assets import MEMBER_GROUP_ASSETS, member_models

    return [*MEMBER_GROUP_ASSETS, member_models]


def groups_celery_job():
    """Every model group and their union, as a celery job (reconstructed in every worker);
    the gpu-pool group goes to the one-worker `gpu` queue."""
    import dagster as dg

    from cbi_platform.defs.distributed import celery_asset_job, route_pool_to_queue
    from cbi_platform.defs.pipeline import ALL_ASSETS

    selection = dg.AssetSelection.assets(*group_assets())
    job = celery_asset_job(JOB, selection, broker=os.environ["CBI_CELERY_BROKER"])
    defs = dg.Definitions(
        assets=route_pool_to_queue(ALL_ASSETS), jobs=[job], resources=bench_resources()
    )
    return defs.resolve_job_def(JOB)


def _step_places(instance, run_id: str) -> dict[str, dict]:
    """Per step: the celery worker that ran it (dagster-celery's engine event), the pid of its
    STEP_START, and the dispatch latency (task submitted -> step started)."""
    import dagster as dg

    places: dict[str, dict] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not event.step_key:
            continue
        place = places.setdefault(event.step_key, {})
        if event.event_type == dg.DagsterEventType.ENGINE_EVENT:
            message = event.message or ""
            if message.startswith("Submitting celery task"):
                place["submitted"] = record.timestamp
                place["queue"] = message.rsplit('queue "', 1)[-1].rstrip('".')
            elif "in celery worker" in message:
                meta = event.engine_event_data.metadata or {}
                if "Celery worker" in meta:
                    place["worker"] = str(meta["Celery worker"].value)
        elif event.event_type == dg.DagsterEventType.STEP_START:
            place["started"] = record.timestamp
            place["pid"] = event.pid
    for place in places.values():
        if "submitted" in place and "started" in place:
            place["dispatch_s"] = round(place["started"] - place["submitted"], 2)
        place.pop("submitted", None)
        place.pop("started", None)
    return places


def _schedule(steps: dict[str, float], n_default: int) -> float:
    """Makespan of the groups on n_default default workers (longest first) plus the gpu group
    on its own worker, then the union: the ideal wall time of that topology."""
    cpu = sorted((s for k, s in steps.items() if k not in (GPU_STEP, UNION_STEP)), reverse=True)
    loads = [0.0] * max(n_default, 1)
    for s in cpu:
        loads[loads.index(min(loads))] += s
    return max(max(loads), steps.get(GPU_STEP, 0.0)) + steps.get(UNION_STEP, 0.0)


def build_upstream(home: Path, horizon: str) -> None:
    import dagster as dg

    from cbi_platform.defs.pipeline import ALL_ASSETS

    resources = bench_resources()
    for selection, partition in ((UPSTREAM, None), (["features"], horizon)):
        t0 = time.perf_counter()
        result = dg.materialize(
            ALL_ASSETS,
            selection=dg.AssetSelection.assets(*selection),
            partition_key=partition,
            resources=resources,
            instance=dg.DagsterInstance.ephemeral(),
            run_config=QUIET,
            raise_on_error=False,
        )
        if not result.success:
            raise RuntimeError(
                f"upstream {selection} failed: "
                + "; ".join(e.message or "" for e in result.all_events if e.is_failure)
            )
        say(f"upstream {', '.join(selection)}: {time.perf_counter() - t0:.1f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from cbi_platform.settings import HORIZONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="small manifest, small protocol")
    parser.add_argument("--specs", type=Path, default=None, help="model specs YAML (zoo)")
    parser.add_argument("--horizon", default="1m", choices=list(HORIZONS))
    parser.add_argument("--warm", action="store_true", help="a second celery run, warm workers")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    import dagster as dg

    from cbi_platform import workers

    if not workers.redis_available():
        print("redis-server is not installed (apt-get install -y redis-server)", file=sys.stderr)
        return 1
    source = "small" if args.small else "simulated"
    specs = (args.specs or ROOT / "cbi_platform" / "models" / "specs.yaml").resolve()
    tmp = Path(tempfile.mkdtemp(prefix="cbi-distributed-groups-"))
    say(f"{source}, horizon {args.horizon}, specs {specs.relative_to(ROOT)}; temp {tmp}")
    results: dict = {
        "machine": machine_stamp(),
        "command": " ".join([sys.executable, *sys.argv]),
        "source": source,
        "horizon": args.horizon,
        "specs": str(specs.relative_to(ROOT)),
        "protocol": SMALL_PROTOCOL if args.small else "frozen (cbi_platform/protocol.yaml)",
        "n_workers_inside_a_step": 1,
        "celery_workers": {"default queue": 2, "gpu queue": 1},
    }

    # Environment shared by this process and the workers (they copy it when they start).
    os.environ["CBI_SPECS"] = str(specs)
    os.environ["CBI_WORKERS"] = "1"
    # Each home keeps its own MLflow store; the default source is the simulator.
    for name in (PROTOCOL_VAR, "MLFLOW_TRACKING_URI", "CBI_SOURCE", "CBI_MANIFEST"):
        os.environ.pop(name, None)
    if args.small:
        from cbi_platform_tests.conftest import write_small_manifest

        data = tmp / "data"
        data.mkdir()
        os.environ["CBI_MANIFEST"] = str(write_small_manifest(data))
        os.environ["CBI_SOURCE"] = "files"
        os.environ[PROTOCOL_VAR] = "small"

    # 1. Upstream, once, in a base home.
    os.environ["CBI_HOME"] = str(tmp / "base")
    t0 = time.perf_counter()
    build_upstream(tmp / "base", args.horizon)
    results["upstream_s"] = round(time.perf_counter() - t0, 2)

    # 2. Two copies of it, each with its MLflow store created (the union step's first run would
    # otherwise pay for creating it); the experiment's artifact folder is the copy's own.
    for name in ("inproc", "celery"):
        shutil.copytree(tmp / "base", tmp / name)
        os.environ["CBI_HOME"] = str(tmp / name)
        bench_resources()["mlflow"].tracker()
    say("home copied for the in-process and the celery run (MLflow store created in each)")

    selection = group_assets()
    step_names = [a.op.name for a in selection]

    # 3. In-process.
    os.environ["CBI_HOME"] = str(tmp / "inproc")
    from cbi_platform.defs.pipeline import ALL_ASSETS

    (tmp / "dagster_inproc").mkdir()
    say(f"in-process: {', '.join(step_names)} [{args.horizon}]")
    with dg.instance_for_test(temp_dir=str(tmp / "dagster_inproc")) as instance:
        t0 = time.perf_counter()
        run = dg.materialize(
            ALL_ASSETS,
            selection=dg.AssetSelection.assets(*selection),
            partition_key=args.horizon,
            resources=bench_resources(),
            instance=instance,
            run_config=QUIET,
            raise_on_error=False,
        )
        results["in_process_s"] = round(time.perf_counter() - t0, 2)
        results["in_process_success"] = run.success
        results["in_process_steps_s"] = _step_seconds(instance, run.run_id)
    say(f"in-process: {results['in_process_s']} s, success {run.success}")
    for step, s in sorted(results["in_process_steps_s"].items()):
        say(f"  {step}: {s} s")

    # 4. Celery.
    os.environ["CBI_HOME"] = str(tmp / "celery")
    port = _free_port()
    broker = workers.broker_url(port)
    os.environ["CBI_CELERY_BROKER"] = broker
    services = tmp / "services"
    labels = ("cold", "warm") if args.warm else ("cold",)
    try:
        t0 = time.perf_counter()
        workers.start_all(services, port=port, broker=broker)
        results["workers_start_s"] = round(time.perf_counter() - t0, 2)
        say(f"redis + 2 default workers + 1 gpu worker up in {results['workers_start_s']} s")
        (tmp / "dagster_celery").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp / "dagster_celery")) as instance:
            for label in labels:
                say(f"celery ({label} workers): {', '.join(step_names)} [{args.horizon}]")
                t0 = time.perf_counter()
                run = dg.execute_job(
                    dg.reconstructable(groups_celery_job),
                    instance=instance,
                    tags={"dagster/partition": args.horizon},
                    run_config=QUIET,
                    raise_on_error=False,
                )
                results[f"celery_{label}_s"] = round(time.perf_counter() - t0, 2)
                results[f"celery_{label}_success"] = run.success
                results[f"celery_{label}_steps_s"] = _step_seconds(instance, run.run_id)
                results[f"celery_{label}_places"] = _step_places(instance, run.run_id)
                say(f"celery ({label}): {results[f'celery_{label}_s']} s, success {run.success}")
                for step, s in sorted(results[f"celery_{label}_steps_s"].items()):
                    place = results[f"celery_{label}_places"].get(step, {})
                    say(
                        f"  {step}: {s} s on {place.get('worker')} (pid {place.get('pid')}, "
                        f"dispatch {place.get('dispatch_s')} s)"
                    )
    finally:
        stopped = workers.stop_all(services)
        say(f"stopped: {', '.join(stopped) or 'nothing'}")

    # 5. Results.
    label = labels[-1]
    places = results[f"celery_{label}_places"]
    gpu_worker = places.get(GPU_STEP, {}).get("worker") or ""
    results["neural_on_gpu_worker"] = all(
        results[f"celery_{lb}_places"].get(GPU_STEP, {}).get("worker", "").startswith("gpu1@")
        for lb in labels
    )
    say(
        f"{GPU_STEP} ran on {gpu_worker or '?'}: "
        f"on the gpu worker {results['neural_on_gpu_worker']}"
    )

    inproc = results["in_process_steps_s"]
    celery_steps = results[f"celery_{label}_steps_s"]
    groups = {k: v for k, v in inproc.items() if k != UNION_STEP}
    union = inproc.get(UNION_STEP, 0.0)
    total = sum(inproc.values())
    chain = (max(groups.values()) if groups else 0.0) + union
    gpu = inproc.get(GPU_STEP, 0.0)
    cpu_groups = {k: v for k, v in groups.items() if k != GPU_STEP}
    ideal_here = _schedule(inproc, 2)
    wall = results[f"celery_{label}_s"]
    overhead = wall - ideal_here
    dispatch = [p["dispatch_s"] for p in places.values() if "dispatch_s" in p]
    mean_dispatch = sum(dispatch) / len(dispatch) if dispatch else 0.0
    extra = [celery_steps[k] - inproc[k] for k in celery_steps if k in inproc]
    mean_extra = sum(extra) / len(extra) if extra else 0.0
    scaling_rows = []
    for n in (1, 2, 3, 4, 5, 8):
        brief = max(chain, total / n) + overhead
        gpu_apart = (
            max(
                max(cpu_groups.values(), default=0.0),
                sum(cpu_groups.values()) / n,
                gpu,
            )
            + union
            + overhead
        )
        scaling_rows.append(
            {"n": n, "max_c_s_over_n_s": round(brief, 1), "gpu_apart_s": round(gpu_apart, 1)}
        )
    results["scaling"] = {
        "step_costs_from": "in-process step durations",
        "sum_of_steps_s": round(total, 2),
        "critical_path_s": round(chain, 2),
        "gpu_step_s": gpu,
        "gpu_share": round(gpu / total, 3) if total else None,
        "ideal_wall_2_default_plus_gpu_s": round(ideal_here, 2),
        "celery_overhead_s": round(overhead, 2),
        "mean_dispatch_s": round(mean_dispatch, 2),
        "mean_step_extra_s": round(mean_extra, 2),
        "projection": scaling_rows,
    }
    ok = results["in_process_success"] and all(results[f"celery_{lb}_success"] for lb in labels)
    ok = ok and results["neural_on_gpu_worker"]

    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"distributed_groups_{source}"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    m = results["machine"]
    wall_rows = [f"| in-process | {results['in_process_s']} | {results['in_process_success']} |"]
    for lb in labels:
        wall_rows.append(
            f"| celery, 2 default workers + 1 gpu worker, "
            f"{'first run (cold workers)' if lb == 'cold' else 'second run (warm workers)'} "
            f"| {results[f'celery_{lb}_s']} | {results[f'celery_{lb}_success']} |"
        )
    step_rows = []
    for step in step_names:
        place = places.get(step, {})
        step_rows.append(
            f"| {step} | {inproc.get(step, '')} | {celery_steps.get(step, '')} "
            f"| {place.get('worker', '')} | {place.get('queue', '')} "
            f"| {place.get('dispatch_s', '')} |"
        )
    share = f"{100 * gpu / total:.0f}%" if total else "n/a"
    protocol_text = (
        "small (" + ", ".join(f"{k}={v}" for k, v in SMALL_PROTOCOL.items()) + ")"
        if args.small
        else "frozen (cbi_platform/protocol.yaml)"
    )
    lines = [
        f"# Model groups of one horizon: in-process vs celery ({source}, {args.horizon})",
        "",
        f"{m['date']} on {m['machine']} ({m['cpus']} CPUs, {m['memory_gib']} GiB), "
        f"Python {m['python']}. Command: `{results['command']}`",
        "",
        f"Specs `{results['specs']}`; protocol {protocol_text}. "
        "The same assets (every `members_<group>` step and the union `member_models`) for the "
        "one partition, from copies of the same upstream warehouse "
        f"(materialized once in {results['upstream_s']} s, not timed). Each group step runs "
        "its members with the protocol's `n_workers=1` in both runs, so what differs is the "
        "executor: one process, steps one after another, vs steps in parallel on the workers. "
        "The cache of fitted networks is off, so every run fits every member.",
        "",
        "| executor | wall (s) | success |",
        "|---|---|---|",
        *wall_rows,
        "",
        f"Starting Redis and the three workers (not in the wall times): "
        f"{results['workers_start_s']} s. `{GPU_STEP}` ran on the gpu worker: "
        f"{results['neural_on_gpu_worker']}.",
        "",
        f"| step | in-process (s) | celery, {label} (s) | celery worker | queue | dispatch (s) |",
        "|---|---|---|---|---|---|",
        *step_rows,
        "",
        "Dispatch: from the executor submitting the step's celery task to the step starting "
        "in the worker: the wait in the queue for a free worker, then the worker loading the "
        "run and rebuilding the plan (on cold workers also importing the platform).",
        "",
        "## Scaling on N machines (on paper, from the measured step costs)",
        "",
        f"In-process step costs: the steps add up to S = {total:.1f} s; the groups are "
        f"independent and the union reads them all, so the longest chain is C = slowest group + "
        f"union = {chain:.1f} s. The ideal wall of the topology measured here (2 default workers, "
        f"longest group first, + the gpu worker, then the union) is {ideal_here:.1f} s; celery "
        f"took {wall:.1f} s ({label} workers), so the celery overhead O = {overhead:.1f} s "
        f"(dispatch "
        f"{mean_dispatch:.2f} s a step on average; a step ran {mean_extra:+.2f} s longer in a "
        "worker than in-process on average, which on this machine includes the 2 cores shared "
        "by the orchestrator and three workers). With N workers on N machines: "
        f"T(N) ~ max(C, S/N) + O. The `{GPU_STEP}` group is serialized on the one-worker `gpu` "
        f"queue whatever N is: {gpu:.1f} s, {share} of S; with N default workers beside the gpu "
        "worker, T(N) ~ max(slowest CPU group, CPU groups/N, neural) + union + O.",
        "",
        "| N | max(C, S/N) + O (s) | N default + 1 gpu worker (s) |",
        "|---|---|---|",
        *[f"| {r['n']} | {r['max_c_s_over_n_s']} | {r['gpu_apart_s']} |" for r in scaling_rows],
        "",
    ]
    (out / f"{stem}.md").write_text("\n".join(lines))
    record_run(out / f"{stem}.md")
    print("\n".join(lines), flush=True)
    say(f"wrote {out / stem}.md and .json")
    if ok and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        say(f"kept {tmp} (logs of the workers in {services})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
