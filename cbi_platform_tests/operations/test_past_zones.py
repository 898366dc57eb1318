"""Past zones against what happened: exact hit counts on a hand-made history, the effective
sample size of overlapping forecasts, the Wilson interval on it, and the fallback and empty
states."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest

from cbi_platform.operations.past_zones import (
    NO_SOURCE,
    SERVED_SOURCE,
    WALK_FORWARD_SOURCE,
    hit_rate,
    matured_served,
    past_zones,
    walk_forward_rows,
)
from cbi_platform_tests.conftest import _business_days

DAYS = _business_days(dt.date(2025, 3, 3), 30)
PRICES = [40.0 + 0.25 * i for i in range(30)]
H = 5  # 1w


def _zones(actual: float, kind: int) -> dict[str, float]:
    """kind 0: inside P30-P70; 1: inside P10-P90 only; 2: outside both (above P90)."""
    if kind == 0:
        return {"p10": actual - 1, "p30": actual - 0.5, "p50": actual, "p70": actual + 0.5,
                "p90": actual + 1}  # fmt: skip
    if kind == 1:
        return {"p10": actual - 1, "p30": actual + 0.2, "p50": actual + 0.3, "p70": actual + 0.5,
                "p90": actual + 1}  # fmt: skip
    return {"p10": actual + 0.1, "p30": actual + 0.2, "p50": actual + 0.3, "p70": actual + 0.4,
            "p90": actual + 0.5}  # fmt: skip


def _history() -> pl.DataFrame:
    """Served 1w forecasts from DAYS[0..29]: those from DAYS[0..24] matured (target DAYS[i+5]),
    the rest not. Row i is of kind i % 3. A shadow row that would hold is never counted."""
    rows = []
    for i, origin in enumerate(DAYS):
        target = DAYS[i + H] if i + H < len(DAYS) else origin + dt.timedelta(days=7)
        actual = PRICES[i + H] if i + H < len(DAYS) else PRICES[-1]
        rows.append(
            {
                "as_of": origin,
                "horizon": "1w",
                "target_date": target,
                "price": PRICES[i],
                "forecast": PRICES[i],
                "role": "served",
                "created_at": dt.datetime.combine(origin, dt.time(20)),
                **_zones(actual, i % 3),
            }
        )
    shadow = {**rows[2], "role": "shadow", **_zones(PRICES[7], 0)}  # row 2 is kind 2 served
    rows.append(shadow)
    rows.append({**rows[0], "horizon": "1m", "target_date": DAYS[21]})  # another horizon
    return pl.DataFrame(rows)


def _closes() -> pl.DataFrame:
    return pl.DataFrame({"date": DAYS, "value": PRICES})


def _wilson(p: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_matured_served_keeps_served_matured_rows_of_one_horizon_with_the_realised_price():
    rows = matured_served(_history(), _closes(), "1w")
    assert rows.height == 25  # origins DAYS[0..24]; the last five have not matured
    assert rows["origin"].to_list() == DAYS[:25]
    assert rows["actual"].to_list() == PRICES[H:]
    assert rows["target_date"].to_list() == DAYS[H:]


def test_hit_counts_are_exact_and_the_interval_uses_non_overlapping_outcomes():
    rows = matured_served(_history(), _closes(), "1w")
    inner = hit_rate(rows, "1w", "P30–P70", "p30", "p70", 0.40, walk=False)
    outer = hit_rate(rows, "1w", "P10–P90", "p10", "p90", 0.80, walk=False)
    # Kinds over i = 0..24: 9 of kind 0, 8 of kind 1, 8 of kind 2 (the shadow row not counted).
    assert (inner.held, inner.n) == (9, 25)
    assert (outer.held, outer.n) == (17, 25)
    # Daily origins, 5-day targets: windows starting at i = 0, 5, 10, 15, 20 do not overlap.
    assert inner.n_effective == outer.n_effective == 5
    low, high = _wilson(9 / 25, 5)
    assert inner.low == pytest.approx(low) and inner.high == pytest.approx(high)
    assert inner.sentence == (
        f"The 1w P30–P70 range held 9 of the last 25 times (36%; 95% interval "
        f"{100 * low:.0f}%–{100 * high:.0f}% from 5 independent outcomes); a well-calibrated "
        "P30–P70 range holds 40%."
    )
    assert outer.sentence.startswith("The 1w P10–P90 range held 17 of the last 25 times (68%;")


def test_the_last_n_matured_forecasts_are_counted():
    payload = past_zones("1w", matured_served(_history(), _closes(), "1w"), last=10)
    inner, outer = payload["hit_rates"]
    # The last 10 matured origins are i = 15..24: kind 0 at 15, 18, 21, 24; kind 2 at 17, 20, 23.
    assert (inner["held"], inner["n"], outer["held"]) == (4, 10, 7)
    assert inner["n_effective"] == 2  # windows from i = 15 and i = 20
    assert payload["source"] == SERVED_SOURCE and payload["n_matured"] == 25
    assert len(payload["zones"]) == 25  # the chart draws every matured forecast (up to 260)


def test_one_outcome_counts_once_and_says_so():
    rows = matured_served(_history(), _closes(), "1w").head(3)  # three overlapping windows
    rate = hit_rate(rows, "1w", "P30–P70", "p30", "p70", 0.40, walk=False)
    assert (rate.held, rate.n, rate.n_effective) == (1, 3, 1)
    assert "from 1 independent outcome)" in rate.sentence


def _walk_forward() -> pl.DataFrame:
    origins = _business_days(dt.date(2020, 1, 6), 40)
    rows = []
    for i in range(30):
        actual = 30.0 + i
        rows.append(
            {
                "horizon": "1w",
                "origin": origins[i],
                "target_date": origins[i + H],
                "role": "scored",
                "price": actual,
                "actual": actual,
                **_zones(actual, 0 if i < 12 else 2),
            }
        )
    rows.append({**rows[0], "horizon": "1m"})
    return pl.DataFrame(rows)


def test_a_fresh_home_falls_back_to_the_walk_forward_labelled_as_such():
    nothing = matured_served(_history().head(0), _closes(), "1w")
    assert nothing.height == 0
    payload = past_zones("1w", nothing, walk_forward_rows(_walk_forward(), "1w"))
    assert payload["source"] == WALK_FORWARD_SOURCE
    assert "walk-forward" in payload["label"] and "never served" in payload["label"]
    inner = payload["hit_rates"][0]
    assert (inner["held"], inner["n"]) == (12, 30)
    assert inner["sentence"].startswith("The walk-forward 1w P30–P70 range held 12 of the last 30")
    assert "walk-forward (never served)" in payload["summary"]


def test_served_outcomes_take_precedence_over_the_walk_forward():
    served = matured_served(_history(), _closes(), "1w")
    payload = past_zones("1w", served, walk_forward_rows(_walk_forward(), "1w"))
    assert payload["source"] == SERVED_SOURCE and payload["hit_rates"][0]["held"] == 9


def test_with_neither_the_state_is_empty_with_a_sentence():
    payload = past_zones("3m", matured_served(pl.DataFrame(), pl.DataFrame(), "3m"), None)
    assert payload["source"] == NO_SOURCE and payload["zones"] == []
    assert payload["n_matured"] == 0
    assert [r["sentence"] for r in payload["hit_rates"]] == [
        "The 3m P30–P70 range has no matured outcome yet.",
        "The 3m P10–P90 range has no matured outcome yet.",
    ]
    assert "fills in as forecasts mature" in payload["summary"]


def test_an_unknown_horizon_is_refused():
    with pytest.raises(ValueError, match="unknown horizon"):
        past_zones("2w", matured_served(pl.DataFrame(), pl.DataFrame(), "1w"))
