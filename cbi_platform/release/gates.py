"""Champion / challenger: when a newly trained ensemble replaces the one in service.

Gates every candidate must pass: (1) the blocking leakage checks on `features` passed for its
partition (a check with no recorded evaluation counts as not passed), (2) its 90% coverage is
consistent with nominal, (3) its MASE is defined. The first ensemble that passes the gates
becomes champion. A challenger that passes them replaces the champion only if, on the origins
both scored (and there must be at least `min_common` of them), (4) its MASE is lower by
`margin` (default 10%) and (5) a Diebold-Mariano test with horizon-appropriate Newey-West lags
favours it.

The coverage gate's rule (fixed before any result was re-run under it, issue 18): the 90% zone
fails only when 0.90 lies outside the 95% Wilson interval of its observed coverage on the
*effective* number of independent outcomes (`ensemble.conformal.coverage_interval`: scored
origins counted once per non-overlapping target window). A scored window of 60 origins holds
about 19, 11 and 5 independent outcomes at 3m, 6m and 12m, so a fixed band such as
|coverage - 0.90| <= 0.05 would judge noise there: 4 hits of 5 independent 12m outcomes says
nothing against 90%, 3 of 5 does. A version with no independent outcome fails (no evidence).

Whoever promotes, a served version that failed any gate is served provisional with the gates
it failed (`version_failed_gates`); promoting or rolling back to one by hand needs `force`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from cbi_platform.ensemble.combiners import ENSEMBLE
from cbi_platform.ensemble.conformal import coverage_interval, coverage_report
from cbi_platform.evaluation.metrics import diebold_mariano, dm_lags

# The blocking checks on `features` whose evaluation for the partition gates promotion.
LEAKAGE_CHECKS = (
    "features_contract",
    "features_leakage_truncation",
    "features_leakage_forward_shift",
    "features_leakage_target_correlation",
    "features_leakage_asof",
)


@dataclass(frozen=True)
class Candidate:
    """A registered ensemble version as promotion sees it.

    `leakage` maps each check name to its latest evaluation for the partition: True (passed),
    False (failed) or None (no evaluation recorded). `errors` maps a scored origin (ISO date) to
    the ensemble's MASE term there: |forecast - actual| / the naive h-step error at that origin.
    """

    version: str
    mase: float
    coverage90: float
    leakage: Mapping[str, bool | None]
    errors: dict[str, float] = field(default_factory=dict)
    coverage90_n_effective: int | None = None  # independent outcomes behind coverage90


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]
    mase_improvement: float | None = None  # on common origins
    dm_pvalue: float | None = None
    dm_lags: int | None = None
    common_origins: int | None = None
    failed_gates: tuple[str, ...] = ()  # the challenger's own gate failures


def leakage_failures(leakage: Mapping[str, bool | None]) -> list[str]:
    """One reason per required leakage check that did not pass (missing counts as failed)."""
    failures = []
    for name in LEAKAGE_CHECKS:
        outcome = leakage.get(name)
        if outcome is None:
            failures.append(f"leakage check {name}: no evaluation recorded for this partition")
        elif not outcome:
            failures.append(f"leakage check {name} failed")
    return failures


def coverage_failure(coverage90: float, n_effective: int | None) -> str | None:
    """The coverage gate (see the module docstring): None when it passes, else the reason."""
    if not np.isfinite(coverage90):
        return "90% coverage undefined"
    if n_effective is None or n_effective < 1:
        return (
            f"90% coverage {coverage90:.3f} with no recorded count of independent outcomes: "
            "it cannot be judged"
        )
    lo, hi = coverage_interval(coverage90, n_effective)
    if lo <= 0.90 <= hi:
        return None
    return (
        f"90% coverage {coverage90:.3f} on {n_effective} independent outcomes: its 95% "
        f"interval [{lo:.2f}, {hi:.2f}] excludes 0.90"
    )


def gates(c: Candidate) -> list[str]:
    """The candidate's own gates (no champion needed); empty when every gate passes."""
    failures = leakage_failures(c.leakage)
    coverage = coverage_failure(c.coverage90, c.coverage90_n_effective)
    if coverage is not None:
        failures.append(coverage)
    if not np.isfinite(c.mase):
        failures.append("MASE undefined")
    return failures


