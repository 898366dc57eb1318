"""The one module that touches Dagster internals (`dagster._core`, `dagster_internal_init`).

Why it exists: the pinned Dagster (1.13.x) has no public read of an asset's stale status
(`cbi run` skips what is up to date with the resolver behind the UI's "Unsynced"), no public,
partition-aware read of asset-check results (the forecast gates need the latest evaluation of
a check for one partition; the alert sensor needs the latest evaluation of each blocking
check), no public way to copy an op-backed asset with extra op tags (the celery queue
routing), no public way to give a DuckDB IO manager another client (the warehouse's
locked, fenced connections), and no public hook on the results of dagster-celery's submitted
steps (a step whose worker died must fail its run, not hang it: cbi_platform/celery_watch.py).
Everything private sits here, pinned by cbi_platform_tests/defs/test_dagster_internals.py, so a
Dagster upgrade breaks one file.
What would replace it: a public stale-status read, a public check-record query on
`DagsterInstance` that takes a partition (and returns status, run id and metadata), and a
public op-tag override on `AssetsDefinition`, a client hook on `DuckDBIOManager`, and a
result hook (or a lost-task timeout) in dagster-celery's executor.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.db_io_manager import DbIOManager
from dagster._time import get_current_datetime
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import _submit_task as celery_submit_task

from cbi_platform.release.gates import LEAKAGE_CHECKS

FEATURES = dg.AssetKey("features")


# ---- asset-check results ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckEvaluation:
    """The latest evaluated (not merely planned) execution of one asset check."""

    failed: bool  # the check ran and did not pass
    run_id: str
    timestamp: float | None  # of its event (seconds since the epoch); None when absent
    description: str | None  # the evaluation's description, when it recorded one


def latest_check_evaluations(
    instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey]
) -> dict[dg.AssetCheckKey, CheckEvaluation]:
    """The latest evaluation of each check, any partition; checks only planned are left out."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
    out: dict[dg.AssetCheckKey, CheckEvaluation] = {}
    for key, record in latest.items():
        if record.status == AssetCheckExecutionRecordStatus.PLANNED:
            continue
        event = record.event.dagster_event if record.event else None
        evaluation = getattr(event, "event_specific_data", None)
        out[key] = CheckEvaluation(
            failed=record.status == AssetCheckExecutionRecordStatus.FAILED,
            run_id=record.run_id,
            timestamp=record.event.timestamp if record.event else None,
            description=getattr(evaluation, "description", None),
        )
    return out


def _horizons_of(record) -> list[str]:
    """The partitions a range run's (partition-less) check evaluation judged, from its evidence."""
    event = record.event.dagster_event if record.event else None
    evaluation = event.event_specific_data if event else None
    value = getattr(evaluation, "metadata", {}).get("horizons")
    return list(value.value) if value is not None else []


def leakage_check_results(instance: dg.DagsterInstance, horizon: str) -> dict[str, bool | None]:
    """The latest evaluation of each blocking check on `features` for this partition: True
    (passed), False (failed) or None (none recorded, or planned and never evaluated). A run over
    several partitions records one partition-less evaluation whose evidence names them."""
    keys = [dg.AssetCheckKey(FEATURES, name) for name in LEAKAGE_CHECKS]
    storage = instance.event_log_storage
    by_partition = storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=horizon)
    )
    by_range = storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=None)
    )
    results: dict[str, bool | None] = {}
    for key in keys:
        records = [by_partition.get(key)]
        ranged = by_range.get(key)
        if ranged is not None and horizon in _horizons_of(ranged):
            records.append(ranged)
        found = [r for r in records if r is not None]
        latest = max(found, key=lambda r: r.id) if found else None
        if latest is None or latest.status == AssetCheckExecutionRecordStatus.PLANNED:
            results[key.name] = None
        else:
            results[key.name] = latest.status == AssetCheckExecutionRecordStatus.SUCCEEDED
    return results


# ---- op copies ----------------------------------------------------------------------------


def with_op_tags(assets_def: dg.AssetsDefinition, tags: dict[str, str]) -> dg.AssetsDefinition:
    """A copy of an op-backed asset whose op carries `tags` on top of its own."""
    op = assets_def.op
    new_op = dg.OpDefinition.dagster_internal_init(
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


# ---- stale status -------------------------------------------------------------------------


@dataclass(frozen=True)
class AssetStatus:
    """One asset (partition)'s status as the UI shows it: fresh, stale (with causes) or missing."""

    key: dg.AssetKey
    partition: str | None
    status: str  # "FRESH" | "STALE" | "MISSING"
    causes: tuple[str, ...]  # e.g. "has a new code version", "has a new dependency data version"


def stale_status(
    instance: dg.DagsterInstance,
    assets: list,
    wanted: list[tuple[dg.AssetKey, str | None]],
) -> list[AssetStatus]:
    """The status of each (asset key, partition) from `CachingStaleStatusResolver`, the class
    behind the UI's "Unsynced" label, over the graph of `assets` (assets and checks)."""
    graph = AssetGraph.from_assets(assets)
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(
        instance=instance, asset_graph=graph, loading_context=view
    )
    out = []
    for key, partition in wanted:
        status = resolver.get_status(key, partition)
        causes = ()
        if status == StaleStatus.STALE:
            causes = tuple(
                _describe(cause) for cause in resolver.get_stale_root_causes(key, partition)
            )
        out.append(AssetStatus(key, partition, status.value, causes))
    return out


def _describe(cause) -> str:
    where = cause.key.asset_key.to_user_string()
    if cause.key.partition_key:
        where += f"[{cause.key.partition_key}]"
    return f"{where} {cause.reason}"


# ---- the warehouse's IO manager with its own client -----------------------------------------


def duckdb_io_manager_with_client(io_manager_factory, db_client) -> DbIOManager:
    """What `DuckDBIOManager.create_io_manager` builds from `io_manager_factory` (a configured
    DuckDBIOManager subclass), with `db_client` in place of the stock DuckDbClient."""
    return DbIOManager(
        db_client=db_client,
        database=io_manager_factory.database,
        schema=io_manager_factory.schema_,
        type_handlers=io_manager_factory.type_handlers(),
        default_load_type=io_manager_factory.default_load_type(),
        io_manager_name="DuckDBIOManager",
    )


# ---- dagster-celery's orchestration loop with a hook on each step's result ------------------


def run_celery_steps(plan_context, execution_plan, wrap):
    """dagster-celery's `CeleryExecutor.execute` (its loop and its task submission, as pinned),
    with each submitted step's AsyncResult passed through `wrap(app, step_key, result)`."""

    def submit(app, context, step, queue, priority, known_state):
        result = celery_submit_task(app, context, step, queue, priority, known_state)
        return wrap(app, step.key, result)

    return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)
