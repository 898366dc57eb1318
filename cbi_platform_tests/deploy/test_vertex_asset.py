"""The `vertex_deployment` asset: disabled by default (calls nothing), switched on by the
CBI_VERTEX_* variables, recording the Vertex resource names it deployed."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb

from cbi_platform.defs.deploy.assets import DISABLED_MESSAGE, vertex_deployment
from cbi_platform.defs.resources import build_resources
from cbi_platform.release.versions import CHAMPION
from cbi_platform.tracking import Tracker
from cbi_platform_tests.deploy.conftest import register

VERTEX_ENV = {
    "CBI_VERTEX_PROJECT": "cbi-prod",
    "CBI_VERTEX_LOCATION": "europe-west4",
    "CBI_VERTEX_IMAGE_URI": "europe-west4-docker.pkg.dev/cbi-prod/cbi/serving:abc",
    "CBI_VERTEX_SHADOW_TRAFFIC": "10",
}


def _materialize(resources):
    return dg.materialize(
        [vertex_deployment], resources=resources, instance=dg.DagsterInstance.ephemeral()
    )


def test_disabled_by_default_it_materializes_a_notice_and_calls_nothing(tmp_path, monkeypatch):
    from google.cloud import aiplatform

    def forbidden(*args, **kwargs):
        raise AssertionError("Vertex AI was called while disabled")

    monkeypatch.setattr(aiplatform, "init", forbidden)
    monkeypatch.setattr(aiplatform.Model, "upload", forbidden)
    monkeypatch.setattr(aiplatform.Endpoint, "list", forbidden)
    home = tmp_path / "home"
    resources = build_resources({"CBI_HOME": str(home)})
    assert not resources["vertex"].enabled

    result = _materialize(resources)

    assert result.success
    frame = result.output_for_node("vertex_deployment")
    assert frame.select("status", "message").rows() == [("disabled", DISABLED_MESSAGE)]
    assert DISABLED_MESSAGE.startswith("Vertex AI disabled (set CBI_VERTEX_PROJECT")
    [materialization] = result.asset_materializations_for_node("vertex_deployment")
    assert materialization.metadata["enabled"].value is False
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("select status from cbi.vertex_deployment").fetchall() == [("disabled",)]


def test_enabled_it_deploys_each_champion_and_records_the_vertex_resources(tmp_path, vertex):
    home = tmp_path / "home"
    staging = tmp_path / "staging"
    env = {**VERTEX_ENV, "CBI_HOME": str(home), "CBI_VERTEX_STAGING_BUCKET": str(staging)}
    resources = build_resources(env)
    tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts")  # the resource's
    for i in (1, 2):
        register(tracker, "1m", tmp_path / f"v{i}")
    tracker.set_alias("cbi-zl-1m", CHAMPION, "1")

    result = _materialize(resources)

    assert result.success
    rows = {r["horizon"]: r for r in result.output_for_node("vertex_deployment").to_dicts()}
    assert set(rows) == {"1w", "1m", "3m", "6m", "12m"}  # every horizon the daily loop serves
    assert rows["1w"]["status"] == "skipped"
    deployed = rows["1m"]
    endpoint = vertex.endpoint("cbi-zl-1m")
    ids = {m.display_name: m.id for m in endpoint.deployed}
    assert deployed["status"] == "deployed" and deployed["endpoint"] == endpoint.resource_name
    assert json.loads(deployed["traffic_split"]) == {"cbi-zl-1m-v1": 90, "cbi-zl-1m-v2": 10}
    assert json.loads(deployed["deployed_model_ids"]) == ids
    assert vertex.calls[0] == (
        "init",
        {"project": "cbi-prod", "location": "europe-west4", "staging_bucket": None},
    )
    assert Path(vertex.uploads[0]["artifact_uri"]).is_relative_to(staging)
    [materialization] = result.asset_materializations_for_node("vertex_deployment")
    recorded = materialization.metadata["resources"].value
    assert recorded["1m"]["endpoint"] == endpoint.resource_name
    assert recorded["1m"]["models"]["cbi-zl-1m-v2"] == endpoint.deployed[1].model
    assert materialization.metadata["shadow_traffic"].value == 10


def test_a_half_configured_deployment_fails_before_calling_vertex(tmp_path, vertex):
    env = {"CBI_HOME": str(tmp_path / "home"), "CBI_VERTEX_PROJECT": "cbi-prod"}
    result = dg.materialize(
        [vertex_deployment],
        resources=build_resources(env),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "image_uri, staging" in str(failure.step_failure_data.error)
    assert vertex.calls == []


def test_the_resource_is_switched_by_the_environment():
    assert not build_resources({"CBI_HOME": "/tmp/cbi-test-home"})["vertex"].enabled
    configured = build_resources(
        {**VERTEX_ENV, "CBI_HOME": "/tmp/cbi-test-home", "CBI_VERTEX_STAGING_BUCKET": "gs://b/v"}
    )["vertex"]
    assert configured.enabled
    settings = configured.settings()
    assert (settings.project, settings.location, settings.staging) == (
        "cbi-prod",
        "europe-west4",
        "gs://b/v",
    )
    assert (
        settings.shadow_traffic == 10 and settings.image_uri == VERTEX_ENV["CBI_VERTEX_IMAGE_URI"]
    )
