"""The forecast record a buyer reads: price level, target zones, probability, regime, drivers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np

from cbi_platform.ensemble.conformal import default_band
from cbi_platform.serving.calibration import achieved_band
from cbi_platform.serving.record import ForecastRecord


def p50_note(forecast: float, p50: float | None, unit: str = "c/lb") -> str | None:
    """Why P50 and the point forecast differ: P50 = forecast + the median past residual."""
    if p50 is None:
        return None
    gap = p50 - forecast
    if abs(gap) < 0.005:
        return "P50 equals the point forecast: past errors at this horizon had a median of zero"
    return (
        f"P50 sits {abs(gap):.2f} {unit} {'above' if gap > 0 else 'below'} the point forecast: "
        f"past errors at this horizon were skewed {'up' if gap > 0 else 'down'} by a median of "
        f"{p50 / forecast - 1:+.1%}"
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
    past_pit: Sequence[float] = (),
    vol_model: str | None = None,
    drivers_detail: Sequence[Mapping] = (),
    driver_note: str | None = None,
    registered_version: str | None = None,
    provisional: bool = False,
    failed_gates: Sequence[str] = (),
    protocol_hash: str | None = None,
    unit: str = "c/lb",
    symbol: str = "ZL",
) -> dict:
    """One row of the forecast history (a `ForecastRecord` as a dict) from the zone row.

    The stated probability is the one the band achieved on the series' past resolved
    forecasts (`past_pit`, their PIT values), with their number; the nominal level stays
    beside it. A provisional forecast (the served version failed a promotion gate, or could not
    serve and a fallback does) says so, with the reasons.
    """
    target_date = zone.get("target_date") or _business_days_ahead(zone["origin"], horizon_days)
    calibrated = all(zone.get(k) is not None for k in ("p10", "p50", "p90", "lo90", "hi90"))
    band = None
    if calibrated:
        band_lo, band_hi, _ = default_band(zone)
        band = achieved_band(zone, band_lo, band_hi, past_pit)
        where = f"between {band_lo:.2f} and {band_hi:.2f} {unit} on {target_date}"
        if band.achieved is None:
            statement = (
                f"{symbol} {where}: nominal {band.nominal:.0%}, not yet checked against any "
                f"resolved forecast ({horizon}, {horizon_days} trading days)"
            )
        else:
            statement = (
                f"{band.achieved:.0%} probability {symbol} is {where} (this band held in "
                f"{band.hits} of {band.resolved} past resolved forecasts; nominal "
                f"{band.nominal:.0%}; {horizon}, {horizon_days} trading days)"
            )
    else:
        statement = (
            f"point forecast {float(zone['forecast']):.2f} {unit} on {target_date}; no calibrated "
            f"zone yet ({zone.get('n_calibration') or 0:.0f} walk-forward residuals known, "
            "more are needed): extend the history or lower the horizon"
        )
    if provisional:
        statement = (
            f"PROVISIONAL (the served version failed the promotion gates or cannot serve: "
            f"{'; '.join(failed_gates)}). "
            + statement
        )
    last = zone["origin"]
    behind = int(np.busday_count(np.datetime64(last, "D"), np.datetime64(data_reference_date, "D")))
    forecast = float(zone["forecast"])
    p50 = _num(zone.get("p50"))
    record = {
        "as_of": last,
        "horizon": horizon,
        "model_version": model_version,
        "target_date": target_date,
        "price": float(zone["price"]),
        "forecast": forecast,
        **{k: _num(zone.get(k)) for k in ("p10", "p30", "p50", "p70", "p90", "lo90", "hi90")},
        "band_lo": None if band is None else band.lo,
        "band_hi": None if band is None else band.hi,
        "band_probability": None if band is None else band.achieved,
        "band_probability_nominal": None if band is None else band.nominal,
        "band_hits": None if band is None else band.hits,
        "band_resolved": None if band is None else band.resolved,
        "statement": statement,
        "p50_note": p50_note(forecast, p50, unit),
        "regime": regime,
        "regime_outlook": ", ".join(
            f"{k} {v:.0%}" for k, v in sorted(regime_outlook.items(), key=lambda kv: -kv[1])
        ),
        "drivers": list(drivers),
        "drivers_detail": [dict(d) for d in drivers_detail],
        "driver_note": driver_note,
        "volatility": None if volatility is None else float(volatility),
        "vol_model": vol_model,
        "combiner": zone.get("combiner"),
        "shrink_weight": _num(zone.get("shrink_weight")),
        "registered_version": registered_version,
        "provisional": bool(provisional),
        "failed_gates": list(failed_gates),
        "protocol_hash": protocol_hash,
        "data_last_date": last,
        "data_reference_date": data_reference_date,
        "data_business_days_behind": max(behind, 0),
        "created_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
    }
    return ForecastRecord(**record).as_dict()  # a missing or unknown field fails here


def _business_days_ahead(day: dt.date, n: int) -> dt.date:
    return np.busday_offset(np.datetime64(day, "D"), n, roll="forward").astype(dt.date)


def _num(value) -> float | None:
    return None if value is None else float(value)
