"""Serve one horizon: load the version that serves and build the forecast record.

Which version serves is decided in the release room (`cbi_platform.release`); this module only
loads it from the registry, forecasts today's data with it and builds the row of the forecast
history (drivers, regime, volatility, the achieved-probability statement). The pipeline's
`forecasts` asset and the daily refresh (champion and shadow) both build rows here.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.ensemble.combiners import ENSEMBLE
from cbi_platform.ensemble.conformal import ZONE_COLUMNS
from cbi_platform.explain.shap_tables import explain_row
from cbi_platform.features.contract import DATE, HORIZONS
from cbi_platform.serving.drivers import explain_forecast
from cbi_platform.serving.forecast import assemble_forecast
from cbi_platform.serving.registry import ServedForecast, ServedModel, load_version
from cbi_platform.tracking import Tracker, registered_model_name


@dataclass
class Served:
    record: dict[str, Any]  # one row of the forecast history
    forecast: ServedForecast
    model: ServedModel = field(repr=False)
    reload_gap_logret: float | None  # vs the pipeline's live forecast (a just-registered version)


def live_zone(zones: pl.DataFrame, horizon: str) -> dict[str, Any]:
    live = zones.filter((pl.col("model") == ENSEMBLE) & (pl.col("role") == "live"))
    if live.height != 1:
        raise ValueError(f"{horizon}: expected one live ensemble zone row, found {live.height}")
    return live.row(0, named=True)


def member_shap(served: ServedModel, forecast: ServedForecast, origin: dt.date) -> pl.DataFrame:
    """SHAP of every served feature member at today's row (long format): the weighted ones
    explain the forecast, the others show the signals the ensemble did not use."""
    frames = []
    for name, model in served.members.items():
        vector = explain_row(model, model.spec, forecast.rows_for(name), served.feature_names)
        if vector is None:
            continue
        values, base = vector[None, :-1], vector[-1]
        frames.append(
            pl.DataFrame(
                {
                    "horizon": served.horizon,
                    "model": name,
                    "origin": origin,
                    "feature": served.feature_names,
                    "value": forecast.x_row[0].astype(float),
                    "shap": values[0].astype(float),
                    "base": float(base),
                }
            )
        )
    schema = {
        "horizon": pl.Utf8,
        "model": pl.Utf8,
        "origin": pl.Date,
        "feature": pl.Utf8,
        "value": pl.Float64,
        "shap": pl.Float64,
        "base": pl.Float64,
    }
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def context_at(context: pl.DataFrame, day: dt.date) -> dict[str, Any]:
    ctx = context.rename({"date": "origin"}) if "date" in context.columns else context
    row = ctx.filter(pl.col("origin") == day)
    found = row.row(0, named=True) if row.height else {}
    return {"regime": found.get("regime"), "vol_forecast": found.get("vol_forecast")}


def reproduction_gap(served: Mapping[str, Any], live: Mapping[str, Any]) -> float:
    """Largest log gap between a reloaded version's forecast/zone and the pipeline's."""
    gaps = [abs(float(served["forecast_logret"]) - float(live["forecast_logret"]))]
    for column in ZONE_COLUMNS:
        if served.get(column) is not None and live.get(column) is not None:
            gaps.append(abs(math.log(float(served[column]) / float(live[column]))))
    return max(gaps)


def forecast_record(
    served_model: ServedModel,
    served: ServedForecast,
    *,
    leaderboard: pl.DataFrame,
    regimes: pl.DataFrame,
    context_now: Mapping[str, Any],
    regime_outlook: Mapping[str, float],
    data_reference_date: dt.date,
    served_version: str,
    registered_version: str | None,
    provisional: bool,
    failed_gates: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    """One row of the forecast history from a loaded version's forecast: drivers from SHAP of
    its members at today's row, regime, volatility, the achieved-probability statement. The
    pipeline's publication and the daily refresh (champion and shadow) both build rows here."""
    horizon = served_model.horizon
    origin = served.zone["origin"]
    shap_now = member_shap(served_model, served, origin)
    weights = pl.DataFrame(
        {
            "horizon": horizon,
            "origin": origin,
            "model": [m for m in served.weights if not m.startswith("context:")],
            "weight": [w for m, w in served.weights.items() if not m.startswith("context:")],
            "weight_kind": served.weight_kind,
        }
    )
    lines, numbers, note = explain_forecast(shap_now, weights, leaderboard, horizon)
    regime = regimes.filter(pl.col("date") == origin)["regime"]
    return assemble_forecast(
        {**served.zone, "combiner": served_model.ensemble.combiner},
        horizon=horizon,
        horizon_days=HORIZONS[horizon],
        model_version=f"{registered_model_name(horizon)}/v{served_version}",
        regime=regime[0] if regime.len() else None,
        regime_outlook=regime_outlook,
        drivers=lines,
        volatility=_finite(context_now.get("vol_forecast")),
        data_reference_date=data_reference_date,
        past_pit=served_model.calibration.past_pit,
        vol_model=served_model.calibration.vol_model,
        drivers_detail=numbers,
        driver_note=note,
        registered_version=registered_version,
        provisional=provisional,
        failed_gates=failed_gates,
        protocol_hash=served_model.protocol_hash,
    )


