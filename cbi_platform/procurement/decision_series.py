"""A daily forecast series for decisions: what the platform would have served on each day.

The walk-forward scores only every ~25th trading day, too sparse for a buying window. For every
trading day d from `start`, this module rebuilds the version the platform would have served at
the close of d, from the walk-forward state at the latest origin o <= d:

* the ensemble state at o (`ensemble_state` on the out-of-fold predictions up to o, checked to
  reproduce the walk-forward ensemble's forecast at o exactly);
* the calibration state at o (the ensemble's zone row at o, with the PIT values of forecasts
  resolved by o), from the `target_zones` the pipeline wrote;
* members fitted at o on rows whose target was known by o, with regime weights as known at o
  (only where the ensemble at o is not the random walk itself: a random-walk state needs no
  member, and forecasts today's close).

On each origin day of a state with members, every member the ensemble uses is checked against
its own walk-forward forecast at that origin (`check_members_reproduce`: 1e-9 in log return for
float64 members, a stated tolerance for networks), then the ensemble's forecast: the rebuilt
ensemble state alone shares its inputs with the walk-forward (the OOF table), so only the
members' refits can show that the served path reproduces the walk-forward's models.

Each day is then forecast through `ServedModel.predict`, the load-and-predict path the served
versions use, on that day's features and the closes up to it (`predict_days`: a sequence member
runs once over the days a state serves, each day's forecast from the window ending that day, as
one call per day would give). Nothing after d enters the row for d; every row carries
`known_at = date` and the origin of its state (`state_origin <= date`).
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.ensemble.combiners import EnsembleState, ensemble_state
from cbi_platform.evaluation import horizon_run
from cbi_platform.features.contract import (
    DATE,
    HORIZONS,
    PRICE,
    TARGET_DATE,
    TARGET_LOGRET,
    feature_columns,
    horizon_frame,
)
from cbi_platform.models.base import FitData
from cbi_platform.models.precision import (
    FLOAT32_TOLERANCE,
    FLOAT64_TOLERANCE,
    MIXED_FLOAT16_TOLERANCE,
    reproduction_tolerance,
)
from cbi_platform.models.registry import build_model, load_specs
from cbi_platform.procurement.backtest import forecast_skill
from cbi_platform.procurement.contract import DECISION_SCHEMA, ZONE_LEVELS
from cbi_platform.serving.calibration import CalibrationState
from cbi_platform.serving.registry import ServedModel
from cbi_platform.settings import ENSEMBLE, RANDOM_WALK

# Each member's forecast on its origin day against its own walk-forward (OOF) forecast there:
# the member fitted at its `fitted_at` on the rows known then, fed the origin's row (the same
# model and input as the walk-forward), so it reproduces it to the tolerance of its precision
# (`models.precision`: 1e-9 float64, 1e-6 float32 networks, 1e-3 mixed_float16).
REPRODUCTION_TOLERANCE = FLOAT64_TOLERANCE
NETWORK_REPRODUCTION_TOLERANCE = FLOAT32_TOLERANCE
MIXED_PRECISION_REPRODUCTION_TOLERANCE = MIXED_FLOAT16_TOLERANCE
member_tolerance = reproduction_tolerance


def check_members_reproduce(
    horizon: str,
    origin: dt.date,
    members: Mapping[str, Any],
    forecasts: Mapping[str, float],
    oof_forecasts: Mapping[tuple[str, dt.date], float | None],
) -> float:
    """Each member's forecast at `origin` against its own walk-forward forecast there; raises
    ValueError naming the horizon, origin, member and gap. Returns the ensemble's tolerance (the
    loosest of its members')."""
    loosest = REPRODUCTION_TOLERANCE
    for name, got in forecasts.items():
        expected = oof_forecasts.get((name, origin))
        missing_got = got is None or not math.isfinite(got)
        missing_expected = expected is None or not math.isfinite(expected)
        if missing_got and missing_expected:
            continue  # not fitted yet at this origin, on both sides
        tolerance = member_tolerance(members.get(name))
        loosest = max(loosest, tolerance)
        gap = math.inf if missing_got or missing_expected else abs(got - expected)
        if not gap <= tolerance:
            raise ValueError(
                f"{horizon}: member {name} at origin {origin} forecast a log return of {got!r}, "
                f"its walk-forward forecast there is {expected!r}: gap {gap:.3g} > "
                f"{tolerance:g} (the refit does not reproduce the walk-forward's model)"
            )
    return loosest


@dataclass
class SeriesStats:
    """How the series was made (for metadata and progress)."""

    days: int = 0
    states: int = 0
    random_walk_states: int = 0
    fitted_states: int = 0
    member_fits: int = 0
    seconds_states: float = 0.0
    seconds_predict: float = 0.0


