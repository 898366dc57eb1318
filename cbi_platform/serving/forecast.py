"""The forecast record a buyer reads: price level, target zones, probability, regime, drivers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np

from cbi_platform.ensemble.conformal import default_band

FORECAST_COLUMNS = (
    "as_of",
    "horizon",
    "model_version",
    "target_date",
    "price",
    "forecast",
    "p10",
    "p30",
    "p50",
    "p70",
    "p90",
    "lo90",
    "hi90",
    "band_lo",
    "band_hi",
    "band_probability",
    "statement",
    "regime",
    "regime_outlook",
    "drivers",
    "volatility",
    "combiner",
    "shrink_weight",
    "data_last_date",
    "data_reference_date",
    "data_business_days_behind",
    "created_at",
)


def assemble_forecast(
    zone: Mapping,
    *,
    horizon: str,
    horizon_days: int,
    model_version: str,
    regime: str | None,
    regime_outlook: Mapping[str, float],
    drivers: Sequence[str],
    volatility: float | None,
    data_reference_date: dt.date,
    unit: str = "c/lb",
    symbol: str = "ZL",
) -> dict:
    """One row of the forecast history from the live origin's zone row."""
    target_date = zone.get("target_date") or _business_days_ahead(zone["origin"], horizon_days)
    calibrated = all(zone.get(k) is not None for k in ("p10", "p50", "p90", "lo90", "hi90"))
    if calibrated:
        band_lo, band_hi, probability = default_band(zone)
        statement = (
            f"{probability:.0%} probability {symbol} is between {band_lo:.2f} and {band_hi:.2f} "
            f"{unit} on {target_date} ({horizon}, {horizon_days} trading days)"
        )
    else:
        band_lo = band_hi = probability = None
        statement = (
            f"point forecast {float(zone['forecast']):.2f} {unit} on {target_date}; no calibrated "
            f"zone yet ({zone.get('n_calibration') or 0:.0f} walk-forward residuals known, "
            "more are needed): extend the history or lower the horizon"
        )
    last = zone["origin"]
    behind = int(np.busday_count(np.datetime64(last, "D"), np.datetime64(data_reference_date, "D")))
    return {
        "as_of": last,
        "horizon": horizon,
        "model_version": model_version,
        "target_date": target_date,
        "price": float(zone["price"]),
        "forecast": float(zone["forecast"]),
        **{k: _num(zone.get(k)) for k in ("p10", "p30", "p50", "p70", "p90", "lo90", "hi90")},
        "band_lo": _num(band_lo),
        "band_hi": _num(band_hi),
        "band_probability": _num(probability),
        "statement": statement,
        "regime": regime,
        "regime_outlook": ", ".join(
            f"{k} {v:.0%}" for k, v in sorted(regime_outlook.items(), key=lambda kv: -kv[1])
        ),
        "drivers": list(drivers),
        "volatility": None if volatility is None else float(volatility),
        "combiner": zone.get("combiner"),
        "shrink_weight": _num(zone.get("shrink_weight")),
        "data_last_date": last,
        "data_reference_date": data_reference_date,
        "data_business_days_behind": max(behind, 0),
        "created_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
    }


def _business_days_ahead(day: dt.date, n: int) -> dt.date:
    return np.busday_offset(np.datetime64(day, "D"), n, roll="forward").astype(dt.date)


def _num(value) -> float | None:
    return None if value is None else float(value)
