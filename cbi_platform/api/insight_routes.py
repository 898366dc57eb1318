"""The buyer's insight endpoints (issue 22 §3, §4, §7): GET /calibration/{horizon},
/intelligence and /notices, read-only and keyed like the other data endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from cbi_platform.api import schemas
from cbi_platform.api.data import HomeReader


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


def router(reader: HomeReader, keyed: dict[str, Any]) -> APIRouter:
    """The endpoints over `reader`; `keyed`: the app's key dependency and error responses."""
    routes = APIRouter()

    @routes.get(
        "/calibration/{horizon}",
        response_model=schemas.CalibrationOut,
        tags=["forecasts"],
        **keyed,
    )
    def calibration(horizon: schemas.Horizon):
        """What past forecasts said, and what happened: the past target zones of matured served
        forecasts with the realised price, and how often each zone held (with a 95% interval
        from the effective sample size). On a home where nothing served has matured: the
        walk-forward's past zones, labelled so; with neither, an empty state."""
        return _json(reader.calibration(horizon.value))

    @routes.get("/intelligence", response_model=schemas.IntelligenceOut, tags=["market"], **keyed)
    def intelligence():
        """Market intelligence, each item with its own as-of date and whether it is stale: the
        detected regime (how long it has lasted, the classifier's probabilities), the volatility
        forecast against its own history, the soy–crude and soy–palm correlations, COT
        positioning and news sentiment (or why one is absent)."""
        return _json(reader.intelligence())

    @routes.get("/notices", response_model=schemas.NoticesOut, tags=["forecasts"], **keyed)
    def notices():
        """Per served horizon, what the buyer must never misread: a provisional forecast, stale
        data, a forecast that is the random walk; one plain sentence each."""
        return _json(reader.notices())

    return routes
