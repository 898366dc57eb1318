"""A version serves only if, reloaded from the registry, it reproduces what it forecast when it
was registered.

At registration the new version is loaded back and must reproduce the pipeline's live forecast
and zones; its live forecast, context and the feature frame it forecast from (the "probe",
saved with its artifacts) are recorded. On every daily load the served version forecasts the
probe again and must give the recorded forecast. A library upgrade, a corrupted artifact or a
change in the loading code then stops it serving instead of quietly serving something else.

Tolerances, in log return (|log(reloaded / recorded)| for the zone levels), by the loosest
member's precision (`models.precision`): 1e-9 when every member computes in float64 (a reload
runs the same arithmetic on the same numbers), 1e-6 when a member is a float32 network (a
window predicted in a batch of a different size rounds differently; 0.0001% of the price),
1e-3 under mixed_float16.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from cbi_platform.models import precision
from cbi_platform.release.gates import version_failed_gates
from cbi_platform.release.versions import (
    ROLLED_BACK_TAG,
    Serving,
    registered_versions,
    serving_versions,
)
from cbi_platform.serving.registry import (
    ARTIFACT_PATH,
    ServedModel,
    download_version,
    load_version,
)
from cbi_platform.tracking import Tracker, registered_model_name

FLOAT64_TOLERANCE = precision.FLOAT64_TOLERANCE
FLOAT32_TOLERANCE = precision.FLOAT32_TOLERANCE
RANDOM_WALK_SERVES = "random_walk"  # Serving.served when no version can serve
PROBE_FILE = "probe.parquet"  # the feature frame the version forecast from at registration
# The version's own walk-forward forecasts (origin, role, forecast_logret): the reference its
# served forecasts are compared with for prediction drift.
REFERENCE_FILE = "walk_forward_forecasts.parquet"
# Registry tags written at registration (strings; floats in repr, exact).
LIVE_TAGS = ("live_forecast_logret", "live_regime", "live_vol_forecast")


def tolerance(model: ServedModel) -> float:
    """The loosest tolerance among the ensemble's members (`models.precision`)."""
    members = [model.members.get(m) for m in model.ensemble.members]
    return max((precision.reproduction_tolerance(m) for m in members), default=FLOAT64_TOLERANCE)


@dataclass(frozen=True)
class ReloadCheck:
    version: str
    gap: float | None  # None: the version has no probe (registered before probes existed)
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.gap is not None and self.gap <= self.tolerance

    @property
    def checked(self) -> bool:
        return self.gap is not None

    def reason(self, horizon: str) -> str:
        if self.gap is None:
            return f"{horizon} v{self.version}: no reproduction probe recorded"
        verdict = "reproduces" if self.ok else "does not reproduce"
        return (
            f"{horizon} v{self.version} {verdict} its registered forecast on reload "
            f"(gap {self.gap:.3g} in log return, tolerance {self.tolerance:g})"
        )


def live_tags(zone: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, str]:
    """What the daily check compares against: the live forecast and the context it used."""
    vol = context.get("vol_forecast")
    return {
        "live_forecast_logret": repr(float(zone["forecast_logret"])),
        "live_regime": context.get("regime") or "",
        "live_vol_forecast": "" if vol is None else repr(float(vol)),
    }


def probe_path(folder: Path) -> Path:
    return folder / PROBE_FILE


def reference_path(folder: Path) -> Path:
    return folder / REFERENCE_FILE


def check_loaded(model: ServedModel, folder: Path | None, tags: Mapping[str, str]) -> ReloadCheck:
    """The daily check: the loaded version forecasts its probe (in `folder`, the downloaded
    artifacts) with the recorded context and must give the recorded forecast."""
    limit = tolerance(model)
    version = str(model.version)
    probe = probe_path(folder) if folder is not None else None
    if probe is None or not probe.exists() or "live_forecast_logret" not in tags:
        return ReloadCheck(version, None, limit)
    vol = tags.get("live_vol_forecast") or None
    context = {"regime": tags.get("live_regime") or None, "vol_forecast": vol and float(vol)}
    forecast = model.predict(pl.read_parquet(probe), None, context)
    gap = abs(forecast.zone["forecast_logret"] - float(tags["live_forecast_logret"]))
    return ReloadCheck(version, gap, limit)


@dataclass
class CheckedServing:
    """What serves a horizon today after the reload check: `model` None means the random walk."""

    model: ServedModel | None
    serving: Serving
    check: ReloadCheck  # the check of the version the release room chose (champion or newest)

    @property
    def fell_back(self) -> bool:
        return self.check.checked and not self.check.ok


def version_folder(cache: Path, horizon: str, version: str) -> Path:
    """Where `load_version(..., cache)` keeps a version's downloaded artifacts."""
    return cache / f"{registered_model_name(horizon)}-v{version}" / ARTIFACT_PATH


def _load_and_check(
    tracker: Tracker, horizon: str, version: str, cache: Path
) -> tuple[ServedModel, ReloadCheck]:
    name = registered_model_name(horizon)
    model = load_version(tracker, name, version, cache)
    folder = version_folder(cache, horizon, version)
    return model, check_loaded(model, folder, tracker.version_tags(name, version))


def checked_serving(tracker: Tracker, horizon: str, cache: Path) -> CheckedServing:
    """The version that serves today, loaded and checked. When the chosen version does not
    reproduce, it refuses to serve: the newest other version that passed its gates, was not
    rolled back and reproduces serves instead (normally the champion before it), flagged
    provisional with the reason; with none, the random walk serves (model None), flagged so."""
    serving = serving_versions(tracker, horizon)
    model, check = _load_and_check(tracker, horizon, serving.served, cache)
    if check.ok or not check.checked:
        return CheckedServing(model, serving, check)
    refused = check.reason(horizon)
    for number, tags in sorted(registered_versions(tracker, horizon).items(), reverse=True):
        version = str(number)
        if version == serving.served or version_failed_gates(tags) or ROLLED_BACK_TAG in tags:
            continue
        other, other_check = _load_and_check(tracker, horizon, version, cache)
        if other_check.ok:
            reason = f"{refused}; v{version}, the newest version that passed its gates, serves"
            challenger = serving.challenger if serving.challenger != version else None
            return CheckedServing(other, Serving(version, True, (reason,), challenger), check)
    reason = f"{refused}; no other version passed its gates and reproduces: the random walk serves"
    return CheckedServing(None, Serving(RANDOM_WALK_SERVES, True, (reason,), None), check)


def served_reference_predictions(
    tracker: Tracker, horizons: Sequence[str], cache: Path
) -> pl.DataFrame:
    """Each horizon's served version's own walk-forward forecasts (horizon, forecast_logret):
    the reference for prediction drift, never a newer challenger's. Horizons whose served
    version recorded none (registered before these were kept) are left out."""
    frames = []
    for horizon in horizons:
        try:
            version = serving_versions(tracker, horizon).served
        except LookupError:
            continue
        download_version(tracker, registered_model_name(horizon), version, cache)  # once
        path = reference_path(version_folder(cache, horizon, version))
        if path.exists():
            frames.append(
                pl.read_parquet(path)
                .sort("origin")  # in time order: drift calibrates on chunks of it
                .select(
                    pl.lit(horizon).alias("horizon"), pl.col("forecast_logret").cast(pl.Float64)
                )
            )
    schema = {"horizon": pl.Utf8, "forecast_logret": pl.Float64}
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)