def _random_walk_model(horizon: str):
    spec = next(s for s in load_specs(horizon=horizon) if s.name == RANDOM_WALK)
    return build_model(spec)


def _is_random_walk(weights_at_origin: pl.DataFrame) -> bool:
    """The ensemble at this origin is the random walk alone (all weight on it)."""
    if weights_at_origin.height == 0:
        return True
    other = weights_at_origin.filter(
        (pl.col("model") != RANDOM_WALK) & (pl.col("weight").abs() > 0)
    )
    return other.height == 0


def members_fitted_at(
    frame: pl.DataFrame,
    regimes: pl.DataFrame,
    horizon: str,
    origin: dt.date,
    specs=None,
    fit_cache: str | None = None,
) -> dict[str, Any]:
    """Every member fitted at `origin` on the rows whose target was known by then (the same
    embargo as the walk-forward: target_date <= origin), weights as known at `origin`."""
    cut = frame.filter(pl.col(DATE) <= origin).with_columns(
        pl.when(pl.col(TARGET_DATE) <= origin)
        .then(pl.col(TARGET_LOGRET))
        .otherwise(None)
        .alias(TARGET_LOGRET)
    )
    return horizon_run.fit_final_models(cut, regimes, horizon, specs, fit_cache=fit_cache)


class _NoModel:
    """A member the walk-forward had not fitted yet at that origin: its forecast is missing."""

    fallback_reason = None

    def predict(self, X, prices):
        return np.full(1, np.nan)


class RefitSchedule:
    """The model in use at each origin, as the walk-forward used it: the OOF table records, per
    member and origin, the origin of the fit that made the forecast (`fitted_at`). Fits are
    cached by (member, fit origin), so the daily series reuses them exactly as the walk-forward
    did, and fitting at `fitted_at` on the rows known then reproduces its model."""

    def __init__(self, oof_h: pl.DataFrame, specs, fit_cache: str | None = None) -> None:
        self.fitted_at = {
            (m, o): f for m, o, f in oof_h.select("model", "origin", "fitted_at").iter_rows()
        }
        self.specs = list(specs)
        self.fit_cache = fit_cache  # networks fitted by the walk-forward are reused from it
        self.cache: dict[tuple[str, dt.date], Any] = {}
        self.fits = 0

    def members_at(
        self, frame: pl.DataFrame, regimes: pl.DataFrame, horizon: str, origin: dt.date
    ) -> dict[str, Any]:
        members: dict[str, Any] = {}
        for spec in self.specs:
            if (spec.name, origin) not in self.fitted_at:
                raise ValueError(f"{horizon}: no OOF row for {spec.name} at {origin}")
            at = self.fitted_at[(spec.name, origin)]
            if at is None:
                members[spec.name] = _NoModel()
                continue
            key = (spec.name, at)
            if key not in self.cache:
                fitted = members_fitted_at(frame, regimes, horizon, at, [spec], self.fit_cache)
                self.cache[key] = fitted[spec.name]
                self.fits += 1
            members[spec.name] = self.cache[key]
        return members


def _context_at(context: pl.DataFrame | None, origin: dt.date) -> dict[str, Any]:
    if context is None or context.height == 0:
        return {}
    row = context.filter(pl.col("origin") == origin)
    return row.row(0, named=True) if row.height else {}


def prob_up(cdf_logret: Any, cdf_prob: Any) -> float | None:
    """P(log return > 0) from CDF knots (None without knots)."""
    if cdf_logret is None or cdf_prob is None or len(cdf_logret) == 0:
        return None
    x = np.asarray(cdf_logret, dtype=float)
    p = np.asarray(cdf_prob, dtype=float)
    return float(1.0 - np.interp(0.0, x, p, left=0.0, right=1.0))


