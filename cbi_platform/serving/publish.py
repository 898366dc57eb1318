"""Publish one horizon's forecast: card, final refit, registration, promotion, serving.

The steps, in order: fit every member on all known targets (`fit_final_models`), export the
ensemble state and calibration at the live origin, register the three as a new version of
`cbi-zl-<h>` (with its metrics, leakage results and protocol hash as tags), decide promotion,
then load the version that serves (the champion; the new version, flagged provisional, when no
version ever passed the gates) and forecast today's data with it. Dagster-free: the `forecasts`
asset calls it, and so can a daily refresh.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.ensemble.combiners import ENSEMBLE, EnsembleConfig, ensemble_state
from cbi_platform.ensemble.conformal import ZONE_COLUMNS, coverage_report
from cbi_platform.evaluation import horizon_run
from cbi_platform.evaluation.promotion import Candidate, Decision, decide
from cbi_platform.explain.shap_tables import explain_row
from cbi_platform.features.contract import DATE, HORIZONS, feature_columns
from cbi_platform.models.base import ModelSpec
from cbi_platform.serving.calibration import CalibrationState
from cbi_platform.serving.drivers import explain_forecast
from cbi_platform.serving.forecast import assemble_forecast
from cbi_platform.serving.registry import ServedForecast, ServedModel, load_version
from cbi_platform.tracking import Tracker, registered_model_name

CHAMPION = "champion"
REPRODUCTION_TOLERANCE = 1e-9  # log-return gap allowed between a reload and the pipeline


@dataclass(frozen=True)
class HorizonInputs:
    """What one horizon's publication reads; every frame holds that horizon only."""

    horizon: str
    features: pl.DataFrame  # the horizon's feature frame (the live origin is its last date)
    oof: pl.DataFrame  # members' walk-forward predictions (the ensemble state is rebuilt)
    zones: pl.DataFrame  # target zones of the ensemble (and the random walk)
    context: pl.DataFrame  # origin, regime, vol_forecast: what the ensemble and zones used
    vol_model: str | None  # the volatility model behind vol_forecast
    leaderboard: pl.DataFrame
    regimes: pl.DataFrame  # detected regimes (date, regime)
    specs: list[ModelSpec]
    ensemble_config: EnsembleConfig
    leakage: Mapping[str, bool | None]  # blocking check name -> passed (None: not recorded)
    spacing_days: float  # trading days between origins (DM lags)
    fit_cache: str | None = None  # the walk-forward's fitted networks (live origin) are reused


@dataclass
class Published:
    record: dict[str, Any]  # one row of the forecast history
    promotion: dict[str, Any]
    served: ServedForecast
    registered: ServedModel = field(repr=False)


def live_zone(zones: pl.DataFrame, horizon: str) -> dict[str, Any]:
    live = zones.filter((pl.col("model") == ENSEMBLE) & (pl.col("role") == "live"))
    if live.height != 1:
        raise ValueError(f"{horizon}: expected one live ensemble zone row, found {live.height}")
    return live.row(0, named=True)


def candidate(
    version: str, leaderboard: pl.DataFrame, zones: pl.DataFrame, leakage: Mapping
) -> Candidate:
    """The ensemble as promotion judges it: overall MASE and coverage, and its MASE term at
    every scored origin (|error| / the naive h-step error there) for paired comparisons."""
    ens_zones = zones.filter(pl.col("model") == ENSEMBLE)
    if "naive_scale" not in ens_zones.columns:
        raise ValueError("target zones lack naive_scale: the MASE terms cannot be computed")
    board = leaderboard.filter(pl.col("model") == ENSEMBLE)
    cov = coverage_report(ens_zones)
    cov_all = cov.filter(pl.col("regime") == "all") if cov.height else cov
    scored = ens_zones.filter(
        (pl.col("role") == "scored") & pl.col("actual").is_not_null() & (pl.col("naive_scale") > 0)
    )
    terms = {
        str(o): abs(f - a) / s
        for o, f, a, s in scored.select("origin", "forecast", "actual", "naive_scale").iter_rows()
    }

    def first(frame: pl.DataFrame, column: str) -> float:
        value = frame[column][0] if frame.height else None
        return float("nan") if value is None else float(value)

    return Candidate(
        version=version,
        mase=first(board, "mase"),
        coverage90=first(cov_all, "coverage90"),
        leakage=dict(leakage),
        errors=terms,
    )


def candidate_from_tags(version: str, tags: Mapping[str, str]) -> Candidate:
    """A registered version's candidate from its tags (older versions lack some: they then
    fail the gates that need them, which is what an unverifiable champion deserves)."""
    return Candidate(
        version=version,
        mase=float(tags.get("mase", "nan")),
        coverage90=float(tags.get("coverage90", "nan")),
        leakage=json.loads(tags.get("leakage", "{}")),
        errors={k: float(v) for k, v in json.loads(tags.get("mase_terms", "{}")).items()},
    )


def serving_choice(
    registered: str, champion_before: str | None, decision: Decision
) -> tuple[str, bool, tuple[str, ...]]:
    """(version that serves, provisional?, the gates it failed). The champion serves; with no
    champion at all, the new version serves flagged provisional with its failing gates."""
    champion = registered if decision.promote else champion_before
    if champion is not None:
        return champion, False, ()
    return registered, True, decision.failed_gates or decision.reasons


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


def _context_at(context: pl.DataFrame, day: dt.date) -> dict[str, Any]:
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


