"""The celery executor (Redis broker) and a celery variant of the shared-assets job.

Steps go to dagster-celery's default queue (`dagster`); every asset in the `gpu` pool is routed
to the one-worker queue `gpu` by the op tag dagster-celery honours (`route_pool_to_queue`).
Workers: `make workers-up` (cbi_platform/workers.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import dagster as dg
from dagster_celery import celery_executor
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from cbi_platform.defs.dagster_internals import with_op_tags
from cbi_platform.defs.partitions import horizon_partitions
from cbi_platform.defs.pipeline import HORIZON, SHARED, TRAINING_LANE
from cbi_platform.workers import GPU_QUEUE, broker_url

GPU_POOL = "gpu"


def celery_broker() -> str:
    return os.environ.get("CBI_CELERY_BROKER", broker_url())


def redis_celery_executor(broker: str | None = None) -> dg.ExecutorDefinition:
    """dagster-celery's executor with broker and result backend on the same Redis."""
    url = broker or celery_broker()
    return celery_executor.configured({"broker": url, "backend": url}, name="celery_redis")


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
