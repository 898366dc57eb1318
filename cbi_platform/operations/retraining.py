"""Which horizons to retrain, from the monitors' conditions: the retraining sensor's logic.

A firing condition of a retraining kind (accuracy, drift, correlation break) asks for a retrain
of the horizons it affects: its own horizon, or for a correlation break (which has none) the
horizons whose served forecast leans on the broken partner (a driver of the served row is a
feature of that market). Idempotent by construction:

- `run_key` = retrain:<condition key>:<horizon>:<day the condition started firing>. A condition
  that keeps firing keeps the same key (the daemon never launches a run_key twice); one that
  clears and fires again on a later day is a new episode with a new key.
- The JSON cursor remembers every episode already requested, so nothing is retrained twice
  for one condition even across a daemon restart (the cursor is stored by Dagster).
- A cooldown: a horizon retrained within `cooldown_business_days` is not retrained again, for
  any condition; the request is deferred (and made later if the condition still fires).
- Nothing to learn, no retrain: when the served version was trained on data through a day on
  or after the condition began (a correlation break that started before its training end, or
  a condition that fired before it was trained), a retrain would see nothing new.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cbi_platform.conditions import CORRELATION_BREAK, Condition


@dataclass(frozen=True)
class RetrainRequest:
    horizon: str
    run_key: str
    condition_key: str
    reason: str
    episode_start: dt.date


@dataclass(frozen=True)
class RetrainPlan:
    requests: list[RetrainRequest]
    deferred: list[str]  # why a firing condition did not (yet) request a run
    cursor: str  # the new JSON cursor


def load_cursor(cursor: str | None) -> dict:
    state = json.loads(cursor) if cursor else {}
    state.setdefault("episodes", {})  # condition key -> day its current episode started
    state.setdefault("requested", {})  # "<condition key>|<horizon>|<episode start>" -> day
    state.setdefault("last_retrain", {})  # horizon -> day of the last request
    return state


def _business_days_between(a: dt.date, b: dt.date) -> int:
    return int(np.busday_count(a, b))


def affected_horizons(
    condition: Condition,
    horizons: Sequence[str],
    served_drivers: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """The horizons a condition asks to retrain (see the module docstring)."""
    if condition.horizon is not None:
        return [condition.horizon] if condition.horizon in horizons else []
    if condition.kind == CORRELATION_BREAK:
        partner = str(condition.evidence.get("partner") or "").lower()
        if not partner:
            return []
        drivers = served_drivers or {}
        return [h for h in horizons if any(partner in f.lower() for f in drivers.get(h, ()))]
    return []


def _began(condition: Condition, episode_start: dt.date) -> dt.date:
    """When the condition's cause began: a break's first day outside its band, else the day
    the condition started firing."""
    run_start = condition.evidence.get("run_start")
    if condition.kind == CORRELATION_BREAK and run_start:
        return min(dt.date.fromisoformat(str(run_start)), episode_start)
    return episode_start


def plan_retraining(
    conditions: Sequence[Condition],
    cursor: str | None,
    *,
    horizons: Sequence[str],
    kinds: Sequence[str],
    cooldown_business_days: int,
    served_drivers: Mapping[str, Sequence[str]] | None = None,
    run_exists: Callable[[str], bool] | None = None,
    trained_through: Mapping[str, dt.date] | None = None,
) -> RetrainPlan:
    """Run requests for the firing conditions of `kinds` (see the module docstring).

    `run_exists(run_key)`: whether a run with that key was already launched (the daemon's own
    dedupe, checked here too so an in-process replay behaves the same)."""
    state = load_cursor(cursor)
    requests: list[RetrainRequest] = []
    deferred: list[str] = []
    for condition in sorted(conditions, key=lambda c: (c.as_of, c.key)):
        if condition.kind not in kinds:
            continue
        if not condition.firing:
            state["episodes"].pop(condition.key, None)
            continue
        start = dt.date.fromisoformat(
            state["episodes"].setdefault(condition.key, condition.as_of.isoformat())
        )
        targets = affected_horizons(condition, horizons, served_drivers)
        if not targets:
            deferred.append(f"{condition.key}: affects no served horizon (no retrain)")
        began = _began(condition, start)
        for horizon in targets:
            seen = (trained_through or {}).get(horizon)
            if seen is not None and seen >= began:
                deferred.append(
                    f"{condition.key} -> {horizon}: the served version was trained through "
                    f"{seen}, after the condition began ({began}): nothing new to learn"
                )
                continue
            episode = f"{condition.key}|{horizon}|{start.isoformat()}"
            if episode in state["requested"]:
                continue
            run_key = f"retrain:{condition.key}:{horizon}:{start.isoformat()}"
            if run_exists is not None and run_exists(run_key):
                state["requested"][episode] = condition.as_of.isoformat()
                continue
            last = state["last_retrain"].get(horizon)
            if last is not None:
                since = _business_days_between(dt.date.fromisoformat(last), condition.as_of)
                if since < cooldown_business_days:
                    deferred.append(
                        f"{condition.key} -> {horizon}: cooling down ({since} of "
                        f"{cooldown_business_days} business days since the retrain of {last})"
                    )
                    continue
            if any(r.horizon == horizon for r in requests):
                state["requested"][episode] = condition.as_of.isoformat()
                continue  # one retrain serves every condition of the horizon this tick
            requests.append(
                RetrainRequest(
                    horizon=horizon,
                    run_key=run_key,
                    condition_key=condition.key,
                    reason=f"{condition.title} (firing since {start})",
                    episode_start=start,
                )
            )
            state["requested"][episode] = condition.as_of.isoformat()
            state["last_retrain"][horizon] = condition.as_of.isoformat()
    return RetrainPlan(requests, deferred, json.dumps(state, sort_keys=True))
