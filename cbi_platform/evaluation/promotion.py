"""Champion / challenger: when a newly trained ensemble replaces the one in service.

The first ensemble that passes the gates becomes champion. A challenger replaces it only if
(1) its MASE is lower by `margin` (default 10%, the original rule), (2) a Diebold-Mariano test
on the origins both scored favours it, (3) the leakage gates passed, and (4) its 90% coverage is
within 5 points of nominal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cbi_platform.evaluation.metrics import diebold_mariano


@dataclass(frozen=True)
class Candidate:
    version: str
    mase: float
    coverage90: float
    leakage_passed: bool
    errors: dict[str, float] = field(default_factory=dict)  # origin (ISO) -> |error|


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]
    mase_improvement: float | None = None
    dm_pvalue: float | None = None


def gates(c: Candidate, coverage_tolerance: float = 0.05) -> list[str]:
    failures = []
    if not c.leakage_passed:
        failures.append("leakage gates failed")
    if not np.isfinite(c.coverage90) or abs(c.coverage90 - 0.90) > coverage_tolerance:
        failures.append(f"90% coverage {c.coverage90:.3f} is not within 5 points of 0.90")
    if not np.isfinite(c.mase):
        failures.append("MASE undefined")
    return failures


def decide(
    challenger: Candidate,
    champion: Candidate | None,
    margin: float = 0.10,
    dm_alpha: float = 0.10,
    dm_lags: int = 0,
) -> Decision:
    failures = gates(challenger)
    if failures:
        return Decision(False, tuple(failures))
    if champion is None:
        return Decision(True, ("first ensemble that passes the gates: champion",))
    improvement = 1 - challenger.mase / champion.mase
    reasons = []
    if improvement < margin:
        reasons.append(
            f"MASE {challenger.mase:.4f} vs {champion.mase:.4f}: {improvement:+.1%} < {margin:.0%}"
        )
    common = sorted(set(challenger.errors) & set(champion.errors))
    pvalue = None
    if len(common) >= 5:
        dm = diebold_mariano(
            np.array([challenger.errors[o] for o in common]),
            np.array([champion.errors[o] for o in common]),
            dm_lags,
        )
        pvalue = dm.pvalue
        if not (np.isfinite(dm.stat) and dm.stat < 0 and dm.pvalue < dm_alpha):
            reasons.append(
                f"DM test does not favour the challenger (stat {dm.stat:.2f}, p {dm.pvalue:.3f})"
            )
    else:
        reasons.append(f"only {len(common)} common origins for the DM test")
    if reasons:
        return Decision(False, tuple(reasons), improvement, pvalue)
    return Decision(
        True, (f"MASE better by {improvement:.1%} and DM favours it",), improvement, pvalue
    )
