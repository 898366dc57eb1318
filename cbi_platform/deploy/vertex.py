"""Deploy each horizon's champion (and, in shadow mode, its challenger) to a Vertex AI endpoint.

A registered version of `cbi-zl-<h>` is packaged exactly as it was registered (its `ensemble/`
artifacts: members.joblib, served_state.json, ensemble.json) plus `deployment.json` (name,
version, horizon, protocol hash), staged under `<staging>/cbi-zl-<h>/v<version>/`, uploaded to
the Vertex Model Registry as ONE Model served by the platform's own container
(`serving_container/`, which predicts through `ServedModel.predict`), and deployed to the
horizon's endpoint `cbi-zl-<h>`. Traffic goes 100% to the champion or, with a shadow share
s > 0, 100-s / s to champion and challenger; every other model on the endpoint is undeployed.
A version already deployed there is reused, never uploaded again (versions never change), so
a second run with nothing changed calls no upload and no deploy.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from google.cloud import aiplatform

from cbi_platform.deploy.serving_container.handler import DEPLOYMENT_FILE
from cbi_platform.release.versions import challenger_version, champion_version
from cbi_platform.serving.registry import ARTIFACT_PATH, ServedModel
from cbi_platform.tracking import Tracker, registered_model_name

PREDICT_ROUTE = "/predict"
HEALTH_ROUTE = "/health"
CONTAINER_PORT = 8080
MAX_SHADOW_TRAFFIC = 50  # the challenger never takes the larger share
_LABEL_INVALID = re.compile(r"[^a-z0-9_-]")


@dataclass(frozen=True)
class VertexSettings:
    """Where and how to deploy. `staging` is `gs://bucket[/prefix]` in production; a local
    folder stages the artifacts there instead (a dry run's package, and the tests)."""

    project: str
    location: str
    image_uri: str
    staging: str
    shadow_traffic: int = 0  # percent of requests the challenger answers (0: champion only)
    machine_type: str = "n1-standard-2"
    min_replica_count: int = 1
    max_replica_count: int = 1
    service_account: str | None = None  # the identity the serving container runs as

    def __post_init__(self) -> None:
        missing = [
            n for n in ("project", "location", "image_uri", "staging") if not getattr(self, n)
        ]
        if missing:
            raise ValueError(f"Vertex AI deployment needs {', '.join(missing)} to be set")
        if not 0 <= self.shadow_traffic <= MAX_SHADOW_TRAFFIC:
            raise ValueError(
                f"shadow traffic must be a percentage between 0 and {MAX_SHADOW_TRAFFIC}, "
                f"not {self.shadow_traffic}"
            )


def vertex_labels(values: Mapping[str, object]) -> dict[str, str]:
    """Labels as Vertex accepts them: lowercase letters, digits, `_` and `-`, 63 characters."""
    return {
        _LABEL_INVALID.sub("_", str(k).lower())[:63]: _LABEL_INVALID.sub("_", str(v).lower())[:63]
        for k, v in values.items()
    }


def deployed_name(horizon: str, version: str) -> str:
    """The display name of a version's Vertex Model and of its deployment on the endpoint."""
    return f"{registered_model_name(horizon)}-v{version}"


@dataclass(frozen=True)
class PackagedVersion:
    """A registered version's artifacts in a local folder, ready to stage."""

    horizon: str
    version: str
    folder: Path
    protocol_hash: str | None
    run_id: str

    @property
    def display_name(self) -> str:
        return deployed_name(self.horizon, self.version)

    def labels(self) -> dict[str, str]:
        return vertex_labels(
            {
                "cbi_model": registered_model_name(self.horizon),
                "horizon": self.horizon,
                "version": self.version,
                "protocol_hash": self.protocol_hash or "none",
                "mlflow_run": self.run_id,
            }
        )


def package_version(tracker: Tracker, horizon: str, version: str, workdir: Path) -> PackagedVersion:
    """Download the version's registered artifacts and check they load (what cannot load here
    cannot serve in the container either); adds `deployment.json`."""
    name = registered_model_name(horizon)
    run_id = tracker.version_run_id(name, version)
    folder = workdir / deployed_name(horizon, version)
    if folder.exists():
        shutil.rmtree(folder)
    local = tracker.download_artifacts(run_id, ARTIFACT_PATH, folder)
    served = ServedModel.from_folder(local, name=name, version=version)
    if served.horizon != horizon:
        raise ValueError(f"{name} v{version} holds a {served.horizon} model, not {horizon}")
    manifest = {
        "name": name,
        "version": version,
        "horizon": horizon,
        "horizon_days": served.horizon_days,
        "protocol_hash": served.protocol_hash,
        "mlflow_run_id": run_id,
        "trained_through": served.trained_through.isoformat(),
        "feature_names": served.feature_names,
    }
    (local / DEPLOYMENT_FILE).write_text(json.dumps(manifest, indent=1))
    return PackagedVersion(horizon, version, local, served.protocol_hash, run_id)


def stage_artifacts(packaged: PackagedVersion, staging: str, project: str | None = None) -> str:
    """Copy the package under `<staging>/cbi-zl-<h>/v<version>/`; returns that artifact URI."""
    relative = f"{registered_model_name(packaged.horizon)}/v{packaged.version}"
    files = sorted(p for p in packaged.folder.rglob("*") if p.is_file())
    if staging.startswith("gs://"):
        from google.cloud import storage

        bucket_name, _, prefix = staging.removeprefix("gs://").partition("/")
        prefix = "/".join(p for p in (prefix.strip("/"), relative) if p)
        bucket = storage.Client(project=project).bucket(bucket_name)
        for path in files:
            blob = bucket.blob(f"{prefix}/{path.relative_to(packaged.folder).as_posix()}")
            blob.upload_from_filename(str(path))
        return f"gs://{bucket_name}/{prefix}"
    destination = Path(staging.removeprefix("file://")) / relative
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(packaged.folder, destination)
    return str(destination.resolve())


def upload_model(
    packaged: PackagedVersion, artifact_uri: str, settings: VertexSettings
) -> aiplatform.Model:
    """One Vertex Model per registered version, served by the platform's container."""
    return aiplatform.Model.upload(
        display_name=packaged.display_name,
        artifact_uri=artifact_uri,
        serving_container_image_uri=settings.image_uri,
        serving_container_predict_route=PREDICT_ROUTE,
        serving_container_health_route=HEALTH_ROUTE,
        serving_container_ports=[CONTAINER_PORT],
        description=(
            f"{registered_model_name(packaged.horizon)} v{packaged.version}: CBOT ZL price "
            f"forecast, {packaged.horizon} horizon (MLflow run {packaged.run_id})"
        ),
        labels=packaged.labels(),
        sync=True,
    )


def horizon_endpoint(horizon: str) -> tuple[aiplatform.Endpoint, bool]:
    """The horizon's endpoint (the oldest named `cbi-zl-<h>`), created when there is none;
    returns it and whether it was created."""
    display_name = registered_model_name(horizon)
    found = aiplatform.Endpoint.list(
        filter=f'display_name="{display_name}"', order_by="create_time"
    )
    if found:
        return found[0], False
    labels = vertex_labels({"cbi_model": display_name, "horizon": horizon})
    return aiplatform.Endpoint.create(display_name=display_name, labels=labels), True


def traffic_plan(champion: str, challenger: str | None, shadow_traffic: int) -> dict[str, int]:
    """Percent of requests per deployed name: the champion all of it, or 100-s / s in shadow
    mode (a challenger that is the champion, or none, takes nothing)."""
    if challenger is None or challenger == champion or shadow_traffic == 0:
        return {champion: 100}
    return {champion: 100 - shadow_traffic, challenger: shadow_traffic}


@dataclass
class HorizonDeployment:
    """What one horizon's deployment did, with the Vertex resource names it touched."""

    horizon: str
    status: str  # deployed | unchanged | skipped | failed
    message: str = ""
    endpoint: str | None = None
    endpoint_created: bool = False
    champion_version: str | None = None
    challenger_version: str | None = None
    models: dict[str, str] = field(default_factory=dict)  # deployed name -> Model resource
    deployed_model_ids: dict[str, str] = field(default_factory=dict)  # deployed name -> id
    traffic_split: dict[str, int] = field(default_factory=dict)  # deployed name -> percent
    uploaded: list[str] = field(default_factory=list)
    undeployed: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """A flat row for the asset's table (mappings and lists as JSON)."""
        row = asdict(self)
        for key in ("models", "deployed_model_ids", "traffic_split", "uploaded", "undeployed"):
            row[key] = json.dumps(row[key], sort_keys=True)
        return row


def _deployed(endpoint: aiplatform.Endpoint) -> dict[str, Any]:
    """The endpoint's deployed models by display name."""
    return {m.display_name: m for m in endpoint.list_models()}


def deploy_horizon(
    tracker: Tracker, horizon: str, settings: VertexSettings, workdir: Path
) -> HorizonDeployment:
    """Serve the horizon's champion (and challenger) from its endpoint, as `traffic_plan` says."""
    name = registered_model_name(horizon)
    champion = champion_version(tracker, horizon)
    if champion is None:
        return HorizonDeployment(
            horizon, "skipped", f"{name}: no champion (no version passed promotion yet)"
        )
    challenger = challenger_version(tracker, horizon) if settings.shadow_traffic else None
    versions = {deployed_name(horizon, champion): champion}
    if challenger is not None:
        versions[deployed_name(horizon, challenger)] = challenger
    plan = traffic_plan(
        deployed_name(horizon, champion),
        deployed_name(horizon, challenger) if challenger else None,
        settings.shadow_traffic,
    )
    endpoint, created = horizon_endpoint(horizon)
    deployed = _deployed(endpoint)
    result = HorizonDeployment(
        horizon,
        "unchanged",
        endpoint=endpoint.resource_name,
        endpoint_created=created,
        champion_version=champion,
        challenger_version=challenger if len(plan) > 1 else None,
    )
    for label in plan:  # the champion first: an endpoint never serves a challenger alone
        if label in deployed:
            continue
        packaged = package_version(tracker, horizon, versions[label], workdir)
        artifact_uri = stage_artifacts(packaged, settings.staging, settings.project)
        model = upload_model(packaged, artifact_uri, settings)
        result.uploaded.append(label)
        # The plan over what already serves; this model ("0") takes the rest, and any model
        # outside the plan drops to 0% (undeployed below).
        split = {deployed[k].id: pct for k, pct in plan.items() if k in deployed}
        split["0"] = 100 - sum(split.values())
        endpoint.deploy(
            model,
            deployed_model_display_name=label,
            traffic_split=split,
            machine_type=settings.machine_type,
            min_replica_count=settings.min_replica_count,
            max_replica_count=settings.max_replica_count,
            service_account=settings.service_account,
            sync=True,
        )
        deployed = _deployed(endpoint)
    wanted = {deployed[k].id: pct for k, pct in plan.items()}
    current = {k: v for k, v in dict(endpoint.traffic_split or {}).items() if v}
    if current != wanted:
        endpoint.update(traffic_split=wanted)
        result.status = "deployed"
    for label, model in deployed.items():
        if label not in plan:
            endpoint.undeploy(deployed_model_id=model.id, sync=True)
            result.undeployed.append(label)
    if result.uploaded or result.undeployed:
        result.status = "deployed"
    result.models = {k: str(deployed[k].model) for k in plan}
    result.deployed_model_ids = {k: str(deployed[k].id) for k in plan}
    result.traffic_split = dict(plan)
    result.message = ", ".join(f"{k} {pct}%" for k, pct in plan.items())
    return result


def deploy_champions(
    tracker: Tracker, horizons: Iterable[str], settings: VertexSettings, workdir: Path
) -> list[HorizonDeployment]:
    """Deploy every horizon; one that fails is recorded as failed and the others still go."""
    aiplatform.init(
        project=settings.project,
        location=settings.location,
        staging_bucket=settings.staging if settings.staging.startswith("gs://") else None,
    )
    results = []
    for horizon in horizons:
        try:
            results.append(deploy_horizon(tracker, horizon, settings, workdir))
        except Exception as exc:  # recorded with its message; the caller decides to fail
            results.append(HorizonDeployment(horizon, "failed", f"{type(exc).__name__}: {exc}"))
    return results
