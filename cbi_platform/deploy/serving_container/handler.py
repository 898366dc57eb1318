"""The prediction server of the Vertex AI custom container (one registered version per model).

Vertex's contract: listen on $AIP_HTTP_PORT (8080), answer $AIP_HEALTH_ROUTE with 200 once the
model is loaded, and $AIP_PREDICT_ROUTE with `{"predictions": [...]}` for a request
`{"instances": [...]}`; the model's artifacts are at $AIP_STORAGE_URI (a `gs://` folder Vertex
copied them to, or a local folder). The artifacts are those `cbi_platform.deploy.vertex`
staged: the version's `ensemble/` files and `deployment.json`. They load with
`ServedModel.from_folder` and predict with `ServedModel.predict`, the platform's own
load-and-predict path, so the endpoint returns what `cbi forecast` would for the same data.

One instance is one forecast of the model's horizon:

    {
      "features": [{"date": "2024-06-03", "f_zl_ret_21": 0.012, ...}, ...],
      "closes": [44.1, 44.3, ..., 45.02],
      "context": {"regime": "normal", "vol_forecast": 0.21}
    }

- `features`: feature rows (objects: `date` ISO plus every feature the version was trained on,
  listed by GET on the health route); the forecast is made from the row with the latest date.
  One row is enough.
- `closes`: the target's closes in date order, ending at that row's date (statistical members
  read the history; send at least a year). Optional when the rows carry `price` (then those
  prices are the closes).
- `context`: optional; the detected regime and volatility forecast at that date (read by a
  meta-learner ensemble).

One prediction per instance: the price level (`forecast`), its log return, the zone quantiles
(`p10` ... `p90` and the bands), the CDF knots, the members' forecasts and weights, and the
version that made it (`model`, `version`, `horizon`). A bad instance fails the request with 400
and the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
from fastapi import Body, FastAPI, HTTPException

from cbi_platform.features.contract import DATE
from cbi_platform.serving.registry import MEMBERS_FILE, ServedModel

DEPLOYMENT_FILE = "deployment.json"  # written by cbi_platform.deploy.vertex.package_version


def download_gcs_folder(uri: str, destination: Path) -> Path:
    """Copy every object under a `gs://bucket/prefix` into `destination` (keeping sub-paths)."""
    from google.cloud import storage

    bucket_name, _, prefix = uri.removeprefix("gs://").partition("/")
    prefix = prefix.strip("/")
    client = storage.Client()
    for blob in client.list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None):
        relative = blob.name[len(prefix) :].lstrip("/") if prefix else blob.name
        if not relative or relative.endswith("/"):
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))
    return destination


def artifact_folder(storage_uri: str) -> Path:
    """A local folder holding the version's files (downloaded first when on GCS)."""
    if storage_uri.startswith("gs://"):
        local = download_gcs_folder(storage_uri, Path(tempfile.mkdtemp(prefix="cbi-model-")))
    else:
        local = Path(storage_uri.removeprefix("file://"))
    for candidate in (local, local / "ensemble"):
        if (candidate / MEMBERS_FILE).exists():
            return candidate
    raise FileNotFoundError(f"{storage_uri}: no {MEMBERS_FILE} (is it a staged cbi-zl version?)")


def load_served(folder: Path) -> ServedModel:
    manifest_path = folder / DEPLOYMENT_FILE
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    return ServedModel.from_folder(
        folder, name=manifest.get("name"), version=manifest.get("version")
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_safe(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def instance_inputs(
    instance: Any,
) -> tuple[pl.DataFrame, np.ndarray | None, dict[str, Any] | None]:
    """The features frame, closes and context of one instance (see the module docstring)."""
    if not isinstance(instance, dict) or not isinstance(instance.get("features"), list):
        raise ValueError('an instance is an object with a "features" list of rows')
    rows = instance["features"]
    if not rows or not all(isinstance(r, dict) and r.get(DATE) for r in rows):
        raise ValueError(f'every feature row is an object with a "{DATE}"')
    frame = pl.DataFrame(rows, infer_schema_length=None)
    frame = frame.with_columns(pl.col(DATE).cast(pl.Utf8).str.to_date("%Y-%m-%d"))
    closes = instance.get("closes")
    if closes is not None:
        closes = np.asarray(closes, dtype=float)
    context = instance.get("context")
    if context is not None and not isinstance(context, dict):
        raise ValueError('"context" is an object (regime, vol_forecast)')
    return frame, closes, context


def predict_instance(model: ServedModel, instance: Any) -> dict[str, Any]:
    """One prediction: `ServedModel.predict` on the instance, with the version that made it."""
    features, closes, context = instance_inputs(instance)
    served = model.predict(features, closes, context)
    return _json_safe(
        {
            **served.zone,
            "horizon": model.horizon,
            "model": model.name,
            "version": model.version,
            "member_logrets": served.member_logrets,
            "weights": served.weights,
            "weight_kind": served.weight_kind,
        }
    )


def create_app(storage_uri: str | None = None) -> FastAPI:
    """The app for the artifacts at `storage_uri` (default: $AIP_STORAGE_URI), loaded once."""
    storage_uri = storage_uri or os.environ.get("AIP_STORAGE_URI")
    if not storage_uri:
        raise RuntimeError("AIP_STORAGE_URI is not set: where are the model's artifacts?")
    model = load_served(artifact_folder(storage_uri))
    predict_route = os.environ.get("AIP_PREDICT_ROUTE", "/predict")
    health_route = os.environ.get("AIP_HEALTH_ROUTE", "/health")
    app = FastAPI(title=f"{model.name or 'cbi-zl'} v{model.version} ({model.horizon})")

    @app.get(health_route)
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model.name,
            "version": model.version,
            "horizon": model.horizon,
            "protocol_hash": model.protocol_hash,
            "trained_through": model.trained_through.isoformat(),
            "feature_names": model.feature_names,
        }

    @app.post(predict_route)
    def predict(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise HTTPException(400, 'the request is {"instances": [...]} with one or more')
        predictions = []
        for i, instance in enumerate(instances):
            try:
                predictions.append(predict_instance(model, instance))
            except (ValueError, TypeError, pl.exceptions.PolarsError) as exc:
                raise HTTPException(400, f"instance {i}: {exc}") from exc
        return {"predictions": predictions}

    return app


def main() -> None:
    """The container's entry point: serve on $AIP_HTTP_PORT (Vertex sets it; 8080 otherwise)."""
    import uvicorn

    port = int(os.environ.get("AIP_HTTP_PORT", "8080"))
    uvicorn.run(create_app(), host="0.0.0.0", port=port, log_level="info")


if __name__ == "__main__":
    main()
