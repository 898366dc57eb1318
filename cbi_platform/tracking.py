"""MLflow tracking: one run per (asset, horizon) materialization, a nested run per model.

Per-origin metrics are logged with the origin's row index as the step, in batches (one
`log_batch` per model), not as a run per fit. The store is SQLite (MLflow refuses the file
store); artifacts go under the platform home.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

EXPERIMENT = "cbi-zl"
MAX_BATCH = 900  # MLflow accepts up to 1,000 metrics per log_batch


def registered_model_name(horizon: str) -> str:
    return f"cbi-zl-{horizon}"


class Tracker:
    def __init__(self, tracking_uri: str, artifact_root: Path, experiment: str = EXPERIMENT):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        existing = self.client.get_experiment_by_name(experiment)
        if existing is None:
            artifact_root.mkdir(parents=True, exist_ok=True)
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifact_root.resolve().as_uri()
            )
        else:
            self.experiment_id = existing.experiment_id

    @contextmanager
    def run(
        self, name: str, tags: Mapping[str, str], parent_run_id: str | None = None
    ) -> Iterator[str]:
        all_tags = dict(tags)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        status = "FAILED"
        try:
            yield run.info.run_id
            status = "FINISHED"
        finally:
            self.client.set_terminated(run.info.run_id, status=status)

    def log_metrics(self, run_id: str, values: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, step)
            for k, v in values.items()
            if v is not None and np.isfinite(v)
        ]
        for i in range(0, len(metrics), MAX_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i : i + MAX_BATCH])

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 90):
            self.client.log_batch(run_id, params=items[i : i + 90])

    def log_walk_forward(
        self,
        parent_run_id: str,
        oof: pl.DataFrame,
        leaderboard: pl.DataFrame,
        specs: Mapping[str, Mapping[str, object]],
        tags: Mapping[str, str],
    ) -> dict[str, str]:
        """A nested run per model: spec params, per-origin errors (step = origin row), summary."""
        child_ids = {}
        summary = {r["model"]: r for r in leaderboard.to_dicts()}
        for model, rows in oof.sort("origin_row").group_by("model", maintain_order=True):
            model = model[0]
            with self.run(model, {**tags, "cbi.model": model}, parent_run_id) as run_id:
                child_ids[model] = run_id
                self.log_params(run_id, specs.get(model, {}))
                now = int(time.time() * 1000)
                metrics = []
                for r in rows.drop_nulls(["actual", "forecast"]).iter_rows(named=True):
                    ape = abs(r["forecast"] - r["actual"]) / r["actual"]
                    metrics.append(Metric("abs_pct_error", ape, now, int(r["origin_row"])))
                for i in range(0, len(metrics), MAX_BATCH):
                    self.client.log_batch(run_id, metrics=metrics[i : i + MAX_BATCH])
                numeric = {
                    k: v
                    for k, v in summary.get(model, {}).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
                self.log_metrics(run_id, numeric)
        return child_ids

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
        """A folder and everything under it, its layout kept (e.g. a SavedModel)."""
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def register(self, run_id: str, artifact_path: str, name: str) -> str:
        """Register the run's artifact as a new version of `name`; returns the version."""
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            self.client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            self.client.create_registered_model(name)
        source = f"runs:/{run_id}/{artifact_path}"
        version = self.client.create_model_version(name, source, run_id=run_id)
        return str(version.version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def alias_version(self, name: str, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except mlflow.exceptions.MlflowException:
            return None

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(name, version).tags)

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, object]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value))

    def version_run_id(self, name: str, version: str) -> str:
        return str(self.client.get_model_version(name, version).run_id)

    def latest_version(self, name: str) -> str | None:
        """The highest version number of `name`, or None when nothing is registered."""
        try:
            versions = self.client.search_model_versions(f"name = '{name}'")
        except mlflow.exceptions.MlflowException:
            return None
        return str(max(int(v.version) for v in versions)) if versions else None

    def download_artifacts(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        """Copy a run's artifact folder (or file) under `destination`; returns the local path."""
        destination.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, artifact_path, str(destination)))

    def run_url(self, base_url: str, run_id: str) -> str:
        return f"{base_url.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"
