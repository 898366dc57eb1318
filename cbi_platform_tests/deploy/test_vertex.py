"""Vertex AI deployment: what is uploaded (artifacts, image, routes, labels), how the endpoint's
traffic is split in shadow mode, and that an existing endpoint is updated, not duplicated.
Only the aiplatform client is faked (conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cbi_platform.deploy import vertex as deploy
from cbi_platform.release.versions import CHAMPION
from cbi_platform.serving.registry import ServedModel, load_version
from cbi_platform_tests.deploy.conftest import PROTOCOL_HASH, feature_frame, register

IMAGE = "europe-west4-docker.pkg.dev/p/cbi/serving:abc"


def _settings(tmp_path, shadow: int = 0) -> deploy.VertexSettings:
    return deploy.VertexSettings(
        project="p",
        location="europe-west4",
        image_uri=IMAGE,
        staging=str(tmp_path / "staging"),
        shadow_traffic=shadow,
        machine_type="n1-standard-4",
    )


def _deploy(tracker, tmp_path, horizons=("1m",), shadow=0):
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    return deploy.deploy_champions(tracker, horizons, _settings(tmp_path, shadow), workdir)


def test_the_champion_is_uploaded_with_its_registered_artifacts_and_takes_all_traffic(
    tracker, vertex, tmp_path
):
    register(tracker, "1m", tmp_path / "v1")
    version, run_id = register(tracker, "1m", tmp_path / "v2")
    tracker.set_alias("cbi-zl-1m", CHAMPION, version)

    [record] = _deploy(tracker, tmp_path)

    assert vertex.calls[0] == (
        "init",
        {"project": "p", "location": "europe-west4", "staging_bucket": None},
    )
    [upload] = vertex.uploads
    staged = tmp_path / "staging" / "cbi-zl-1m" / "v2"
    assert upload["artifact_uri"] == str(staged.resolve())
    assert upload["display_name"] == "cbi-zl-1m-v2"
    assert upload["serving_container_image_uri"] == IMAGE
    assert upload["serving_container_predict_route"] == "/predict"
    assert upload["serving_container_health_route"] == "/health"
    assert upload["serving_container_ports"] == [8080]
    assert upload["labels"] == {
        "cbi_model": "cbi-zl-1m",
        "horizon": "1m",
        "version": "2",
        "protocol_hash": PROTOCOL_HASH,
        "mlflow_run": run_id,
    }
    # The staged folder is the registered version itself: it loads and forecasts as v2 does.
    assert {p.name for p in staged.iterdir()} == {
        "members.joblib",
        "served_state.json",
        "ensemble.json",
        "deployment.json",
    }
    manifest = json.loads((staged / "deployment.json").read_text())
    assert (manifest["name"], manifest["version"], manifest["horizon"]) == ("cbi-zl-1m", "2", "1m")
    today = feature_frame("1m", seed=7)
    staged_forecast = ServedModel.from_folder(staged).predict(today).zone["forecast"]
    registered = load_version(tracker, "cbi-zl-1m", "2").predict(today).zone["forecast"]
    assert staged_forecast == registered

    [create] = [c for c in vertex.calls if c[0] == "create_endpoint"]
    assert create[1] == "cbi-zl-1m" and create[2]["horizon"] == "1m"
    [deploy_call] = [c for c in vertex.calls if c[0] == "deploy"]
    _, endpoint, model, kwargs = deploy_call
    assert (endpoint, model) == ("cbi-zl-1m", "cbi-zl-1m-v2")
    assert kwargs["traffic_split"] == {"0": 100}
    assert kwargs["machine_type"] == "n1-standard-4"
    assert kwargs["deployed_model_display_name"] == "cbi-zl-1m-v2"

    served = vertex.endpoint("cbi-zl-1m")
    [deployed] = served.deployed
    assert record.status == "deployed" and record.endpoint_created
    assert record.endpoint == served.resource_name
    assert record.models == {"cbi-zl-1m-v2": deployed.model}
    assert record.deployed_model_ids == {"cbi-zl-1m-v2": deployed.id}
    assert record.traffic_split == {"cbi-zl-1m-v2": 100}
    assert served.traffic_split == {deployed.id: 100}
    assert record.champion_version == "2" and record.challenger_version is None


def test_shadow_mode_splits_traffic_and_replaces_the_older_version_on_the_existing_endpoint(
    tracker, vertex, tmp_path
):
    for i in (1, 2, 3):
        register(tracker, "1m", tmp_path / f"v{i}")
    tracker.set_alias("cbi-zl-1m", CHAMPION, "1")
    _deploy(tracker, tmp_path)  # v1 alone on a new endpoint
    [old] = vertex.endpoint("cbi-zl-1m").deployed
    vertex.calls.clear()

    tracker.set_alias("cbi-zl-1m", CHAMPION, "2")  # v3 is now the challenger
    [record] = _deploy(tracker, tmp_path, shadow=10)

    assert "create_endpoint" not in vertex.kinds()  # the endpoint is updated, not duplicated
    assert [c[1] for c in vertex.calls if c[0] == "upload"] == ["cbi-zl-1m-v2", "cbi-zl-1m-v3"]
    deploys = [c for c in vertex.calls if c[0] == "deploy"]
    endpoint = vertex.endpoint("cbi-zl-1m")
    ids = {m.display_name: m.id for m in endpoint.deployed}
    # The champion first (v1 drops to 0%), then the challenger on 10% beside it.
    assert deploys[0][3]["traffic_split"] == {"0": 100}
    assert deploys[1][3]["traffic_split"] == {"0": 10, ids["cbi-zl-1m-v2"]: 90}
    assert ("undeploy", "cbi-zl-1m", old.id) in vertex.calls
    assert vertex.kinds().index("undeploy") > max(
        i for i, kind in enumerate(vertex.kinds()) if kind == "deploy"
    )
    assert set(ids) == {"cbi-zl-1m-v2", "cbi-zl-1m-v3"}
    assert endpoint.traffic_split == {ids["cbi-zl-1m-v2"]: 90, ids["cbi-zl-1m-v3"]: 10}
    assert record.traffic_split == {"cbi-zl-1m-v2": 90, "cbi-zl-1m-v3": 10}
    assert (record.champion_version, record.challenger_version) == ("2", "3")
    assert record.undeployed == ["cbi-zl-1m-v1"] and not record.endpoint_created
    assert json.loads(record.row()["traffic_split"]) == record.traffic_split


def test_a_rerun_with_nothing_changed_uploads_and_deploys_nothing(tracker, vertex, tmp_path):
    for i in (1, 2):
        register(tracker, "1m", tmp_path / f"v{i}")
    tracker.set_alias("cbi-zl-1m", CHAMPION, "1")
    _deploy(tracker, tmp_path, shadow=20)
    vertex.calls.clear()

    [record] = _deploy(tracker, tmp_path, shadow=20)

    assert set(vertex.kinds()) == {"init", "list_endpoints"}
    assert record.status == "unchanged"
    assert record.traffic_split == {"cbi-zl-1m-v1": 80, "cbi-zl-1m-v2": 20}


def test_promoting_the_challenger_moves_traffic_without_uploading_it_again(
    tracker, vertex, tmp_path
):
    for i in (1, 2):
        register(tracker, "1m", tmp_path / f"v{i}")
    tracker.set_alias("cbi-zl-1m", CHAMPION, "1")
    _deploy(tracker, tmp_path, shadow=10)
    endpoint = vertex.endpoint("cbi-zl-1m")
    ids = {m.display_name: m.id for m in endpoint.deployed}
    vertex.calls.clear()

    tracker.set_alias("cbi-zl-1m", CHAMPION, "2")  # promoted: no challenger above it
    [record] = _deploy(tracker, tmp_path, shadow=10)

    assert "upload" not in vertex.kinds() and "deploy" not in vertex.kinds()
    assert ("update", "cbi-zl-1m", {ids["cbi-zl-1m-v2"]: 100}) in vertex.calls
    assert ("undeploy", "cbi-zl-1m", ids["cbi-zl-1m-v1"]) in vertex.calls
    assert [m.display_name for m in endpoint.deployed] == ["cbi-zl-1m-v2"]
    assert record.traffic_split == {"cbi-zl-1m-v2": 100} and record.status == "deployed"


def test_a_horizon_without_champion_is_skipped_and_a_failing_one_does_not_stop_the_rest(
    tracker, vertex, tmp_path, monkeypatch
):
    register(tracker, "1w", tmp_path / "w1")  # registered, never promoted
    register(tracker, "1m", tmp_path / "m1")
    register(tracker, "3m", tmp_path / "q1")
    tracker.set_alias("cbi-zl-1m", CHAMPION, "1")
    tracker.set_alias("cbi-zl-3m", CHAMPION, "1")
    upload = vertex.upload

    def refuse_1m(**kwargs):
        if kwargs["display_name"].startswith("cbi-zl-1m"):
            raise RuntimeError("403 Permission denied on the staging bucket")
        return upload(**kwargs)

    monkeypatch.setattr(deploy.aiplatform.Model, "upload", refuse_1m)

    records = {r.horizon: r for r in _deploy(tracker, tmp_path, horizons=("1w", "1m", "3m"))}

    assert records["1w"].status == "skipped" and "no champion" in records["1w"].message
    assert records["1m"].status == "failed" and "Permission denied" in records["1m"].message
    assert records["3m"].status == "deployed"
    assert {e.display_name for e in vertex.endpoints} == {"cbi-zl-1m", "cbi-zl-3m"}


def test_traffic_plan_and_settings():
    assert deploy.traffic_plan("a", None, 10) == {"a": 100}
    assert deploy.traffic_plan("a", "b", 0) == {"a": 100}
    assert deploy.traffic_plan("a", "a", 10) == {"a": 100}
    assert deploy.traffic_plan("a", "b", 10) == {"a": 90, "b": 10}
    with pytest.raises(ValueError, match="between 0 and 50"):
        deploy.VertexSettings("p", "l", "img", "gs://b", shadow_traffic=60)
    with pytest.raises(ValueError, match="image_uri"):
        deploy.VertexSettings("p", "l", "", "gs://b")
    assert deploy.vertex_labels({"Protocol Hash": "AB/c" * 20}) == {
        "protocol_hash": "ab_c" * 15 + "ab_"
    }


def test_gcs_staging_uploads_every_file_under_the_version_prefix(tracker, tmp_path, monkeypatch):
    from google.cloud import storage

    version, _ = register(tracker, "1m", tmp_path / "v1")
    packaged = deploy.package_version(tracker, "1m", version, tmp_path / "work")
    uploaded = {}

    class Bucket:
        def __init__(self, name):
            self.name = name

        def blob(self, name):
            return SimpleNamespace(
                upload_from_filename=lambda path: uploaded.setdefault(
                    f"{self.name}/{name}", Path(path).stat().st_size
                )
            )

    monkeypatch.setattr(
        storage, "Client", lambda project=None: SimpleNamespace(bucket=lambda name: Bucket(name))
    )
    uri = deploy.stage_artifacts(packaged, "gs://cbi-models/vertex/", project="p")

    assert uri == "gs://cbi-models/vertex/cbi-zl-1m/v1"
    assert set(uploaded) == {
        f"cbi-models/vertex/cbi-zl-1m/v1/{name}"
        for name in ("members.joblib", "served_state.json", "ensemble.json", "deployment.json")
    }
    assert all(size > 0 for size in uploaded.values())
