"""Which registered version of a horizon serves, which one shadows it: the one place that reads
or moves the champion alias.

Each horizon's ensemble is registered as `cbi-zl-<h>` in MLflow. The MLflow alias "champion"
marks the version that serves; `cbi_platform.release.control` moves it (by hand, or
automatically on walk-forward or shadow evidence) with an audit row. Everything else (serving,
the daily refresh, monitors, deployment) asks here.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow

from cbi_platform.release.gates import version_failed_gates
from cbi_platform.tracking import Tracker, registered_model_name

CHAMPION = "champion"  # the MLflow alias of the serving version
ROLLED_BACK_TAG = "rolled_back"  # set on a version an operator rolled back from


def model_version_label(horizon: str, version: str) -> str:
    """The forecast history's `model_version` ("cbi-zl-1w/v3") for a version ("3", "v3", or
    already a label)."""
    version = str(version)
    if "/" in version:
        return version
    return f"{registered_model_name(horizon)}/v{version.removeprefix('v')}"


def registered_versions(tracker: Tracker, horizon: str) -> dict[int, dict[str, str]]:
    """Every registered version of the horizon's model: number -> tags (empty when none)."""
    name = registered_model_name(horizon)
    try:
        found = tracker.client.search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:  # an unknown model name: no versions
        return {}
    return {int(v.version): dict(v.tags or {}) for v in found}


def champion_version(tracker: Tracker, horizon: str) -> str | None:
    """The version the champion alias points at ("3"), or None when no version ever passed."""
    return tracker.alias_version(registered_model_name(horizon), CHAMPION)


def set_champion(tracker: Tracker, horizon: str, version: str) -> None:
    """Point the champion alias at `version` (no audit: `release.control` records the move)."""
    tracker.set_alias(registered_model_name(horizon), CHAMPION, version)


def clear_champion(tracker: Tracker, horizon: str) -> None:
    """Remove the champion alias (undoing a first promotion whose audit row failed)."""
    tracker.client.delete_registered_model_alias(registered_model_name(horizon), CHAMPION)


def challenger_version(tracker: Tracker, horizon: str) -> str | None:
    """The version the horizon shadows: the highest registered version number above the
    champion's, skipping versions tagged `rolled_back` (an operator took them out of service).

    None when nothing is registered or no eligible version is newer than the champion (the
    newest IS the champion, or everything newer was rolled back). Versions older than the
    champion are never challengers: they were superseded. With no champion at all, the newest
    eligible version is returned (it has no champion to be compared with yet).
    """
    versions = registered_versions(tracker, horizon)
    champion = champion_version(tracker, horizon)
    floor = int(champion) if champion is not None else 0
    eligible = [v for v, tags in versions.items() if v > floor and ROLLED_BACK_TAG not in tags]
    return str(max(eligible)) if eligible else None


def served_version(tracker: Tracker, horizon: str) -> str | None:
    """The version that serves the horizon: the champion, else the newest registered version
    (served provisional); None when nothing is registered."""
    return champion_version(tracker, horizon) or tracker.latest_version(
        registered_model_name(horizon)
    )


@dataclass(frozen=True)
class Serving:
    """Which versions forecast a horizon today."""

    served: str
    provisional: bool
    failed_gates: tuple[str, ...]
    challenger: str | None


def serving_versions(tracker: Tracker, horizon: str) -> Serving:
    """The champion serves (and the challenger shadows it); with no champion, the newest version
    serves. Either is flagged provisional, with its gates, when it failed any gate, whoever
    promoted it (a version with no champion above it always is). LookupError when nothing is
    registered."""
    name = registered_model_name(horizon)
    champion = champion_version(tracker, horizon)
    if champion is not None:
        failed = version_failed_gates(tracker.version_tags(name, champion))
        return Serving(champion, bool(failed), failed, challenger_version(tracker, horizon))
    newest = tracker.latest_version(name)
    if newest is None:
        raise LookupError(
            f"{name}: no registered version to serve; train first (`make run` or `cbi run`)"
        )
    failed = version_failed_gates(tracker.version_tags(name, newest))
    return Serving(newest, True, failed or ("no version passed the promotion gates",), None)
