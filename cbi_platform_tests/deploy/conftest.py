"""Tiny registered versions (two members fitted in milliseconds) and a fake Vertex AI client.

Only the client is faked, at its boundary: `aiplatform.init`, `aiplatform.Model.upload`,
`aiplatform.Endpoint.list/create` and the endpoints they return (`deploy`, `update`,
`undeploy`, `list_models`, `traffic_split`). The fake keeps Vertex's rules that matter here: a
traffic split sums to 100, "0" names the model being deployed, and a model that still takes
traffic cannot be undeployed.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl
import pytest

from cbi_platform.ensemble.combiners import INVERSE_ERROR, EnsembleState
from cbi_platform.ensemble.conformal import ZONE_COLUMNS
from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.registry import build_model
from cbi_platform.serving.calibration import CalibrationState
from cbi_platform.serving.registry import ServedModel
from cbi_platform.settings import HORIZONS
from cbi_platform.tracking import Tracker, registered_model_name

SPECS = (
    ModelSpec("random_walk_drift", "random_walk_drift", "benchmark"),
    ModelSpec("ridge", "ridge", "sanity"),
)
FEATURES = ["f_momentum", "f_noise"]
OFFSETS = dict(zip(ZONE_COLUMNS, (-0.12, -0.08, -0.03, 0.01, 0.04, 0.09, 0.13), strict=True))
PROTOCOL_HASH = "abc123"


def feature_frame(horizon: str = "1m", n: int = 320, seed: int = 0) -> pl.DataFrame:
    """One horizon's feature frame: date, price, target and two features."""
    h = HORIZONS[horizon]
    rng = np.random.default_rng(seed)
    dates = np.busday_offset("2021-01-01", np.arange(n), roll="forward").astype("datetime64[D]")
    logp = np.log(45.0) + np.cumsum(rng.normal(0.0003, 0.015, n))
    target = np.full(n, np.nan)
    target[:-h] = logp[h:] - logp[:-h]
    return pl.DataFrame(
        {
            "date": pl.Series(dates).cast(pl.Date),
            "horizon": horizon,
            "price": np.exp(logp),
            "target_logret": pl.Series(target).fill_nan(None),
            "f_momentum": np.concatenate([np.zeros(h), logp[h:] - logp[:-h]]),
            "f_noise": rng.normal(size=n),
        }
    )


def served_model(frame: pl.DataFrame, horizon: str = "1m") -> ServedModel:
    known = frame.filter(pl.col("target_logret").is_not_null())
    data = FitData(
        X=known.select(FEATURES).to_numpy(),
        y=known["target_logret"].to_numpy(),
        prices=frame["price"].to_numpy(),
        horizon_days=HORIZONS[horizon],
        feature_names=FEATURES,
    )
    members = {spec.name: build_model(spec).fit(data) for spec in SPECS}
    state = EnsembleState(
        horizon=horizon,
        origin=frame["date"][-1],
        combiner=INVERSE_ERROR,
        members=tuple(members),
        shrink_weight=0.7,
        blended=True,
        member_scores=(1.0, 2.0),
    )
    calibration = CalibrationState(
        method="pooled",
        zone_offsets=OFFSETS,
        cdf_offsets=(-0.2, -0.05, 0.0, 0.05, 0.2),
        cdf_prob=(0.0, 0.2, 0.5, 0.8, 1.0),
        n_calibration=60,
        n_calibration_independent=60.0,
        past_pit=(0.1, 0.5, 0.9),
        vol_model="garch",
    )
    return ServedModel(
        horizon,
        HORIZONS[horizon],
        members,
        FEATURES,
        state,
        calibration,
        frame["date"][-1],
        PROTOCOL_HASH,
    )


def register(tracker: Tracker, horizon: str, folder: Path, frame: pl.DataFrame | None = None):
    """Register a new version of `cbi-zl-<horizon>` as the forecasts asset does; returns
    (version, run id)."""
    served = served_model(feature_frame(horizon) if frame is None else frame, horizon)
    with tracker.run(f"forecasts[{horizon}]", {"dagster.asset": "forecasts"}) as run_id:
        for path in served.save(folder):
            tracker.log_artifact(run_id, path, "ensemble")
        card = folder / "ensemble.json"
        card.write_text('{"leaderboard": []}')
        tracker.log_artifact(run_id, card, "ensemble")
        version = tracker.register(run_id, "ensemble", registered_model_name(horizon))
    return version, run_id


