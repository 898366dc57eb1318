"""The celery executor (Redis broker) and a celery variant of the shared-assets job.

Steps go to dagster-celery's default queue (`dagster`); every asset in the `gpu` pool is routed
to the one-worker queue `gpu` by the op tag dagster-celery honours (`route_pool_to_queue`).
Workers: `make workers-up` (cbi_platform/workers.py).

The executor is dagster-celery's with one change: a step whose worker dies mid-step fails the
run instead of hanging it. Measured: kill -9 of a worker's master process (its pool child dies
with it) left dagster-celery's loop polling `AsyncResult.ready()` forever, since nobody will
ever store that task's result. `LostTaskAwareCeleryExecutor` wraps each step's AsyncResult so
that a STARTED task no live worker runs any more reads as ready and raises `CeleryTaskLost`
(the decision and its throttled inspect broadcasts: cbi_platform/celery_watch.py). It reuses
dagster-celery's submission and loop as they are in the pinned dagster-celery, through
`dagster_internals.run_celery_steps`; cbi_platform_tests/test_celery_lost_task.py runs the whole
path against real workers, so an upgrade that changes them fails there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import dagster as dg
from dagster_celery import celery_executor
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from cbi_platform.celery_watch import LostAwareResult, LostTaskWatch
from cbi_platform.defs.dagster_internals import run_celery_steps, with_op_tags
from cbi_platform.defs.partitions import horizon_partitions
from cbi_platform.defs.pipeline import HORIZON, SHARED, TRAINING_LANE
from cbi_platform.workers import GPU_QUEUE, broker_url

GPU_POOL = "gpu"


def celery_broker() -> str:
    return os.environ.get("CBI_CELERY_BROKER", broker_url())


class LostTaskAwareCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor whose run fails, instead of hanging, when a worker dies
    mid-step: every submitted step's AsyncResult is a `LostAwareResult`, and one
    `LostTaskWatch` per run (bound to the loop's Celery app) serves all of them."""

    def execute(self, plan_context, execution_plan):
        watches: list[LostTaskWatch] = []  # the run's one watch, made at the first submission

        def wrap(app, step_key: str, result) -> LostAwareResult:
            if not watches:
                watches.append(LostTaskWatch(app))
            return LostAwareResult(result, step_key, watches[0])

        return run_celery_steps(plan_context, execution_plan, wrap)


@dg.executor(
    name="celery",
    config_schema=CELERY_CONFIG,
    requirements=dg.multiple_process_executor_requirements(),
)
def lost_task_aware_celery_executor(init_context: dg.InitExecutorContext) -> CeleryExecutor:
    """`dagster_celery.celery_executor` (same config, same parsing) building the lost-task-aware
    executor."""
    base = celery_executor.executor_creation_fn(init_context)
    return LostTaskAwareCeleryExecutor(
        retries=base.retries,
        broker=base.broker,
        backend=base.backend,
        include=base.include,
        config_source=vars(base.config_source),
    )


def redis_celery_executor(broker: str | None = None) -> dg.ExecutorDefinition:
    """The lost-task-aware celery executor with broker and result backend on the same Redis."""
    url = broker or celery_broker()
    return lost_task_aware_celery_executor.configured(
        {"broker": url, "backend": url}, name="celery_redis"
    )


def route_pool_to_queue(assets: Iterable, pool: str = GPU_POOL, queue: str = GPU_QUEUE) -> list:
    """Every op-backed asset in `pool` gets the `dagster-celery/queue` tag `queue`; the rest
    (and anything that is not an AssetsDefinition) pass through unchanged."""
    routed = []
    for item in assets:
        is_op = isinstance(item, dg.AssetsDefinition) and isinstance(item.node_def, dg.OpDefinition)
        if is_op and item.op.pool == pool:
            item = with_op_tags(item, {DAGSTER_CELERY_QUEUE_TAG: queue})
        routed.append(item)
    return routed


def celery_asset_job(
    name: str,
    selection: dg.AssetSelection,
    broker: str | None = None,
    description: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    tags: dict[str, str] | None = None,
) -> dg.UnresolvedAssetJobDefinition:
    """An asset job over `selection` whose steps run in celery workers."""
    return dg.define_asset_job(
        name,
        selection=selection,
        executor_def=redis_celery_executor(broker),
        description=description,
        partitions_def=partitions_def,
        tags=tags,
    )


shared_data_job_celery = celery_asset_job(
    "shared_data_job_celery",
    SHARED,
    tags=TRAINING_LANE,  # it rebuilds what market_data_job and a retrain rebuild
    description="The market-data and shared assets with each step in a celery worker "
    "(`make workers-up` first); gpu-pool steps go to the one-worker `gpu` queue.",
)

# Training on the workers: one horizon partition's features, regime datasets, model groups,
# ensemble and zones, each step in a worker; the networks (gpu pool) go to the `gpu` queue, so
# the one-slot pool and the one-worker queue agree. Launch it from the UI's launchpad for a
# partition, or backfill its partitions, with the workers up (`make workers-up` / `make up`).
horizon_job_celery = celery_asset_job(
    "horizon_job_celery",
    HORIZON,
    partitions_def=horizon_partitions,
    tags=TRAINING_LANE,
    description="Features, regime datasets and models for one horizon partition, each step in "
    "a celery worker (default queue; gpu-pool networks on the one-worker `gpu` queue).",
)
