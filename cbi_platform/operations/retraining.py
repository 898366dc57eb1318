"""Which horizons to retrain, from the monitors' conditions: the retraining sensor's logic.

Retraining only on evidence: a firing condition of a retraining kind asks for a retrain of its
own horizon, and only accuracy (the served forecasts lose to the random walk) and coverage
(the zones undercover) are retraining kinds (`conditions.RETRAIN_KINDS`). Drift and correlation
breaks inform the engineer; they never retrain by themselves: a drifted input or a broken
correlation that has not hurt the forecasts is no evidence that a new fit would do better, and
on the simulator drift-driven retrains were most of the replay's six (issue 20). Idempotent by
construction:

- `run_key` = retrain:<condition key>:<horizon>:<day the condition started firing>. A condition
  that keeps firing keeps the same key (the daemon never launches a run_key twice); one that
  clears and fires again on a later day is a new episode with a new key.
- The JSON cursor remembers every episode already requested, so nothing is retrained twice
  for one condition even across a daemon restart (the cursor is stored by Dagster).
- A cooldown: a horizon retrained within `cooldown_business_days` is not retrained again, for
  any condition; the request is deferred (and made later if the condition still fires).
- A condition the served version has not seen: when the served version was trained on data
  through a day on or after the condition began, a retrain would see nothing new.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cbi_platform.conditions import RETRAIN_KINDS, Condition


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


def affected_horizons(condition: Condition, horizons: Sequence[str]) -> list[str]:
    """The horizons a condition asks to retrain: its own, when it is served."""
    return [condition.horizon] if condition.horizon in horizons else []


def plan_retraining(
    conditions: Sequence[Condition],
    cursor: str | None,
    *,
    horizons: Sequence[str],
    kinds: Sequence[str],
    cooldown_business_days: int,
    run_exists: Callable[[str], bool] | None = None,
    trained_through: Mapping[str, dt.date] | None = None,
) -> RetrainPlan:
    """Run requests for the firing conditions of `kinds` (see the module docstring).

    `run_exists(run_key)`: whether a run with that key was already launched (the daemon's own
    dedupe, checked here too so an in-process replay behaves the same). `kinds` outside
    `RETRAIN_KINDS` raise: drift and correlation breaks do not retrain by themselves."""
    not_evidence = sorted(set(kinds) - set(RETRAIN_KINDS))
    if not_evidence:
        raise ValueError(
            f"retraining kinds {not_evidence} cannot request a retrain: only "
            f"{list(RETRAIN_KINDS)} are evidence that matters to the forecast (drift and "
            "correlation breaks inform the engineer)"
        )
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
        targets = affected_horizons(condition, horizons)
        if not targets:
            deferred.append(f"{condition.key}: affects no served horizon (no retrain)")
        began = start
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
