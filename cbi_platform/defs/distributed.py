"""The celery executor (Redis broker) and a celery variant of the shared-assets job.

Steps go to dagster-celery's default queue (`dagster`); every asset in the `gpu` pool is routed
to the one-worker queue `gpu` by the op tag dagster-celery honours (`route_pool_to_queue`).
Workers: `make workers-up` (cbi_platform/workers.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import dagster as dg
from dagster._core.definitions.op_definition import OpDefinition
from dagster_celery import celery_executor
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from cbi_platform.defs.pipeline import SHARED_ASSETS
from cbi_platform.workers import GPU_QUEUE, broker_url

GPU_POOL = "gpu"


def celery_broker() -> str:
    return os.environ.get("CBI_CELERY_BROKER", broker_url())


def redis_celery_executor(broker: str | None = None) -> dg.ExecutorDefinition:
    """dagster-celery's executor with broker and result backend on the same Redis."""
    url = broker or celery_broker()
    return celery_executor.configured({"broker": url, "backend": url}, name="celery_redis")


def _with_op_tags(assets_def: dg.AssetsDefinition, tags: dict[str, str]) -> dg.AssetsDefinition:
    op = assets_def.op
    new_op = OpDefinition.dagster_internal_init(
        compute_fn=op.compute_fn,
        name=op.name,
        ins={d.name: dg.In.from_definition(d) for d in op.input_defs},
        outs={d.name: dg.Out.from_definition(d) for d in op.output_defs},
        description=op.description,
        config_schema=op.config_schema,
        required_resource_keys=op.required_resource_keys,
        tags={**op.tags, **tags},
        version=None,
        retry_policy=op.retry_policy,
        code_version=op.version,
        pool=op.pool,
    )
    return dg.AssetsDefinition.dagster_internal_init(
        **{**assets_def.get_attributes_dict(), "node_def": new_op}
    )


def route_pool_to_queue(assets: Iterable, pool: str = GPU_POOL, queue: str = GPU_QUEUE) -> list:
    """Every op-backed asset in `pool` gets the `dagster-celery/queue` tag `queue`; the rest
    (and anything that is not an AssetsDefinition) pass through unchanged."""
    routed = []
    for item in assets:
        is_op = isinstance(item, dg.AssetsDefinition) and isinstance(item.node_def, OpDefinition)
        if is_op and item.op.pool == pool:
            item = _with_op_tags(item, {DAGSTER_CELERY_QUEUE_TAG: queue})
        routed.append(item)
    return routed


def celery_asset_job(
    name: str, assets: Sequence, broker: str | None = None, description: str | None = None
) -> dg.UnresolvedAssetJobDefinition:
    """An asset job over `assets` whose steps run in celery workers."""
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*assets),
        executor_def=redis_celery_executor(broker),
        description=description,
    )


shared_data_job_celery = celery_asset_job(
    "shared_data_job_celery",
    SHARED_ASSETS,
    description="The market-data and shared assets with each step in a celery worker "
    "(`make workers-up` first); gpu-pool steps go to the one-worker `gpu` queue.",
)
