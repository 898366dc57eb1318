"""The Vertex AI deployment resource (configured from the environment in `defs/resources.py`)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
from pydantic import Field

ENV_VARS = (
    "CBI_VERTEX_PROJECT",
    "CBI_VERTEX_LOCATION",
    "CBI_VERTEX_IMAGE_URI",
    "CBI_VERTEX_STAGING_BUCKET",
    "CBI_VERTEX_SHADOW_TRAFFIC",
)


class VertexDeployResource(dg.ConfigurableResource):
    """Deploys each horizon's champion to a Vertex AI endpoint (`cbi_platform.deploy.vertex`).
    Disabled, calling nothing, while no project is set."""

    project: str | None = Field(default=None, description="GCP project; unset: disabled")
    location: str = Field(default="us-central1", description="Vertex AI region")
    image_uri: str | None = Field(default=None, description="the serving container image")
    staging_bucket: str | None = Field(
        default=None, description="gs://bucket[/prefix] the versions' artifacts are staged in"
    )
    shadow_traffic: int = Field(
        default=0, description="percent of requests the challenger answers (0: champion only)"
    )
    machine_type: str = "n1-standard-2"
    min_replica_count: int = 1
    max_replica_count: int = 1
    service_account: str | None = Field(
        default=None, description="the service account the serving container runs as"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.project)

    def settings(self):
        from cbi_platform.deploy.vertex import VertexSettings

        return VertexSettings(
            project=self.project or "",
            location=self.location,
            image_uri=self.image_uri or "",
            staging=self.staging_bucket or "",
            shadow_traffic=self.shadow_traffic,
            machine_type=self.machine_type,
            min_replica_count=self.min_replica_count,
            max_replica_count=self.max_replica_count,
            service_account=self.service_account,
        )

    def deploy(self, tracker, horizons: Iterable[str]) -> list:
        """Deploy every horizon's champion; returns one `HorizonDeployment` per horizon."""
        from cbi_platform.deploy.vertex import deploy_champions

        settings = self.settings()  # refuses a half-configured deployment before any call
        with tempfile.TemporaryDirectory(prefix="cbi-vertex-") as workdir:
            return deploy_champions(tracker, horizons, settings, Path(workdir))