def publish_horizon(
    tracker: Tracker,
    inputs: HorizonInputs,
    *,
    card_dir: Path,
    run_tags: Mapping[str, str],
    regime_outlook: Mapping[str, float],
    data_reference_date: dt.date,
    protocol_hash: str | None = None,
    margin: float = 0.10,
) -> Published:
    horizon = inputs.horizon
    name = registered_model_name(horizon)
    live = live_zone(inputs.zones, horizon)
    state = ensemble_state(inputs.oof, inputs.context, inputs.ensemble_config, horizon)
    if state.origin != live["origin"] or not (
        abs(state.forecast_logret - float(live["forecast_logret"])) <= REPRODUCTION_TOLERANCE
    ):
        raise ValueError(
            f"{horizon}: the exported ensemble state ({state.combiner} at {state.origin}: "
            f"{state.forecast_logret:.6g}) does not reproduce the pipeline's live forecast "
            f"({live.get('combiner')} at {live['origin']}: {live['forecast_logret']:.6g}); "
            "the ensemble configuration differs from the ensemble step's"
        )
    ens_zones = inputs.zones.filter(pl.col("model") == ENSEMBLE)
    calibration = CalibrationState.from_zones(ens_zones, live, inputs.vol_model)
    features = inputs.features.sort(DATE)
    members = horizon_run.fit_final_models(
        features, inputs.regimes, horizon, inputs.specs, fit_cache=inputs.fit_cache
    )
    feature_names = feature_columns(features)  # what fit_final_models trained on
    bundle = ServedModel(
        horizon=horizon,
        horizon_days=HORIZONS[horizon],
        members=members,
        feature_names=feature_names,
        ensemble=state,
        calibration=calibration,
        trained_through=features[DATE][-1],
        protocol_hash=protocol_hash,
    )
    card_dir.mkdir(parents=True, exist_ok=True)
    card = card_dir / "ensemble.json"
    card.write_text(
        json.dumps(
            {
                "horizon": horizon,
                "combiner": state.combiner,
                "shrink_weight": state.shrink_weight,
                "members": list(state.members),
                "calibration": calibration.method,
                "vol_model": inputs.vol_model,
                "protocol_hash": protocol_hash,
                "leaderboard": inputs.leaderboard.select(
                    "model", "mase", "rel_mae", "dm_pvalue"
                ).to_dicts(),
            },
            default=str,
            indent=1,
        )
    )
    challenger = candidate("pending", inputs.leaderboard, inputs.zones, inputs.leakage)
    with tracker.run(f"forecasts[{horizon}]", run_tags) as run_id:
        for path in (card, *bundle.save(card_dir)):
            if path.is_dir():  # networks/: Keras files and SavedModels, folders kept
                tracker.log_artifacts(run_id, path, f"ensemble/{path.name}")
            else:
                tracker.log_artifact(run_id, path, "ensemble")
        version = tracker.register(run_id, "ensemble", name)
    challenger = Candidate(
        version, challenger.mase, challenger.coverage90, challenger.leakage, challenger.errors
    )
    champion_before = tracker.alias_version(name, CHAMPION)
    champion = (
        candidate_from_tags(champion_before, tracker.version_tags(name, champion_before))
        if champion_before is not None
        else None
    )
    common = {"horizon_days": HORIZONS[horizon], "spacing_days": inputs.spacing_days}
    decision = decide(challenger, champion, margin=margin, **common)
    at_2pct = decide(challenger, champion, margin=0.02, **common)
    tracker.set_version_tags(
        name,
        version,
        {
            "horizon": horizon,
            "mase": challenger.mase,
            "coverage90": challenger.coverage90,
            "mase_terms": json.dumps({k: round(v, 6) for k, v in challenger.errors.items()}),
            "leakage": json.dumps(dict(challenger.leakage)),
            "failed_gates": json.dumps(list(decision.failed_gates)),
            "promoted": decision.promote,
            "protocol_hash": protocol_hash or "",
            "trained_through": bundle.trained_through.isoformat(),
        },
    )
    if decision.promote:
        tracker.set_alias(name, CHAMPION, version)
    served_version, provisional, failed = serving_choice(version, champion_before, decision)
    with tempfile.TemporaryDirectory() as tmp:
        served_model = load_version(tracker, name, served_version, Path(tmp))
    context_now = _context_at(inputs.context, bundle.trained_through)
    served = served_model.predict(features, None, context_now)
    gap = reproduction_gap(served.zone, live) if served_version == version else None
    record = forecast_record(
        served_model,
        served,
        leaderboard=inputs.leaderboard,
        regimes=inputs.regimes,
        context_now=context_now,
        regime_outlook=regime_outlook,
        data_reference_date=data_reference_date,
        served_version=served_version,
        registered_version=f"{name}/v{version}",
        provisional=provisional,
        failed_gates=failed,
    )
    promotion = {
        "version": version,
        "champion_before": champion_before,
        "promoted": decision.promote,
        "reasons": list(decision.reasons),
        "failed_gates": list(decision.failed_gates),
        "dm_lags": decision.dm_lags,
        "common_origins": decision.common_origins,
        "would_promote_at_2pct_margin": at_2pct.promote,
        "serving_version": served_version,
        "provisional": provisional,
        "leakage": {k: challenger.leakage.get(k) for k in sorted(challenger.leakage)},
        "reload_gap_logret": gap,
        "protocol_hash": protocol_hash,
    }
    return Published(record, promotion, served, served_model)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None