@pytest.fixture
def tracker(tmp_path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts")


class FakeEndpoint:
    def __init__(self, vertex: FakeVertex, display_name: str, labels: dict[str, str]):
        self._vertex = vertex
        self.display_name = display_name
        self.labels = labels
        self.resource_name = f"projects/p/locations/us-central1/endpoints/{next(vertex.ids)}"
        self.deployed: list[SimpleNamespace] = []
        self.traffic_split: dict[str, int] = {}

    def list_models(self) -> list[SimpleNamespace]:
        return list(self.deployed)

    def deploy(self, model, **kwargs: Any) -> None:
        self._vertex.calls.append(("deploy", self.display_name, model.display_name, kwargs))
        split = kwargs["traffic_split"]
        assert sum(split.values()) == 100 and "0" in split, split
        deployed_id = str(next(self._vertex.ids))
        assert set(split) - {"0"} <= {m.id for m in self.deployed}, split
        self.deployed.append(
            SimpleNamespace(
                id=deployed_id,
                display_name=kwargs["deployed_model_display_name"],
                model=model.resource_name,
            )
        )
        self.traffic_split = {(deployed_id if k == "0" else k): v for k, v in split.items()}

    def update(self, traffic_split: dict[str, int]) -> None:
        self._vertex.calls.append(("update", self.display_name, dict(traffic_split)))
        assert sum(traffic_split.values()) == 100
        assert set(traffic_split) <= {m.id for m in self.deployed}
        self.traffic_split = dict(traffic_split)

    def undeploy(self, deployed_model_id: str, sync: bool = True) -> None:
        self._vertex.calls.append(("undeploy", self.display_name, deployed_model_id))
        assert not self.traffic_split.get(deployed_model_id), "it still takes traffic"
        self.deployed = [m for m in self.deployed if m.id != deployed_model_id]
        self.traffic_split.pop(deployed_model_id, None)


class FakeVertex:
    """Records every call; holds the endpoints and models 'in the project'."""

    def __init__(self):
        self.ids = itertools.count(101)
        self.calls: list[tuple] = []
        self.endpoints: list[FakeEndpoint] = []
        self.uploads: list[dict[str, Any]] = []

    def init(self, **kwargs: Any) -> None:
        self.calls.append(("init", kwargs))

    def upload(self, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("upload", kwargs["display_name"]))
        self.uploads.append(kwargs)
        return SimpleNamespace(
            display_name=kwargs["display_name"],
            resource_name=f"projects/p/locations/us-central1/models/{next(self.ids)}",
        )

    def list_endpoints(self, filter: str | None = None, order_by: str | None = None):
        self.calls.append(("list_endpoints", filter, order_by))
        return [e for e in self.endpoints if filter == f'display_name="{e.display_name}"']

    def create_endpoint(self, display_name: str, labels: dict[str, str] | None = None):
        self.calls.append(("create_endpoint", display_name, labels))
        endpoint = FakeEndpoint(self, display_name, labels or {})
        self.endpoints.append(endpoint)
        return endpoint

    def endpoint(self, display_name: str) -> FakeEndpoint:
        return next(e for e in self.endpoints if e.display_name == display_name)

    def kinds(self) -> list[str]:
        """The calls in order, by kind (init, upload, deploy, ...)."""
        return [c[0] for c in self.calls]


@pytest.fixture
def vertex(monkeypatch) -> FakeVertex:
    from google.cloud import aiplatform

    fake = FakeVertex()
    monkeypatch.setattr(aiplatform, "init", fake.init)
    monkeypatch.setattr(aiplatform.Model, "upload", fake.upload)
    monkeypatch.setattr(aiplatform.Endpoint, "list", fake.list_endpoints)
    monkeypatch.setattr(aiplatform.Endpoint, "create", fake.create_endpoint)
    return fake
