"""The neural group as its own Dagster step in the single-slot `gpu` pool, end to end on tiny
networks: its OOF rows and SHAP join the union the ensemble reads; two neural runs launched at
the same time run one after the other; a cancelled or killed run gives its slot back."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
import yaml

from cbi_platform.defs.pipeline import ALL_ASSETS
from cbi_platform.defs.resources import ProtocolResource
from cbi_platform_tests.conftest import file_resources, write_small_manifest

ROOT = Path(__file__).resolve().parents[2]
TINY_SPECS = Path(__file__).with_name("tiny_neural_specs.yaml")
# One dense network fitted twice: the pool tests need a real neural step, not a walk-forward.
SLOT_SPECS = Path(__file__).with_name("gpu_slot_specs.yaml")
NEURAL_STEP = "members_neural"
UPSTREAM = [
    "news_articles",
    "raw_market_prices",
    "market_prices",
    "news_sentiment",
    "regime_calendar",
    "detected_regimes",
]


def tiny_protocol(specs_file: str | Path | None = None) -> ProtocolResource:
    # 16 origins on the usual ~21.7-day grid (4 scored, 6 development, 6 calibration) plus the
    # live one: each network fits 3 times on refit_every 8 (fits are most of a step's time).
    return ProtocolResource(
        n_scored=4,
        span=66,
        end_offset=5,
        n_development=6,
        n_calibration=6,
        min_first_origin_row=100,
        n_workers=1,
        min_history=5,
        regime_folds=2,
        specs_file=str(specs_file or TINY_SPECS),
    )


def neural_resources(home: str | Path, specs_file: str | Path | None = None) -> dict:
    home = Path(home)
    manifest = home / "data" / "manifest.yaml"
    return {**file_resources(manifest, home), "protocol": tiny_protocol(specs_file)}


def _materialize(resources, selection, partition=None, instance=None):
    result = dg.materialize(
        ALL_ASSETS,
        selection=dg.AssetSelection.assets(*selection),
        partition_key=partition,
        resources=resources,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


@pytest.fixture(scope="module")
def upstream_home(tmp_path_factory) -> Path:
    """Market data, regimes and the 1w / 1m features of a small manifest, materialized once."""
    home = tmp_path_factory.mktemp("neural_home")
    (home / "data").mkdir()
    write_small_manifest(home / "data")
    resources = neural_resources(home)
    _materialize(resources, UPSTREAM)
    for horizon in ("1w", "1m"):
        _materialize(resources, ["features"], horizon)
    return home


def _copy_home(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _table(home: Path, name: str) -> pl.DataFrame:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(f"select * from cbi.{name}").pl()


def test_neural_group_step_trains_records_and_joins_the_union(upstream_home, tmp_path):
    home = _copy_home(upstream_home, tmp_path / "home")
    resources = neural_resources(home)
    result = _materialize(resources, ["oof_neural", "shap_neural"], "1w")

    oof = _table(home, "oof_neural")
    assert set(oof["model"].unique()) == {"nn_gru_tiny", "nn_dense_tiny"}
    assert oof["horizon"].unique().to_list() == ["1w"]
    live = oof.filter(pl.col("role") == "live")
    assert live.height == 2 and live["forecast_logret"].is_finite().all()
    # The recorded schedule: refit_every 8 grid origins, plus the first fit and the live origin.
    fits = oof.group_by("model").agg(pl.col("fitted_at").n_unique().alias("fits"))
    n_origins = oof.filter(pl.col("model") == "nn_gru_tiny").height
    assert fits["fits"].max() <= n_origins // 8 + 2
    # Embargo: every forecast comes from a model fitted at or before its origin.
    assert (oof.drop_nulls("fitted_at")["fitted_at"] <= oof.drop_nulls("fitted_at")["origin"]).all()

    meta = result.asset_materializations_for_node(NEURAL_STEP)[0].metadata
    assert meta["device"].value == "cpu"
    assert meta["precision"].value == "float32"  # mixed precision only where the device gains
    assert meta["peak_memory_mb"].value > 0
    assert "nn_gru_tiny" in meta["fits"].value

    # SHAP of the networks (grouped kernel SHAP over the input window): additive per origin.
    shap = _table(home, "shap_neural")
    assert set(shap["model"].unique()) == {"nn_gru_tiny", "nn_dense_tiny"}
    sums = (
        shap.group_by("model", "origin")
        .agg((pl.col("shap").sum() + pl.col("base").first()).alias("total"))
        .join(oof.select("model", "origin", "forecast_logret"), on=["model", "origin"])
    )
    np.testing.assert_allclose(sums["total"], sums["forecast_logret"], rtol=1e-4, atol=1e-7)

    # The union the ensemble reads carries every group's rows, the random walk included.
    # (The other groups have no members in the tiny specs: their steps write empty tables.)
    others = [
        "oof_benchmarks",
        "oof_statistical",
        "oof_trees",
        "shap_trees",
        "oof_specialists",
        "shap_specialists",
    ]
    _materialize(resources, [*others, "oof_predictions", "oof_shap"], "1w")
    union = _table(home, "oof_predictions")
    assert {"random_walk", "nn_gru_tiny", "nn_dense_tiny"} <= set(union["model"].unique())
    assert union.filter(pl.col("model") == "nn_gru_tiny").height == n_origins


def _instance_home(folder: Path, free_slots_after: int = 1) -> Path:
    """A Dagster instance with the repository's concurrency settings (gpu pool: 1 slot; run
    monitoring frees the slots of ended runs), with the wait shortened for the test."""
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    config["run_monitoring"]["free_slots_after_run_end_seconds"] = free_slots_after
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    # Create the storage once, before two processes race to create its tables.
    dg.DagsterInstance.from_config(str(folder)).dispose()
    return folder


def _launch(dagster_home: Path, home: Path, partition: str, tag: str) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "PYTHONUNBUFFERED": "1"}
    log = open(home / f"run_{tag}.log", "w")  # noqa: SIM115 - closed by the process's end
    module = "cbi_platform_tests.defs.neural_run"
    return subprocess.Popen(
        [sys.executable, "-m", module, str(home), partition, tag, str(SLOT_SPECS)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _step_window(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    starts, ends = [], []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key != NEURAL_STEP:
            continue
        if event.event_type_value == "STEP_START":
            starts.append(record.timestamp)
        if event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            ends.append(record.timestamp)
    assert starts and ends, f"run {run_id}: no {NEURAL_STEP} step events"
    return min(starts), max(ends)


def _run_of(instance: dg.DagsterInstance, tag: str):
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"cbi/test": tag}))
    assert len(runs) == 1, f"expected one run tagged {tag}"
    return runs[0]


def test_two_neural_runs_at_once_take_the_gpu_slot_one_after_the_other(upstream_home, tmp_path):
    dagster_home = _instance_home(tmp_path / "dagster")
    homes = [_copy_home(upstream_home, tmp_path / name) for name in ("a", "b")]
    first = _launch(dagster_home, homes[0], "1w", "a")
    time.sleep(1.0)
    second = _launch(dagster_home, homes[1], "1m", "b")
    assert first.wait(timeout=300) == 0, (homes[0] / "run_a.log").read_text()[-3000:]
    assert second.wait(timeout=300) == 0, (homes[1] / "run_b.log").read_text()[-3000:]

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    run_a, run_b = _run_of(instance, "a"), _run_of(instance, "b")
    a_start, a_end = _step_window(instance, run_a.run_id)
    b_start, b_end = _step_window(instance, run_b.run_id)
    # Both runs were in progress at once ...
    b_run_start = instance.get_run_record_by_id(run_b.run_id).start_time
    assert b_run_start < a_end
    # ... yet their neural steps never overlapped: one waited for the slot.
    assert a_end <= b_start or b_end <= a_start, (a_start, a_end, b_start, b_end)
    waited = [
        r.dagster_event.message
        for run in (run_a, run_b)
        for r in instance.all_logs(run.run_id)
        if r.dagster_event is not None
        and "blocked by limit for pool gpu" in (r.dagster_event.message or "")
    ]
    assert waited, "neither run reported waiting for the gpu slot"
    assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []
    for home, partition, tag in zip(homes, ("1w", "1m"), ("a", "b"), strict=True):
        oof = _table(home, "oof_neural")
        assert oof["horizon"].unique().to_list() == [partition]
        assert oof["model"].unique().to_list() == ["nn_dense_tiny"]  # a network was trained
        # ... and trained in a spawned process (one worker), not in the run's own process.
        log = (home / f"run_{tag}.log").read_text()
        assert "tensorflow loaded in the run process: False" in log, log[-2000:]
    instance.dispose()


def _wait_for_claim(instance: dg.DagsterInstance, process: subprocess.Popen, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if instance.event_log_storage.get_concurrency_info("gpu").claimed_slots:
            return
        assert process.poll() is None, "the run ended before it claimed the gpu slot"
        time.sleep(0.2)
    raise AssertionError("the run never claimed the gpu slot")


def test_a_cancelled_or_killed_neural_run_frees_the_gpu_slot(upstream_home, tmp_path):
    from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration

    dagster_home = _instance_home(tmp_path / "dagster", free_slots_after=1)
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    home = _copy_home(upstream_home, tmp_path / "home")

    # Cancelled (SIGTERM, what terminating a run sends its process): the step is interrupted,
    # the run ends, and the slot is released on the way out.
    run = _launch(dagster_home, home, "1w", "cancelled")
    _wait_for_claim(instance, run)
    run.send_signal(signal.SIGTERM)
    run.wait(timeout=120)
    cancelled = _run_of(instance, "cancelled")
    assert cancelled.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []

    # Killed (SIGKILL: nothing runs on the way out): the slot stays claimed until run
    # monitoring has marked the run ended and the daemon's slot sweep frees it.
    run = _launch(dagster_home, home, "1w", "killed")
    _wait_for_claim(instance, run)
    run.kill()
    run.wait(timeout=60)
    killed = _run_of(instance, "killed")
    assert [
        s.run_id for s in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
    ] == [killed.run_id]
    instance.report_run_failed(killed)  # what run monitoring does on a dead run worker
    time.sleep(1.5)  # free_slots_after_run_end_seconds
    list(
        execute_concurrency_slots_iteration(
            SimpleNamespace(instance=instance), dg.get_dagster_logger()
        )
    )
    assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []

    instance.dispose()
