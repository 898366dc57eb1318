"""The serving container's handler, called directly (TestClient): it loads a staged version and
answers what `ServedModel.predict` answers on the same inputs."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import polars as pl
import pytest
from fastapi.testclient import TestClient

from cbi_platform.deploy.serving_container import handler
from cbi_platform.deploy.vertex import package_version, stage_artifacts
from cbi_platform.serving.registry import load_version
from cbi_platform_tests.deploy.conftest import FEATURES, feature_frame, register


@pytest.fixture
def staged(tracker, tmp_path):
    """A registered 1m version, packaged and staged the way the deployment stages it."""
    version, _ = register(tracker, "1m", tmp_path / "v1")
    packaged = package_version(tracker, "1m", version, tmp_path / "work")
    return stage_artifacts(packaged, str(tmp_path / "staging"))


def _rows(frame: pl.DataFrame) -> list[dict]:
    return [
        {"date": r["date"].isoformat(), **{f: r[f] for f in FEATURES}}
        for r in frame.select("date", *FEATURES).iter_rows(named=True)
    ]


def test_predictions_equal_served_model_predict_on_the_same_inputs(tracker, staged):
    client = TestClient(handler.create_app(staged))
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["version"] == "1" and health.json()["feature_names"] == FEATURES

    today = feature_frame("1m", n=400, seed=11)  # new days the version never saw
    closes = today["price"].to_list()
    context = {"regime": "bull", "vol_forecast": 0.21}
    instances = [
        {"features": _rows(today.tail(3)), "closes": closes},
        {"features": _rows(today.head(350).tail(1)), "closes": closes[:350], "context": context},
    ]
    response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]

    served = load_version(tracker, "cbi-zl-1m", "1")
    expected = served.predict(today, today["price"])
    assert first["origin"] == today["date"][-1].isoformat()
    for key in ("price", "forecast", "forecast_logret", "p10", "p50", "p90", "lo90", "hi90"):
        assert first[key] == expected.zone[key], key
    assert first["cdf_logret"] == expected.zone["cdf_logret"]
    assert first["member_logrets"] == expected.member_logrets
    assert first["weights"] == expected.weights
    assert (first["model"], first["version"], first["horizon"]) == ("cbi-zl-1m", "1", "1m")

    earlier = served.predict(today.head(350), today["price"].head(350), context)
    assert second["origin"] == dt.date.isoformat(today["date"][349])
    assert second["forecast"] == earlier.zone["forecast"]
    assert second["vol_forecast"] == 0.21
    # The closes matter (the drift member reads them): another history, another forecast.
    assert (
        second["member_logrets"]["random_walk_drift"]
        != first["member_logrets"]["random_walk_drift"]
    )


def test_a_bad_instance_is_refused_with_the_reason(staged):
    client = TestClient(handler.create_app(staged))
    today = feature_frame("1m", seed=3)
    rows = [{k: v for k, v in r.items() if k != "f_noise"} for r in _rows(today.tail(1))]
    response = client.post("/predict", json={"instances": [{"features": rows, "closes": [45.0]}]})
    assert response.status_code == 400
    assert "instance 0" in response.text and "f_noise" in response.text
    assert client.post("/predict", json={"rows": []}).status_code == 400
    wrong_close = {"features": _rows(today.tail(1)), "closes": [-1.0]}
    response = client.post("/predict", json={"instances": [wrong_close]})
    assert response.status_code == 400 and "positive" in response.text


def test_routes_and_artifacts_come_from_vertex_environment(staged, monkeypatch):
    monkeypatch.setenv("AIP_STORAGE_URI", staged)
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/v1/endpoints/e/deployedModels/d:predict")
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/v1/endpoints/e/deployedModels/d")
    client = TestClient(handler.create_app())
    assert client.get("/v1/endpoints/e/deployedModels/d").status_code == 200
    today = feature_frame("1m", seed=5)
    body = {"instances": [{"features": _rows(today.tail(1)), "closes": today["price"].to_list()}]}
    response = client.post("/v1/endpoints/e/deployedModels/d:predict", json=body)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1
    monkeypatch.delenv("AIP_STORAGE_URI")
    with pytest.raises(RuntimeError, match="AIP_STORAGE_URI"):
        handler.create_app()


def test_artifacts_on_gcs_are_downloaded_before_loading(staged, tmp_path, monkeypatch):
    from pathlib import Path

    from google.cloud import storage

    files = sorted(Path(staged).iterdir())
    blobs = [
        SimpleNamespace(
            name=f"model/v1/{path.name}",
            download_to_filename=lambda target, path=path: Path(target).write_bytes(
                path.read_bytes()
            ),
        )
        for path in files
    ]
    listed = []

    def list_blobs(bucket, prefix=None):
        listed.append((bucket, prefix))
        return blobs

    monkeypatch.setattr(storage, "Client", lambda: SimpleNamespace(list_blobs=list_blobs))
    folder = handler.artifact_folder("gs://vertex-copy/model/v1")
    assert listed == [("vertex-copy", "model/v1/")]
    assert sorted(p.name for p in folder.iterdir()) == [p.name for p in files]
    assert handler.load_served(folder).version == "1"
