"""Materialize the pipeline in-process with progress output (what `cbi run` / `make run` do).

Runs go to the instance in $DAGSTER_HOME when it is set, so the UI shows them afterwards.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import dagster as dg

from cbi_platform.defs.dagster_internals import AssetStatus, stale_status
from cbi_platform.defs.partitions import HORIZON_KEYS
from cbi_platform.defs.pipeline import (
    ALL_ASSETS,
    ALL_CHECKS,
    BACKTEST,
    DECISION,
    FORECAST_STAGE,
    MEMBER_STAGE,
    RANGE_STAGE,
    REFRESH,
    SHARED_STAGE,
    SOURCE,
)
from cbi_platform.defs.resources import build_resources
from cbi_platform.procurement.programme import load_config as load_procurement
from cbi_platform.storage import WAREHOUSE_LOCK_TIMEOUT, write_lock
from cbi_platform.versioning import config_fingerprint


@dataclass(frozen=True)
class Stage:
    """One run of `cbi run`: what it selects (assets with their checks) and for which partition."""

    label: str
    selection: dg.AssetSelection
    partition: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def _one_range(horizons) -> bool:
    """True when the horizons are two or more consecutive partitions (one range run)."""
    keys = list(HORIZON_KEYS)
    if len(horizons) < 2 or any(h not in keys for h in horizons):
        return False
    first = keys.index(horizons[0])
    return list(horizons) == keys[first : first + len(horizons)]


_QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# Bump when a warehouse table changes its columns: an older warehouse is moved aside, not lost.
WAREHOUSE_LAYOUT = "3"  # 3: registered_version split out of forecasts (issue 17)


def keep_older_warehouse(home: Path, stream: TextIO) -> Path | None:
    """Move a warehouse written by an older table layout aside (kept, renamed), so the new
    columns (e.g. oof_predictions.fallback_reason) never collide with old tables."""
    marker = home / "warehouse.layout"
    database = home / "warehouse.duckdb"
    if marker.exists() and marker.read_text().strip() == WAREHOUSE_LAYOUT:
        return None
    moved = None
    if database.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = database.with_name(f"warehouse.layout-{_layout(marker)}.{stamp}.duckdb")
        with write_lock(database, WAREHOUSE_LOCK_TIMEOUT):  # not from under a run writing it
            database.replace(moved)
            wal = database.with_name(database.name + ".wal")
            if wal.exists():
                wal.replace(moved.with_name(moved.name + ".wal"))
        stream.write(
            f"notice: the warehouse was written by an older table layout; kept as {moved.name}, "
            "a new one is built\n"
        )
    home.mkdir(parents=True, exist_ok=True)
    marker.write_text(WAREHOUSE_LAYOUT + "\n")
    return moved


def is_duckdb_warehouse(io_manager) -> bool:
    """The local DuckDB warehouse (the platform's WarehouseIOManager included; a class-name test
    had missed it, so an older layout was never moved aside)."""
    from dagster_duckdb import DuckDBIOManager

    return isinstance(io_manager, DuckDBIOManager)


def _layout(marker: Path) -> str:
    return marker.read_text().strip() if marker.exists() else "1"


def _instance() -> dg.DagsterInstance:
    return (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )


def _report(result: dg.ExecuteInProcessResult, out: TextIO) -> tuple[int, int]:
    """Print each materialization and check; return (failed errors, warnings)."""
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        rows = mat.metadata.get("dagster/row_count")
        partition = f"[{mat.partition}]" if mat.partition else ""
        out.write(
            f"    materialized {mat.asset_key.to_user_string()}{partition}: "
            f"{rows.value if rows else '?'} rows\n"
        )
    errors = warnings = 0
    for ev in result.get_asset_check_evaluations():
        if ev.passed:
            mark = "ok  "
        elif ev.severity == dg.AssetCheckSeverity.ERROR:
            mark, errors = "FAIL", errors + 1
        else:
            mark, warnings = "warn", warnings + 1
        desc = (ev.description or "").splitlines()[0][:150] if ev.description else ""
        out.write(f"    [{mark}] {ev.check_name}: {desc}\n")
    return errors, warnings


def plan_stages(
    horizons: Sequence[str], decision_horizons: Sequence[str] = (), refresh: bool = False
) -> list[Stage]:
    """The runs of `cbi run`, in order: market data, the features and statistical members over a
    range of horizons, every horizon's members, then every horizon's ensemble and registered
    version, the procurement decision forecasts and backtest, then the daily refresh."""
    stages = [Stage("market data", SHARED_STAGE)]
    together = _one_range(horizons)
    members = MEMBER_STAGE
    if together:
        # One run over every horizon: features, then the statistical members fitted once per
        # origin for all horizons (they do not depend on it).
        stages.append(
            Stage(
                f"features + statistical members, {horizons[0]}..{horizons[-1]}",
                RANGE_STAGE,
                tags={
                    "dagster/asset_partition_range_start": horizons[0],
                    "dagster/asset_partition_range_end": horizons[-1],
                },
            )
        )
        members = MEMBER_STAGE - RANGE_STAGE
    # Every horizon's members first, then every horizon's ensemble and registered version: the
    # networks train in worker processes while this process has not loaded TensorFlow yet
    # (registering and serving a network member loads it here), which keeps the peak memory of
    # all processes together inside the budget.
    stages += [Stage(f"members {h}", members, h) for h in horizons]
    stages += [Stage(f"ensemble + forecasts {h}", FORECAST_STAGE, h) for h in horizons]
    stages += [Stage(f"decision forecasts {h}", DECISION, h) for h in decision_horizons]
    if decision_horizons:
        stages.append(Stage("procurement backtest", BACKTEST))
    if refresh:
        stages.append(Stage("daily refresh (served versions, monitors)", REFRESH))
    return stages


def materialize(
    selection: dg.AssetSelection, partition: str | None = None, assets=None, **kwargs
) -> dg.ExecuteInProcessResult:
    """Materialize a selection of the pipeline in-process, with the checks of its assets (the
    whole pipeline is loaded so the selection resolves against the same graph as the UI's)."""
    return dg.materialize(
        [*(ALL_ASSETS if assets is None else assets), *ALL_CHECKS],
        selection=selection,
        partition_key=partition,
        **kwargs,
    )


# ---- skipping what is up to date ------------------------------------------------------------

# What the last successful `cbi run` in a home was configured with (resources' settings and the
# content of the files they name): a run configured otherwise recomputes everything, since
# Dagster's code and data versions do not see resource configuration.
RUN_RECORD = "last_run.json"


def resources_fingerprint(resources: dict) -> dict[str, str]:
    configs = {}
    for name, resource in resources.items():
        fields = getattr(type(resource), "model_fields", {})
        configs[name] = {
            "class": type(resource).__name__,
            **{field: getattr(resource, field, None) for field in fields},
        }
    return config_fingerprint(configs)


def _full_run_reason(
    force: bool, warehouse_kept: bool, home: Path, fingerprint: dict[str, str]
) -> str | None:
    """Why this run recomputes everything, or None when it may skip what is up to date."""
    if force:
        return "--force"
    if not warehouse_kept:
        return "a new warehouse"
    record = home / RUN_RECORD
    if not record.exists():
        return "no successful run recorded in this home"
    before = json.loads(record.read_text()).get("resources", {})
    changed = sorted(
        k for k in set(before) | set(fingerprint) if before.get(k) != fingerprint.get(k)
    )
    if changed:
        return f"resources configured differently since the last run ({', '.join(changed)})"
    return None


def _stage_partitions(stage: Stage) -> list[str | None]:
    if stage.partition is not None:
        return [stage.partition]
    start = stage.tags.get("dagster/asset_partition_range_start")
    end = stage.tags.get("dagster/asset_partition_range_end")
    if start and end:
        keys = list(HORIZON_KEYS)
        return keys[keys.index(start) : keys.index(end) + 1]
    return [None]


@dataclass(frozen=True)
class StagePlan:
    """What a stage runs (None: nothing) and why: the stale or missing assets of its selection."""

    selection: dg.AssetSelection | None
    statuses: list[AssetStatus]
    n_assets: int

    @property
    def outdated(self) -> list[AssetStatus]:
        return [s for s in self.statuses if s.status != "FRESH"]


def plan_stage(instance: dg.DagsterInstance, stage: Stage, assets: list) -> StagePlan:
    """The stage's stale or missing assets (any of its partitions), per Dagster's stale status,
    plus every asset of the stage downstream of them (their outputs are about to change)."""
    graph_items = [*assets, *ALL_CHECKS]
    keys = sorted(stage.selection.resolve(assets))
    by_key = {k: a for a in assets for k in a.keys}
    wanted = []
    for key in keys:
        partitioned = by_key[key].partitions_def is not None
        for partition in _stage_partitions(stage) if partitioned else [None]:
            wanted.append((key, partition))
    statuses = stale_status(instance, graph_items, wanted)
    outdated = {s.key for s in statuses if s.status != "FRESH"}
    if not outdated:
        return StagePlan(None, statuses, len(keys))
    # A multi-asset runs whole: its other outputs go too.
    outdated |= {k for key in outdated for k in by_key[key].keys}
    selection = dg.AssetSelection.assets(*outdated).downstream() & stage.selection
    return StagePlan(selection, statuses, len(keys))


def _why(statuses: list[AssetStatus]) -> str:
    shown = []
    for s in statuses[:6]:
        name = s.key.to_user_string() + (f"[{s.partition}]" if s.partition else "")
        cause = "missing" if s.status == "MISSING" else "; ".join(s.causes[:2]) or "stale"
        shown.append(f"{name} ({cause})")
    more = f" and {len(statuses) - 6} more" if len(statuses) > 6 else ""
    return ", ".join(shown) + more


def run_pipeline(
    horizons: list[str],
    stream: TextIO,
    resources: dict | None = None,
    on_result: Callable[[str, dg.ExecuteInProcessResult], None] | None = None,
    force: bool = False,
    assets: list | None = None,
    instance: dg.DagsterInstance | None = None,
) -> int:
    """Run the stages of `plan_stages`. Unless `force`, first re-read the source (its data
    version is its content), then run in each stage only its stale or missing assets and what
    depends on them; a stage with none is skipped."""
    resources = resources or build_resources()
    assets = ALL_ASSETS if assets is None else assets
    home_path = Path(resources["home"].path)
    moved = None
    duckdb_warehouse = is_duckdb_warehouse(resources["io_manager"])
    if duckdb_warehouse:
        moved = keep_older_warehouse(home_path, stream)
    instance = instance or _instance()
    source = resources["market_source"]
    stream.write(
        f"CBI Platform: source={source.kind}"
        f"{' manifest=' + source.manifest if source.manifest else ''}, "
        f"horizons={','.join(horizons)}\n"
    )
    total_errors = total_warnings = 0
    operations = resources.get("operations")
    if operations is not None and list(operations.horizons) != list(horizons):
        config = {n: getattr(operations, n) for n in type(operations).model_fields}
        resources = {
            **resources,
            "operations": type(operations)(**{**config, "horizons": list(horizons)}),
        }
    decision = [h for h in load_procurement().pipeline.horizons if h in horizons]
    stages = plan_stages(horizons, decision, refresh=operations is not None)
    fingerprint = resources_fingerprint(resources)
    warehouse_kept = moved is None and (
        not duckdb_warehouse or (home_path / "warehouse.duckdb").exists()
    )
    full = _full_run_reason(force, warehouse_kept, home_path, fingerprint)
    if full:
        stream.write(f"recomputing everything: {full}\n")
    else:
        stages = [Stage("source (re-read; its content decides what is stale)", SOURCE), *stages]
    fresh_assets: set[dg.AssetKey] = set()
    ran = 0
    for i, stage in enumerate(stages, start=1):
        label = stage.label
        started = time.perf_counter()
        selection = stage.selection
        if not full and stage.selection is not SOURCE:
            plan = plan_stage(instance, stage, assets)
            fresh_assets |= {s.key for s in plan.statuses if s.status == "FRESH"}
            if plan.selection is None:
                stream.write(
                    f"[{i}/{len(stages)}] {label}: up to date ({plan.n_assets} assets), skipped\n"
                )
                continue
            stream.write(f"[{i}/{len(stages)}] {label}: stale: {_why(plan.outdated)}\n")
            selection = plan.selection
        stream.write(f"[{i}/{len(stages)}] {label} ...\n")
        stream.flush()
        ran += stage.selection is not SOURCE
        try:
            result = materialize(
                selection,
                stage.partition,
                assets=assets,
                resources=resources,
                instance=instance,
                run_config=_QUIET,
                raise_on_error=False,
                tags={"cbi/stage": label, **stage.tags},
            )
        except dg.DagsterInvariantViolationError as exc:
            stream.write(f"    failed: {exc}\n")
            return 1
        if on_result is not None:
            on_result(label, result)
        errors, warnings = _report(result, stream)
        total_errors += errors
        total_warnings += warnings
        stream.write(f"    {label} done in {time.perf_counter() - started:.1f}s\n")
        if not result.success:
            for event in result.all_events:
                if event.is_step_failure:
                    err = event.step_failure_data.error
                    cause = err.cause.message if err and err.cause else (err.message if err else "")
                    stream.write(f"    step {event.step_key} failed: {cause.strip()}\n")
            stream.write(
                f"run {result.run_id} failed at stage '{label}'; earlier tables are intact.\n"
            )
            return 1
    record = {"resources": fingerprint, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (home_path / RUN_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    if not full and ran == 0:
        stream.write(f"up to date: {len(fresh_assets)} assets, nothing to do\n")
    home = resources["home"].path
    stream.write(
        "\nSummary\n"
        f"  checks: {total_errors} blocking failures, {total_warnings} warnings\n"
        f"  warehouse: {os.path.join(home, 'warehouse.duckdb')} (schema cbi)\n"
        f"  exports:   {os.path.join(home, 'regime_datasets')}/<horizon>/<regime>.parquet\n"
        f"  forecasts: {os.path.join(home, 'forecasts.duckdb')} — `cbi forecast` to print\n"
        f"  operations: {os.path.join(home, 'operations.duckdb')} (alerts, audit, conditions,"
        " recommendations)\n"
        f"  procurement: {os.path.join(home, 'procurement')}/backtest.md, cumulative_savings.png"
        " — `cbi recommend` for today's\n"
        f"  Dagster instance: {os.environ.get('DAGSTER_HOME', '(ephemeral)')}"
        " — `make ui` to browse\n"
    )
    return 0 if total_errors == 0 else 1
