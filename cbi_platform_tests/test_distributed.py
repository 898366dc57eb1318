"""The celery executor on this machine: Redis, two default-queue workers, one gpu-queue worker."""

import os
import time

import dagster as dg
import pytest
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from cbi_platform import workers
from cbi_platform.defs.distributed import GPU_POOL, redis_celery_executor, route_pool_to_queue

# Long enough that a step outlasts the other worker's start-up of its own step (loading the
# job in the worker process): with 2 s the default steps failed to overlap once under the full
# suite's load on 2 cores.
STEP_SECONDS = 5.0
DEFAULT_STEPS = ("toy_a", "toy_b", "toy_c")
GPU_STEPS = ("toy_gpu_1", "toy_gpu_2")


def _where(context: dg.AssetExecutionContext, name: str) -> dict:
    from celery import current_task

    start = time.time()
    time.sleep(STEP_SECONDS)
    record = {
        "asset": name,
        "pid": os.getpid(),
        "worker": current_task.request.hostname if current_task else None,
        "start": start,
        "end": time.time(),
    }
    context.add_output_metadata({k: dg.MetadataValue.text(str(v)) for k, v in record.items()})
    return record


def _toy_asset(name: str, pool: str | None = None) -> dg.AssetsDefinition:
    @dg.asset(name=name, pool=pool)
    def _toy(context: dg.AssetExecutionContext) -> dict:
        return _where(context, name)

    return _toy


def toy_celery_job() -> dg.JobDefinition:
    """Independent toy steps: three on the default queue, two in the gpu pool (routed to gpu)."""
    assets = [_toy_asset(n) for n in DEFAULT_STEPS] + [_toy_asset(n, GPU_POOL) for n in GPU_STEPS]
    broker = os.environ["CBI_TEST_CELERY_BROKER"]
    job = dg.define_asset_job("toy_celery_job", executor_def=redis_celery_executor(broker))
    defs = dg.Definitions(assets=route_pool_to_queue(assets), jobs=[job])
    return defs.resolve_job_def("toy_celery_job")


def _overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_route_pool_to_queue_tags_only_the_pool() -> None:
    plain, gpu = route_pool_to_queue([_toy_asset("plain"), _toy_asset("trains", GPU_POOL)])
    assert DAGSTER_CELERY_QUEUE_TAG not in plain.op.tags
    assert gpu.op.tags[DAGSTER_CELERY_QUEUE_TAG] == "gpu"
    assert gpu.op.pool == GPU_POOL


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Task name 'execute_plan' is already registered")
def test_celery_workers_run_steps_in_parallel_and_gpu_queue_serially(tmp_path, redis_broker):
    port, broker = redis_broker
    services = tmp_path / "services"
    try:
        pids = workers.start_all(services, port=port, broker=broker)
        (tmp_path / "home").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
            result = dg.execute_job(dg.reconstructable(toy_celery_job), instance=instance)
            assert result.success
            records = {}
            for name in (*DEFAULT_STEPS, *GPU_STEPS):
                event = instance.get_latest_materialization_event(dg.AssetKey(name))
                meta = event.asset_materialization.metadata
                records[name] = {k: meta[k].value for k in ("pid", "worker", "start", "end")}
                for k in ("pid", "start", "end"):
                    records[name][k] = float(records[name][k])
    finally:
        stopped = workers.stop_all(services)
    assert set(stopped) == {"redis", "default1", "default2", "gpu1"}
    for pgid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)

    assert all(r["pid"] != os.getpid() for r in records.values())
    defaults = [records[n] for n in DEFAULT_STEPS]
    assert {r["worker"].split("@")[0] for r in defaults} == {"default1", "default2"}
    assert any(_overlap(a, b) for i, a in enumerate(defaults) for b in defaults[i + 1 :])
    gpu_a, gpu_b = (records[n] for n in GPU_STEPS)
    assert {gpu_a["worker"].split("@")[0], gpu_b["worker"].split("@")[0]} == {"gpu1"}
    assert not _overlap(gpu_a, gpu_b)


def test_horizon_training_through_celery_is_a_shipped_job() -> None:
    """The partitioned training job on the workers is in the definitions the UI loads: every
    horizon partition, the celery executor, networks on the `gpu` queue and every other model
    group on the default queue."""
    from cbi_platform.definitions import defs
    from cbi_platform.defs.partitions import horizon_partitions

    job = defs.resolve_job_def("horizon_job_celery")
    assert job.executor_def.name == "celery_redis"
    assert job.partitions_def.get_partition_keys() == horizon_partitions.get_partition_keys()
    queues = {
        node.name: node.definition.tags.get(DAGSTER_CELERY_QUEUE_TAG)
        for node in job.nodes_in_topological_order
    }
    assert queues["members_neural"] == "gpu"
    model_groups = [name for name in queues if name.startswith("members_")]
    assert len(model_groups) >= 4
    assert all(queues[name] is None for name in model_groups if name != "members_neural")