NOT_JUDGED = "no gate evaluation recorded for this version"


def version_failed_gates(tags: Mapping[str, str]) -> tuple[str, ...]:
    """The gates a registered version failed when it was judged (its `failed_gates` tag); a
    version never judged counts as failing (nothing vouches for it)."""
    if "failed_gates" not in tags:
        return (NOT_JUDGED,)
    return tuple(json.loads(tags["failed_gates"]))


def decide(
    challenger: Candidate,
    champion: Candidate | None,
    *,
    horizon_days: int,
    spacing_days: float,
    margin: float = 0.10,
    dm_alpha: float = 0.10,
    min_common: int = 10,
) -> Decision:
    """Promote the challenger or not, with every reason stated.

    The DM test uses ceil(h / spacing) - 1 Newey-West lags (`spacing_days`: trading days
    between origins), because targets of neighbouring origins overlap that often.
    """
    failures = tuple(gates(challenger))
    if failures:
        return Decision(False, failures, failed_gates=failures)
    if champion is None:
        return Decision(True, ("first ensemble that passes the gates: champion",))
    lags = dm_lags(horizon_days, spacing_days)
    common = sorted(set(challenger.errors) & set(champion.errors))
    if len(common) < min_common:
        return Decision(
            False,
            (
                f"only {len(common)} origins scored by both challenger v{challenger.version} and "
                f"champion v{champion.version} (need {min_common}): they cannot be compared",
            ),
            dm_lags=lags,
            common_origins=len(common),
        )
    ours = np.array([challenger.errors[o] for o in common], dtype=float)
    theirs = np.array([champion.errors[o] for o in common], dtype=float)
    mase_ours, mase_theirs = float(ours.mean()), float(theirs.mean())
    improvement = 1 - mase_ours / mase_theirs if mase_theirs > 0 else float("nan")
    reasons = []
    if not (np.isfinite(improvement) and improvement >= margin):
        reasons.append(
            f"MASE {mase_ours:.4f} vs {mase_theirs:.4f} on {len(common)} common origins: "
            f"{improvement:+.1%} < {margin:.0%}"
        )
    dm = diebold_mariano(ours, theirs, lags)
    if not (np.isfinite(dm.stat) and dm.stat < 0 and dm.pvalue < dm_alpha):
        reasons.append(
            f"DM test ({lags} Newey-West lags, {len(common)} common origins) does not favour the "
            f"challenger (stat {dm.stat:.2f}, p {dm.pvalue:.3f})"
        )
    if reasons:
        return Decision(False, tuple(reasons), improvement, dm.pvalue, lags, len(common))
    return Decision(
        True,
        (
            f"MASE better by {improvement:.1%} on {len(common)} common origins and DM favours it "
            f"(p {dm.pvalue:.3f}, {lags} lags)",
        ),
        improvement,
        dm.pvalue,
        lags,
        len(common),
    )


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
        coverage90_n_effective=int(first(cov_all, "n_effective")) if cov_all.height else None,
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
        coverage90_n_effective=(
            int(tags["coverage90_n_effective"]) if "coverage90_n_effective" in tags else None
        ),
    )


def serving_choice(
    registered: str,
    champion_before: str | None,
    decision: Decision,
    champion_failed: tuple[str, ...] = (),
) -> tuple[str, bool, tuple[str, ...]]:
    """(version that serves, provisional?, the gates it failed). The champion serves, flagged
    provisional when it failed any gate (`champion_failed`: a hand-promoted version); with no
    champion at all, the new version serves flagged provisional with its failing gates."""
    if decision.promote:
        return registered, False, ()
    if champion_before is not None:
        return champion_before, bool(champion_failed), tuple(champion_failed)
    return registered, True, decision.failed_gates or decision.reasons
