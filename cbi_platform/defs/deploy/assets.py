"""Serving outside the platform: the champions on Vertex AI endpoints (when configured)."""

import dagster as dg
import polars as pl

from cbi_platform.defs.resources import MlflowResource, OperationsResource
from cbi_platform.defs.vertex_resource import VertexDeployResource
from cbi_platform.reporting import markdown_table

GROUP = "serving"
DISABLED_MESSAGE = (
    "Vertex AI disabled (set CBI_VERTEX_PROJECT, CBI_VERTEX_IMAGE_URI and "
    "CBI_VERTEX_STAGING_BUCKET to deploy the champions)"
)
DEPLOYMENT_SCHEMA = {
    "horizon": pl.Utf8,
    "status": pl.Utf8,
    "message": pl.Utf8,
    "endpoint": pl.Utf8,
    "endpoint_created": pl.Boolean,
    "champion_version": pl.Utf8,
    "challenger_version": pl.Utf8,
    "models": pl.Utf8,  # JSON: deployed name -> Vertex Model resource name
    "deployed_model_ids": pl.Utf8,  # JSON: deployed name -> deployed model id
    "traffic_split": pl.Utf8,  # JSON: deployed name -> percent of requests
    "uploaded": pl.Utf8,  # JSON list of the versions uploaded by this run
    "undeployed": pl.Utf8,  # JSON list of what this run took off the endpoint
}


@dg.asset(
    group_name=GROUP,
    kinds={"vertexai", "mlflow"},
    deps=[dg.AssetKey("forecasts")],
    description="Each horizon's champion served from a Vertex AI endpoint by the platform's "
    "container (with the challenger on a shadow share of traffic when configured); records the "
    "Vertex resource names. Disabled, calling nothing, unless CBI_VERTEX_PROJECT is set.",
)
def vertex_deployment(
    context: dg.AssetExecutionContext,
    vertex: VertexDeployResource,
    mlflow: MlflowResource,
    operations: OperationsResource,
) -> dg.Output[pl.DataFrame]:
    if not vertex.enabled:
        frame = pl.DataFrame(
            [{"status": "disabled", "message": DISABLED_MESSAGE}], schema=DEPLOYMENT_SCHEMA
        )
        context.log.info(DISABLED_MESSAGE)
        return dg.Output(
            frame,
            metadata={"dagster/row_count": 1, "enabled": False, "status": DISABLED_MESSAGE},
        )
    records = vertex.deploy(mlflow.tracker(), operations.horizons)
    frame = pl.DataFrame([r.row() for r in records], schema=DEPLOYMENT_SCHEMA)
    shown = frame.select("horizon", "status", "endpoint", "traffic_split", "message")
    metadata = {
        "dagster/row_count": frame.height,
        "enabled": True,
        "project": vertex.project,
        "location": vertex.location,
        "image_uri": vertex.image_uri,
        "shadow_traffic": vertex.shadow_traffic,
        "deployments": dg.MetadataValue.md(markdown_table(shown)),
        "resources": dg.MetadataValue.json(
            {
                r.horizon: {
                    "endpoint": r.endpoint,
                    "models": r.models,
                    "deployed_model_ids": r.deployed_model_ids,
                    "traffic_split": r.traffic_split,
                }
                for r in records
                if r.endpoint
            }
        ),
    }
    failed = [r for r in records if r.status == "failed"]
    if failed:
        raise dg.Failure(
            description="Vertex AI deployment failed for "
            + "; ".join(f"{r.horizon}: {r.message}" for r in failed),
            metadata=metadata,
        )
    return dg.Output(frame, metadata=metadata)
