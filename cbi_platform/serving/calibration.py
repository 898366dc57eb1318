"""The calibration a served version carries, and probabilities that were actually achieved.

A version keeps its live zone as offsets in log-return space from the live point forecast
(zone quantiles and the conformal CDF knots), so the same calibration can be laid around the
forecast of a later day. It also keeps the PIT values F_s(actual_s) of the past resolved
forecasts of its series: the share of them that fell inside a band's CDF levels [a, b] is the
probability that band actually achieved, which is the one a statement may state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.ensemble.conformal import ZONE_COLUMNS


def _logret_cdf(row: Mapping[str, Any], lo_price: float, hi_price: float) -> tuple[float, float]:
    """CDF levels F(lo), F(hi) of the row's conformal distribution at two price levels."""
    x = np.asarray(row["cdf_logret"], dtype=float)
    p = np.asarray(row["cdf_prob"], dtype=float)
    bounds = np.log(np.array([lo_price, hi_price]) / float(row["price"]))
    lo_p, hi_p = np.interp(bounds, x, p, left=0.0, right=1.0)
    return float(lo_p), float(hi_p)


def pit_values(zones: pl.DataFrame, before: Any | None = None) -> list[float]:
    """PIT F_s(actual_s) of every resolved, calibrated row (one series), in origin order.

    `before`: only origins strictly before it (the live origin), whose actuals were known.
    """
    frame = zones.filter(
        pl.col("actual").is_not_null()
        & pl.col("cdf_logret").is_not_null()
        & pl.col("cdf_prob").is_not_null()
    )
    if before is not None:
        frame = frame.filter(pl.col("origin") < before)
    if "target_date" in frame.columns and before is not None:
        frame = frame.filter(pl.col("target_date").is_null() | (pl.col("target_date") <= before))
    out = []
    for row in frame.sort("origin").iter_rows(named=True):
        y = math.log(float(row["actual"]) / float(row["price"]))
        x = np.asarray(row["cdf_logret"], dtype=float)
        p = np.asarray(row["cdf_prob"], dtype=float)
        out.append(float(np.interp(y, x, p, left=0.0, right=1.0)))
    return out


@dataclass(frozen=True)
class AchievedBand:
    lo: float
    hi: float
    nominal: float  # what the CDF says
    hits: int  # past resolved forecasts whose outcome fell in the band's CDF levels
    resolved: int  # past resolved forecasts
    achieved: float | None  # hits / resolved; None without resolved forecasts


def achieved_band(
    row: Mapping[str, Any], lo: float, hi: float, past_pit: Sequence[float]
) -> AchievedBand:
    """How often a band with these CDF levels held on the series' past resolved forecasts."""
    a, b = _logret_cdf(row, lo, hi)
    pit = np.asarray(past_pit, dtype=float)
    pit = pit[np.isfinite(pit)]
    hits = int(((pit >= a) & (pit <= b)).sum())
    achieved = hits / pit.size if pit.size else None
    return AchievedBand(float(lo), float(hi), max(b - a, 0.0), hits, int(pit.size), achieved)


@dataclass(frozen=True)
class CalibrationState:
    """The live zone of one version, relative to its point forecast (log returns)."""

    method: str  # the conformal variant used at the live origin, or "insufficient"
    zone_offsets: dict[str, float] | None  # ZONE_COLUMNS -> log(quantile / forecast)
    cdf_offsets: tuple[float, ...] | None  # knot log returns minus the live forecast_logret
    cdf_prob: tuple[float, ...] | None
    n_calibration: int
    n_calibration_independent: float | None
    past_pit: tuple[float, ...] = field(default_factory=tuple)
    vol_model: str | None = None

    @property
    def calibrated(self) -> bool:
        return self.zone_offsets is not None and self.cdf_offsets is not None

    @classmethod
    def from_zones(
        cls, zones: pl.DataFrame, live: Mapping[str, Any], vol_model: str | None = None
    ) -> CalibrationState:
        """From one series' zone rows (e.g. the ensemble's at one horizon) and its live row."""
        f = float(live["forecast_logret"])
        price = float(live["price"])
        calibrated = (
            all(live.get(c) is not None for c in ZONE_COLUMNS)
            and live.get("cdf_logret") is not None
        )
        independent = live.get("n_calibration_independent")
        return cls(
            method=str(live.get("calibration") or "unknown"),
            zone_offsets={c: math.log(float(live[c]) / price) - f for c in ZONE_COLUMNS}
            if calibrated
            else None,
            cdf_offsets=tuple(float(x) - f for x in live["cdf_logret"]) if calibrated else None,
            cdf_prob=tuple(float(p) for p in live["cdf_prob"]) if calibrated else None,
            n_calibration=int(live.get("n_calibration") or 0),
            n_calibration_independent=None if independent is None else float(independent),
            past_pit=tuple(pit_values(zones, before=live["origin"])),
            vol_model=vol_model,
        )

    def zone_row(self, price: float, forecast_logret: float) -> dict[str, Any]:
        """The zone columns (price levels) and CDF knots laid around a forecast."""
        if not self.calibrated:
            return {c: None for c in ZONE_COLUMNS} | {"cdf_logret": None, "cdf_prob": None}
        assert self.zone_offsets is not None and self.cdf_offsets is not None
        return {
            **{c: price * math.exp(forecast_logret + o) for c, o in self.zone_offsets.items()},
            "cdf_logret": [forecast_logret + o for o in self.cdf_offsets],
            "cdf_prob": list(self.cdf_prob or ()),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "zone_offsets": self.zone_offsets,
            "cdf_offsets": None if self.cdf_offsets is None else list(self.cdf_offsets),
            "cdf_prob": None if self.cdf_prob is None else list(self.cdf_prob),
            "n_calibration": self.n_calibration,
            "n_calibration_independent": self.n_calibration_independent,
            "past_pit": list(self.past_pit),
            "vol_model": self.vol_model,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationState:
        def floats(values):
            return None if values is None else tuple(float(v) for v in values)

        offsets = data.get("zone_offsets")
        return cls(
            method=str(data["method"]),
            zone_offsets=None if offsets is None else {k: float(v) for k, v in offsets.items()},
            cdf_offsets=floats(data.get("cdf_offsets")),
            cdf_prob=floats(data.get("cdf_prob")),
            n_calibration=int(data.get("n_calibration") or 0),
            n_calibration_independent=data.get("n_calibration_independent"),
            past_pit=floats(data.get("past_pit")) or (),
            vol_model=data.get("vol_model"),
        )
