"""How closely a member must reproduce its own forecast, by the precision it computes in.

One rule for every reproduction check (the decision series' per-member check, a registered
version reloaded from the registry): same model, same input, so the gap is rounding only.
"""

from __future__ import annotations

from typing import Any

# float64 members (trees, linear, statistical, benchmarks): the same arithmetic on the same
# numbers.
FLOAT64_TOLERANCE = 1e-9
# Networks compute in float32: the daily path runs a network once over a block of days, the
# walk-forward over one window, and a batch of another size rounds differently (float32 keeps
# ~1e-7 of the standardised output; times the target's std, well under 1 in log return). 1e-6 in
# log return is 0.0001% of the price.
FLOAT32_TOLERANCE = 1e-6
# Under the mixed_float16 policy (CUDA) the hidden activations are float16 (unit roundoff
# ~4.9e-4): a few roundings of the standardised output times the target's std (<~0.3 at 12m)
# stay under 1e-3 in log return (0.1% of the price). Derived, not measured: CPU runs use float32.
MIXED_FLOAT16_TOLERANCE = 1e-3


def reproduction_tolerance(member: Any) -> float:
    """The tolerance (log return) for one member: by the precision its network was fitted in
    (`NeuralModel.precision`), float64 for every other member."""
    precision = getattr(member, "precision", None)
    if precision is None:
        return FLOAT64_TOLERANCE
    if precision == "mixed_float16":
        return MIXED_FLOAT16_TOLERANCE
    return FLOAT32_TOLERANCE