def serve_version(
    tracker: Tracker,
    horizon: str,
    version: str,
    *,
    features: pl.DataFrame,
    context: pl.DataFrame,
    leaderboard: pl.DataFrame,
    regimes: pl.DataFrame,
    regime_outlook: Mapping[str, float],
    data_reference_date: dt.date,
    registered_version: str | None,
    provisional: bool,
    failed_gates: tuple[str, ...] | list[str] = (),
    live: Mapping[str, Any] | None = None,
    cache: Path | None = None,
) -> Served:
    """Load `version` of the horizon, forecast from the last row of `features` with the context
    the ensemble used at that date, and build the history row. With `live` (the pipeline's live
    zone row, when the version served is the one just registered), the reload's gap to it is
    measured. `cache`: the home's model cache (a version this process loaded there is reused);
    without it, a temporary download."""
    name = registered_model_name(horizon)
    features = features.sort(DATE)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_version(tracker, name, version, cache or Path(tmp), keep=cache is not None)
    context_now = context_at(context, features[DATE][-1])
    forecast = model.predict(features, None, context_now)
    gap = reproduction_gap(forecast.zone, live) if live is not None else None
    record = forecast_record(
        model,
        forecast,
        leaderboard=leaderboard,
        regimes=regimes,
        context_now=context_now,
        regime_outlook=regime_outlook,
        data_reference_date=data_reference_date,
        served_version=version,
        registered_version=registered_version,
        provisional=provisional,
        failed_gates=failed_gates,
    )
    return Served(record, forecast, model, gap)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


RANDOM_WALK_VERSION = "random_walk"  # the history's model_version when no version can serve
RW_VOL_WINDOW = 252  # trading days of daily log returns behind the random walk's normal band
RW_CDF_KNOTS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)


def random_walk_record(
    horizon: str,
    closes: pl.DataFrame,
    *,
    regimes: pl.DataFrame,
    regime_outlook: Mapping[str, float],
    data_reference_date: dt.date,
    reasons: tuple[str, ...] | list[str],
) -> dict[str, Any]:
    """The forecast record when no registered version can serve: no change from the last close,
    with the random walk's normal band (trailing daily volatility x sqrt(h)), always provisional
    with the reasons. `closes`: the target's (date, value) up to today."""
    from scipy.stats import norm  # heavy: delayed (scipy.stats)

    closes = closes.sort("date")
    price = float(closes["value"][-1])
    as_of = closes["date"][-1]
    logs = np.log(closes["value"].to_numpy()[-(RW_VOL_WINDOW + 1) :])
    sigma = float(np.std(np.diff(logs), ddof=1)) * math.sqrt(HORIZONS[horizon])
    levels = {"lo90": 0.05, "p10": 0.10, "p30": 0.30, "p50": 0.50, "p70": 0.70, "p90": 0.90}
    zone = {
        "origin": as_of,
        "target_date": None,
        "price": price,
        "forecast_logret": 0.0,
        "forecast": price,
        **{k: price * math.exp(float(norm.ppf(q)) * sigma) for k, q in levels.items()},
        "hi90": price * math.exp(float(norm.ppf(0.95)) * sigma),
        "cdf_logret": [float(norm.ppf(q)) * sigma for q in RW_CDF_KNOTS],
        "cdf_prob": list(RW_CDF_KNOTS),
        "combiner": RANDOM_WALK_VERSION,
    }
    regime = regimes.filter(pl.col("date") == as_of)["regime"]
    return assemble_forecast(
        zone,
        horizon=horizon,
        horizon_days=HORIZONS[horizon],
        model_version=RANDOM_WALK_VERSION,
        regime=regime[0] if regime.len() else None,
        regime_outlook=regime_outlook,
        drivers=["no drivers: the random walk serves (no change from the last close)"],
        volatility=None,
        data_reference_date=data_reference_date,
        provisional=True,
        failed_gates=tuple(reasons),
    )
