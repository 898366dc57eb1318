"""The decision series' per-member reproduction check: each member the ensemble uses, on its
origin day, against its own walk-forward forecast, at the tolerance of its precision."""

import datetime as dt
import math

import pytest

from cbi_platform.procurement.decision_series import (
    MIXED_PRECISION_REPRODUCTION_TOLERANCE,
    NETWORK_REPRODUCTION_TOLERANCE,
    REPRODUCTION_TOLERANCE,
    check_members_reproduce,
    member_tolerance,
)

ORIGIN = dt.date(2022, 4, 14)


class Float64Member:
    """A float64 member (no `precision`: ridge, trees, statistical models)."""


class Network:
    def __init__(self, precision: str) -> None:
        self.precision = precision


def check(members, forecasts, oof):
    return check_members_reproduce("1m", ORIGIN, members, forecasts, oof)


def test_each_member_is_held_to_the_tolerance_of_its_precision():
    assert member_tolerance(Float64Member()) == REPRODUCTION_TOLERANCE == 1e-9
    assert member_tolerance(Network("float32")) == NETWORK_REPRODUCTION_TOLERANCE == 1e-6
    assert member_tolerance(Network("mixed_float16")) == MIXED_PRECISION_REPRODUCTION_TOLERANCE
    members = {"ridge": Float64Member(), "nn_gru": Network("float32")}
    oof = {("ridge", ORIGIN): 0.01, ("nn_gru", ORIGIN): -0.02}
    # Within tolerance: passes, and the ensemble is held to the loosest member's tolerance.
    assert check(members, {"ridge": 0.01 + 5e-10, "nn_gru": -0.02 + 5e-7}, oof) == 1e-6
    assert check({"ridge": Float64Member()}, {"ridge": 0.01}, oof) == 1e-9
    # A float64 member 1e-7 off raises, naming the horizon, origin, member and gap.
    with pytest.raises(ValueError, match=r"1m: member ridge at origin 2022-04-14 .* gap 1e-07"):
        check(members, {"ridge": 0.01 + 1e-7, "nn_gru": -0.02}, oof)
    # A float32 network 2e-6 off raises too.
    with pytest.raises(ValueError, match="member nn_gru"):
        check(members, {"ridge": 0.01, "nn_gru": -0.02 + 2e-6}, oof)


def test_a_member_missing_on_one_side_only_is_a_mismatch():
    members = {"ets": Float64Member()}
    # Not fitted yet at this origin on both sides: nothing to compare.
    assert check(members, {"ets": math.nan}, {("ets", ORIGIN): None}) == 1e-9
    with pytest.raises(ValueError, match="member ets"):
        check(members, {"ets": math.nan}, {("ets", ORIGIN): 0.01})
    with pytest.raises(ValueError, match="member ets"):
        check(members, {"ets": 0.01}, {})
