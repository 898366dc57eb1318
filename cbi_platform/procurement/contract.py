"""The frames the procurement modules exchange, and the one rule they all obey.

`decision_forecasts`: one row per (date, horizon) — the forecast distribution the platform
had at the close of `date`, made by the version it would have served then (the walk-forward
state at the latest origin on or before `date`, fed that day's features and closes). Every
row carries `known_at`, the first day it could be acted on; a decision on day d may read a
row only if `known_at <= d`. Realised prices reach a policy only as closes up to d.

    date          Date      the trading day the forecast is made at (after its close)
    known_at      Date      when the row became usable (= date for the platform's forecasts)
    horizon       Utf8      1w | 1m | 3m | 6m | 12m
    horizon_days  Int64     5 | 21 | 63 | 126 | 252
    price         Float64   ZL close at `date` (c/lb)
    forecast      Float64   point forecast of the close `horizon_days` later (c/lb)
    p10 .. p90    Float64   target zones (price levels, c/lb): p10, p30, p50, p70, p90
    cdf_logret    List[Float64]  CDF knots in log-return space from `price` (may be null)
    cdf_prob      List[Float64]  CDF levels at those knots (may be null)
    prob_up       Float64   P(close in `horizon_days` > price), from the CDF (null without it)
    regime        Utf8      detected regime at `date` (point in time; null when unknown)
    state_origin  Date      the walk-forward origin whose state made the forecast (<= date)
    window        Utf8      protocol window of the origin: calibration|development|scored|live
"""

from __future__ import annotations

import datetime as dt

import polars as pl

ZONE_LEVELS = ("p10", "p30", "p50", "p70", "p90")

DECISION_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "known_at": pl.Date(),
    "horizon": pl.Utf8(),
    "horizon_days": pl.Int64(),
    "price": pl.Float64(),
    "forecast": pl.Float64(),
    **{c: pl.Float64() for c in ZONE_LEVELS},
    "cdf_logret": pl.List(pl.Float64()),
    "cdf_prob": pl.List(pl.Float64()),
    "prob_up": pl.Float64(),
    "regime": pl.Utf8(),
    "state_origin": pl.Date(),
    "window": pl.Utf8(),
}


class LookAheadError(AssertionError):
    """A decision read something that was not known on its date."""


def validate_decision_forecasts(frame: pl.DataFrame, where: str = "decision_forecasts") -> None:
    """Schema and the point-in-time rule on the rows themselves; raises ValueError /
    LookAheadError naming the rows."""
    missing = [c for c in DECISION_SCHEMA if c not in frame.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}")
    dupes = frame.filter(pl.struct("date", "horizon").is_duplicated())
    if dupes.height:
        raise ValueError(
            f"{where}: {dupes.height} duplicate (date, horizon) rows, e.g. "
            f"{dupes.select('date', 'horizon').head(3).to_dicts()}"
        )
    early = frame.filter(pl.col("known_at") < pl.col("date"))
    if early.height:
        raise ValueError(
            f"{where}: {early.height} row(s) usable before their own date, e.g. "
            f"{early.select('date', 'known_at', 'horizon').head(3).to_dicts()}"
        )
    late_state = frame.filter(pl.col("state_origin") > pl.col("date"))
    if late_state.height:
        raise LookAheadError(
            f"{where}: {late_state.height} row(s) made by a state from after their date, e.g. "
            f"{late_state.select('date', 'state_origin', 'horizon').head(3).to_dicts()}"
        )


def usable(frame: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """The rows a decision on `day` may read."""
    return frame.filter(pl.col("known_at") <= day)
