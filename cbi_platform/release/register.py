"""Register one horizon's new version and judge it: final refit, export, gates, promotion.

The steps, in order: check that the ensemble state rebuilt from the walk-forward predictions
reproduces the pipeline's live forecast; fit every member on all known targets
(`fit_final_models`); save the members, ensemble state and calibration as a new version of
`cbi-zl-<h>` with its metrics, leakage results and protocol hash as tags; load it back and
check that it reproduces the live forecast (`release.reproduction`: a version that does not is
refused like a failed gate); decide promotion (`release.gates.decide`) and, when it passes,
move the champion alias with an audit row (`release.control.promote`). Dagster-free: the
`registered_version` asset calls it. Serving is the next step's job
(`serving.publish.serve_version`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from cbi_platform.ensemble.combiners import ENSEMBLE, EnsembleConfig, ensemble_state
from cbi_platform.evaluation import horizon_run
from cbi_platform.features.contract import DATE, HORIZONS, feature_columns
from cbi_platform.models.base import ModelSpec
from cbi_platform.release import reproduction
from cbi_platform.release.control import AUTO_PROMOTE, AuditLog, promote
from cbi_platform.release.gates import (
    Candidate,
    Decision,
    candidate,
    candidate_from_tags,
    decide,
    serving_choice,
    version_failed_gates,
)
from cbi_platform.release.versions import champion_version
from cbi_platform.serving.calibration import CalibrationState
from cbi_platform.serving.publish import context_at, live_zone, reproduction_gap
from cbi_platform.serving.registry import ServedModel, load_version
from cbi_platform.tracking import Tracker, registered_model_name

REPRODUCTION_TOLERANCE = 1e-9  # log-return gap allowed between the exported state and the pipeline


@dataclass(frozen=True)
class HorizonInputs:
    """What one horizon's registration reads; every frame holds that horizon only."""

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
class Registration:
    """A registered version and the promotion decision on it."""

    version: str
    promotion: dict[str, Any]  # the decision with its reasons (asset metadata, a table row)
    bundle: ServedModel = field(repr=False)

    @property
    def serving_version(self) -> str:
        return self.promotion["serving_version"]

    @property
    def provisional(self) -> bool:
        return self.promotion["provisional"]

    @property
    def failed_gates(self) -> tuple[str, ...]:
        return tuple(self.promotion["serving_failed_gates"])


def _bundle(inputs: HorizonInputs, protocol_hash: str | None) -> ServedModel:
    """The version's contents: refitted members, the exported ensemble state and calibration."""
    horizon = inputs.horizon
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
    return ServedModel(
        horizon=horizon,
        horizon_days=HORIZONS[horizon],
        members=members,
        feature_names=feature_columns(features),  # what fit_final_models trained on
        ensemble=state,
        calibration=calibration,
        trained_through=features[DATE][-1],
        protocol_hash=protocol_hash,
    )


def _write_card(card_dir: Path, inputs: HorizonInputs, bundle: ServedModel) -> Path:
    card_dir.mkdir(parents=True, exist_ok=True)
    card = card_dir / "ensemble.json"
    state = bundle.ensemble
    card.write_text(
        json.dumps(
            {
                "horizon": inputs.horizon,
                "combiner": state.combiner,
                "shrink_weight": state.shrink_weight,
                "members": list(state.members),
                "calibration": bundle.calibration.method,
                "vol_model": inputs.vol_model,
                "protocol_hash": bundle.protocol_hash,
                "leaderboard": inputs.leaderboard.select(
                    "model", "mase", "rel_mae", "dm_pvalue"
                ).to_dicts(),
            },
            default=str,
            indent=1,
        )
    )
    return card


def _refuse_unless(reload: reproduction.ReloadCheck, decision: Decision, horizon: str) -> Decision:
    """A version that does not reproduce on reload fails like a gate: never promoted."""
    if reload.ok:
        return decision
    failure = reload.reason(horizon)
    return Decision(
        False,
        (*decision.failed_gates, failure) if decision.failed_gates else (failure,),
        failed_gates=(*decision.failed_gates, failure),
    )


