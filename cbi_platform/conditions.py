"""What every monitor reports to the alerting and retraining sensors: a condition, firing or not.

A monitor states, for each condition it judges (e.g. "accuracy of 1w versus the random walk"),
whether it fires now and the evidence. The alert book turns the changes into mails (one when it
starts firing, one "resolved" when it clears); the retraining sensor turns firing conditions of
the retraining kinds into run requests for the affected horizons.

A message type at the bottom of the layers: operations' monitors, procurement's live decision
check and the results sink all raise or store conditions, and none may import another's layer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

# Condition kinds. Only accuracy and coverage can request retraining of their horizon: they are
# evidence that matters to the forecast. Drift and correlation breaks inform the engineer.
ACCURACY = "accuracy"  # error relative to the random walk's (or an absolute MAPE rule)
DRIFT = "drift"  # input, prediction or driver drift beyond threshold
CORRELATION_BREAK = "correlation_break"  # soy-palm / soy-crude outside their own band
COVERAGE = "coverage"  # zones cover less than they achieved in validation, minus a margin
REGIME_FAILURE = "regime_failure"  # zones undercover in the current regime
STALE_DATA = "stale_data"
FAILED_CHECK = "failed_check"  # a blocking asset check failed
FAILED_RUN = "failed_run"
DECISION_QUALITY = "decision_quality"  # recommended purchases cost more than even buying
RELOAD_MISMATCH = "reload_mismatch"  # the served version does not reproduce on reload
KINDS = (
    ACCURACY,
    DRIFT,
    CORRELATION_BREAK,
    COVERAGE,
    REGIME_FAILURE,
    STALE_DATA,
    FAILED_CHECK,
    FAILED_RUN,
    DECISION_QUALITY,
    RELOAD_MISMATCH,
)
RETRAIN_KINDS = (ACCURACY, COVERAGE)


@dataclass(frozen=True)
class Condition:
    """One judged condition. `key` is stable across days (e.g. "accuracy/1w"), so the alert
    book can tell "still firing" from "newly firing"."""

    key: str
    kind: str
    firing: bool
    title: str  # one line for a mail subject
    as_of: dt.date  # the market day the judgement is about
    horizon: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)  # numbers that justify it
    link: str | None = None  # the Dagster run (or asset) that produced the evidence

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"condition {self.key!r}: unknown kind {self.kind!r}; one of {KINDS}")