def build_decision_series(
    features: pl.DataFrame,
    oof: pl.DataFrame,
    ensemble_forecasts: pl.DataFrame,
    ensemble_weights: pl.DataFrame,
    zones: pl.DataFrame,
    regimes: pl.DataFrame,
    context: pl.DataFrame | None,
    horizon: str,
    cfg: horizon_run.ProtocolConfig,
    *,
    start: dt.date | None = None,
    start_window: str = "development",
    specs=None,
    progress: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, SeriesStats]:
    """The daily decision forecasts (schema `DECISION_SCHEMA`) of one horizon from `start`
    (default: the first origin of `start_window`) to the last feature date."""
    stats = SeriesStats()
    frame = horizon_frame(features, horizon).sort(DATE)
    ens = ensemble_forecasts.filter(pl.col("horizon") == horizon).sort("origin")
    if ens.height == 0:
        raise ValueError(f"{horizon}: no ensemble forecasts to build a decision series from")
    ens_zones = zones.filter((pl.col("model") == ENSEMBLE) & (pl.col("horizon") == horizon))
    weights = ensemble_weights.filter(pl.col("horizon") == horizon)
    oof_h = oof.filter(pl.col("horizon") == horizon)
    origins: list[dt.date] = ens["origin"].to_list()
    roles = dict(zip(origins, ens["role"].to_list(), strict=True)) if "role" in ens.columns else {}
    if start is None:
        first_of = [o for o in origins if roles.get(o) == start_window]
        start = first_of[0] if first_of else origins[0]
    dates: list[dt.date] = frame[DATE].to_list()
    first = max(bisect.bisect_left(dates, start), bisect.bisect_left(dates, origins[0]))
    closes = frame[PRICE].cast(pl.Float64).to_numpy()
    names = feature_columns(frame)
    regime_by_day = dict(zip(regimes["date"].to_list(), regimes["regime"].to_list(), strict=True))
    schedule = RefitSchedule(
        oof_h, specs if specs is not None else horizon_run.zoo_specs(horizon), cfg.fit_cache
    )
    oof_forecasts = {
        (m, o): f for m, o, f in oof_h.select("model", "origin", "forecast_logret").iter_rows()
    }
    rw_model = None
    rows: list[dict[str, Any]] = []
    horizon_days = HORIZONS[horizon]
    i = first
    while i < len(dates):
        # The days served by one walk-forward state: from day i to the day before the next origin.
        k = bisect.bisect_right(origins, dates[i]) - 1
        origin = origins[k]
        end = len(dates) - 1
        if k + 1 < len(origins):
            end = min(end, bisect.bisect_left(dates, origins[k + 1]) - 1)
        t0 = time.perf_counter()
        served = _state_at(
            frame,
            oof_h,
            ens,
            weights,
            ens_zones,
            regimes,
            context,
            horizon,
            cfg,
            origin,
            names,
            schedule,
            stats,
        )
        rw_state = served.ensemble.combiner == RANDOM_WALK and not served.members
        if rw_state:  # no member refitted: nothing of its own to reproduce
            rw_model = rw_model or _random_walk_model(horizon).fit(_rw_fit_data(horizon))
            served.members = {RANDOM_WALK: rw_model}
        stats.states += 1
        stats.seconds_states += time.perf_counter() - t0
        if progress is not None and stats.states % 20 == 0:
            progress(f"{horizon}: decision series at {dates[i]} ({stats.states} states)")
        t0 = time.perf_counter()
        at_origin = _context_at(context, origin)  # one lookup per state, not per day
        ctxs = [{**at_origin, "regime": regime_by_day.get(dates[j])} for j in range(i, end + 1)]
        # Day j's forecast reads rows up to j only (sequence members: the window ending at j).
        forecasts = served.predict_days(frame, closes, i, end, ctxs)
        stats.seconds_predict += time.perf_counter() - t0
        for j, out in zip(range(i, end + 1), forecasts, strict=True):
            day = dates[j]
            zone = out.zone
            if day == origin:
                # Each refitted member against its own OOF forecast, then the ensemble.
                tolerance = REPRODUCTION_TOLERANCE
                if not rw_state:
                    tolerance = check_members_reproduce(
                        horizon, origin, served.members, out.member_logrets, oof_forecasts
                    )
                if not math.isclose(
                    zone["forecast_logret"], served.ensemble.forecast_logret, abs_tol=tolerance
                ):
                    raise ValueError(
                        f"{horizon}: the daily forecast at origin {origin} "
                        f"({zone['forecast_logret']:.6g}) does not reproduce the walk-forward "
                        f"ensemble ({served.ensemble.forecast_logret:.6g}; tolerance "
                        f"{tolerance:g})"
                    )
            rows.append(
                {
                    "date": day,
                    "known_at": day,
                    "horizon": horizon,
                    "horizon_days": horizon_days,
                    "price": float(closes[j]),
                    "forecast": zone["forecast"],
                    **{c: zone.get(c) for c in ZONE_LEVELS},
                    "cdf_logret": zone.get("cdf_logret"),
                    "cdf_prob": zone.get("cdf_prob"),
                    "prob_up": prob_up(zone.get("cdf_logret"), zone.get("cdf_prob")),
                    "regime": regime_by_day.get(day),
                    "state_origin": origin,
                    "window": roles.get(origin),
                }
            )
            stats.days += 1
        i = end + 1
    stats.member_fits = schedule.fits
    out_frame = (
        pl.DataFrame(rows, schema=DECISION_SCHEMA) if rows else pl.DataFrame(schema=DECISION_SCHEMA)
    )
    return out_frame, stats