def register_version(
    tracker: Tracker,
    inputs: HorizonInputs,
    *,
    audit: AuditLog,
    card_dir: Path,
    run_tags: Mapping[str, str],
    protocol_hash: str | None = None,
    margin: float = 0.10,
    cache: Path | None = None,
) -> Registration:
    """Refit, register and judge one horizon's new version; promote it when the gates and the
    comparison with the champion allow (the move is audited as "auto_promote").

    The reload check downloads the new version from the registry and loads it back: under
    `cache` (the home's model cache) when given, so the forecast and the daily refresh that
    follow in this process serve that same reloaded version instead of loading it again."""
    horizon = inputs.horizon
    name = registered_model_name(horizon)
    bundle = _bundle(inputs, protocol_hash)
    card = _write_card(card_dir, inputs, bundle)
    probe = reproduction.probe_path(card_dir)
    inputs.features.sort(DATE).write_parquet(probe)
    reference = reproduction.reference_path(card_dir)
    inputs.zones.filter(pl.col("model") == ENSEMBLE).select(
        "origin", "role", "forecast_logret"
    ).write_parquet(reference)
    pending = candidate("pending", inputs.leaderboard, inputs.zones, inputs.leakage)
    with tracker.run(f"forecasts[{horizon}]", run_tags) as run_id:
        for path in (card, probe, reference, *bundle.save(card_dir)):
            if path.is_dir():  # networks/: Keras files and SavedModels, folders kept
                tracker.log_artifacts(run_id, path, f"ensemble/{path.name}")
            else:
                tracker.log_artifact(run_id, path, "ensemble")
        version = tracker.register(run_id, "ensemble", name)
    challenger = Candidate(
        version,
        pending.mase,
        pending.coverage90,
        pending.leakage,
        pending.errors,
        pending.coverage90_n_effective,
    )
    live = live_zone(inputs.zones, horizon)
    context_live = context_at(inputs.context, bundle.trained_through)
    with tempfile.TemporaryDirectory() as tmp:
        reloaded = load_version(tracker, name, version, cache or Path(tmp), keep=cache is not None)
        gap = reproduction_gap(
            reloaded.predict(inputs.features.sort(DATE), None, context_live).zone, live
        )
    reload = reproduction.ReloadCheck(version, gap, reproduction.tolerance(bundle))
    champion_before = champion_version(tracker, horizon)
    champion = (
        candidate_from_tags(champion_before, tracker.version_tags(name, champion_before))
        if champion_before is not None
        else None
    )
    common = {"horizon_days": HORIZONS[horizon], "spacing_days": inputs.spacing_days}
    decision = _refuse_unless(
        reload, decide(challenger, champion, margin=margin, **common), horizon
    )
    at_2pct = _refuse_unless(reload, decide(challenger, champion, margin=0.02, **common), horizon)
    tracker.set_version_tags(
        name,
        version,
        {
            "horizon": horizon,
            "mase": challenger.mase,
            "coverage90": challenger.coverage90,
            "coverage90_n_effective": challenger.coverage90_n_effective,
            "mase_terms": json.dumps({k: round(v, 6) for k, v in challenger.errors.items()}),
            "leakage": json.dumps(dict(challenger.leakage)),
            "failed_gates": json.dumps(list(decision.failed_gates)),
            "promoted": decision.promote,
            "protocol_hash": protocol_hash or "",
            "trained_through": bundle.trained_through.isoformat(),
            "reload_gap_logret": repr(gap),
            "reload_tolerance": repr(reload.tolerance),
            **reproduction.live_tags(live, context_live),
        },
    )
    if decision.promote:  # the alias moves under the audit log's lock, with its row
        promote(
            tracker,
            audit,
            horizon,
            version,
            actor="promotion gates (registered_version asset)",
            reason="; ".join(decision.reasons),
            evidence={"run_id": run_tags.get("dagster.run_id")},
            action=AUTO_PROMOTE,
        )
    champion_failed = (
        version_failed_gates(tracker.version_tags(name, champion_before))
        if champion_before is not None
        else ()
    )
    served, provisional, failed = serving_choice(
        version, champion_before, decision, champion_failed
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
        "serving_version": served,
        "provisional": provisional,
        "serving_failed_gates": list(failed),
        "leakage": {k: challenger.leakage.get(k) for k in sorted(challenger.leakage)},
        "reload_gap_logret": gap,
        "reload_tolerance": reload.tolerance,
        "protocol_hash": protocol_hash,
    }
    return Registration(version, promotion, bundle)