def _rw_fit_data(horizon: str):
    return FitData(
        X=np.zeros((1, 0)),
        y=np.zeros(1),
        prices=np.ones(2),
        horizon_days=HORIZONS[horizon],
        feature_names=[],
    )


def _state_at(
    frame: pl.DataFrame,
    oof_h: pl.DataFrame,
    ens: pl.DataFrame,
    weights: pl.DataFrame,
    ens_zones: pl.DataFrame,
    regimes: pl.DataFrame,
    context: pl.DataFrame | None,
    horizon: str,
    cfg: horizon_run.ProtocolConfig,
    origin: dt.date,
    names: list[str],
    schedule: RefitSchedule,
    stats: SeriesStats,
) -> ServedModel:
    """The version the platform would have served from origin `origin` onwards."""
    zone_rows = ens_zones.filter(pl.col("origin") == origin)
    if zone_rows.height != 1:
        raise ValueError(f"{horizon}: expected one ensemble zone row at {origin}")
    live = zone_rows.row(0, named=True)
    calibration = CalibrationState.from_zones(
        ens_zones.filter(pl.col("origin") <= origin), live, live.get("vol_model")
    )
    expected = float(ens.filter(pl.col("origin") == origin)["forecast_logret"][0])
    if _is_random_walk(weights.filter(pl.col("origin") == origin)):
        stats.random_walk_states += 1
        if abs(expected) > REPRODUCTION_TOLERANCE:
            raise ValueError(
                f"{horizon}: the ensemble at {origin} has all weight on the random walk but "
                f"forecast a log return of {expected:.6g}"
            )
        state = EnsembleState(
            horizon=horizon,
            origin=origin,
            combiner=RANDOM_WALK,
            members=(RANDOM_WALK,),
            shrink_weight=0.0,
            blended=False,
            forecast_logret=0.0,
        )
        members: dict[str, Any] = {}
    else:
        stats.fitted_states += 1
        state = ensemble_state(
            oof_h.filter(pl.col("origin") <= origin),
            context,
            horizon_run.ensemble_config(cfg),
            horizon,
        )
        if state.origin != origin or not math.isclose(
            state.forecast_logret, expected, abs_tol=REPRODUCTION_TOLERANCE
        ):
            raise ValueError(
                f"{horizon}: the ensemble state rebuilt at {origin} ({state.combiner}: "
                f"{state.forecast_logret:.6g}) does not reproduce the walk-forward ensemble "
                f"({expected:.6g})"
            )
        members = schedule.members_at(frame, regimes, horizon, origin)
    return ServedModel(
        horizon=horizon,
        horizon_days=HORIZONS[horizon],
        members=members,
        feature_names=names,
        ensemble=state,
        calibration=calibration,
        trained_through=origin,
    )


def latest_rows(series: pl.DataFrame, day: dt.date) -> Mapping[str, dict[str, Any]]:
    """Per horizon, the newest row usable on `day` (known_at <= day)."""
    usable = series.filter((pl.col("known_at") <= day) & (pl.col("date") <= day))
    if usable.height == 0:
        return {}
    last = usable.sort("date").group_by("horizon", maintain_order=True).last()
    return {r["horizon"]: r for r in last.iter_rows(named=True)}


@dataclass(frozen=True)
class SkillAlarm:
    passed: bool
    summary: str
    evidence: dict[str, Any]


def skill_alarm(
    series: pl.DataFrame, closes: pl.DataFrame, min_rel_mae: float = 0.5, min_rows: int = 60
) -> SkillAlarm:
    """A leakage alarm, not a metric: per horizon, MAE of the daily forecasts over the random
    walk's on matured days. Honest forecasts of a price level sit near 1 (issue 3: 0.97-1.10);
    below `min_rel_mae` the series almost certainly saw the future (e.g. a realised price fed as
    a forecast), whatever its known_at column claims."""
    evidence: dict[str, Any] = {}
    failing = []
    for row in forecast_skill(series, closes).iter_rows(named=True):
        n, rel = row["n"], row["rel_mae"]
        evidence[row["horizon"]] = {"matured": n, "rel_mae_vs_random_walk": rel}
        if n >= min_rows and rel < min_rel_mae:
            failing.append(f"{row['horizon']} relative MAE {rel:.3f} on {n} matured days")
    if failing:
        return SkillAlarm(
            False,
            "too good to be true (a look-ahead?): "
            + "; ".join(failing)
            + f" < {min_rel_mae} x the random walk's error",
            evidence,
        )
    return SkillAlarm(
        True, f"relative MAE vs the random walk >= {min_rel_mae} or too few", evidence
    )
