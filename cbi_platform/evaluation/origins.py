"""Walk-forward origins on a fixed grid anchored to a recorded date.

The rule (integer arithmetic only, reproducible in any language):

    a         = row of the anchor date in the trading-date index (first date >= anchor; past
                the last date, the last row plus the business days between them)
    step      = (span - 1) / (n_scored - 1), an exact fraction (1511/59 ≈ 25.61 by default)
    row(j)    = a - round_half_up(-j * step)  for every integer j (negative: before the anchor)
    eligible  = grid rows with min_first_origin_row <= row(j) <= last - end_offset
    roles     = the last n_scored eligible rows are "scored", the n_development before them
                "development", the n_calibration before those "calibration" (oldest first)
    known(h)  = row(j) + h <= last                     # the target close exists in the data

A grid row depends only on the anchor and the step, never on the last date: a new day adds
origins (and moves the windows forward by whole origins), it never moves one. On the shared ZL
(5,000 rows to 2024-06-21) the anchor is the last scored origin of the issue-3 rule, so the 60
scored origins are exactly that rule's. Refits are scheduled on the grid index j too (see
`walk_forward.py`), so a retrained challenger and its champion share origins and refit dates.

With a history too short for every window, all windows shrink by one factor
(`Protocol.window_counts`), with a notice in the plan.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import polars as pl

from cbi_platform.settings import Protocol

CALIBRATION = "calibration"  # residuals only calibrate zones and combiners
DEVELOPMENT = "development"  # every protocol choice is made here
SCORED = "scored"  # reported, never tuned on
LIVE = "live"  # the latest date: its forecast is the one users see; never scored
PRE_SCORED = (CALIBRATION, DEVELOPMENT)


@dataclass(frozen=True)
class OriginPlan:
    """Origins (ascending, oldest first) for one horizon, with roles, grid index and targets."""

    dates: tuple[dt.date, ...]  # origin dates
    index: tuple[int, ...]  # row index of each origin in the date index the plan was built on
    role: tuple[str, ...]  # calibration | development | scored | live
    target_known: tuple[bool, ...]  # index + horizon_days <= last index of the date index
    horizon_days: int
    spacing_days: float  # trading days between grid origins
    n_dates: int  # length of the date index the plan was built on
    grid_index: tuple[int | None, ...] = ()  # j of each origin on the grid; None: live origin
    notice: str | None = None  # set when the short-history rule scaled the windows

    @property
    def n_origins(self) -> int:
        return len(self.dates)

    @property
    def scored_mask(self) -> np.ndarray:
        """Origins that count for reported accuracy: scored and with a known target."""
        return (np.asarray(self.role) == SCORED) & np.asarray(self.target_known, dtype=bool)

    @property
    def n_scored(self) -> int:
        return int(self.scored_mask.sum())

    def for_horizon(self, horizon_days: int) -> OriginPlan:
        """The same origins, with `target_known` recomputed for another horizon."""
        last = self.n_dates - 1
        known = tuple(bool(i + horizon_days <= last) for i in self.index)
        return replace(self, horizon_days=horizon_days, target_known=known)

    def to_frame(self) -> pl.DataFrame:
        grid = self.grid_index or (None,) * self.n_origins
        return pl.DataFrame(
            {
                "origin": list(self.dates),
                "origin_index": list(self.index),
                "grid_index": list(grid),
                "role": list(self.role),
                "target_known": list(self.target_known),
                "horizon_days": [self.horizon_days] * self.n_origins,
            },
            schema={
                "origin": pl.Date,
                "origin_index": pl.Int64,
                "grid_index": pl.Int64,
                "role": pl.Utf8,
                "target_known": pl.Boolean,
                "horizon_days": pl.Int64,
            },
        )


def _as_dates(dates: pl.Series | Sequence[dt.date] | np.ndarray) -> list[dt.date]:
    series = dates if isinstance(dates, pl.Series) else pl.Series("date", dates)
    if series.dtype != pl.Date:
        series = series.cast(pl.Date)
    if series.null_count():
        raise ValueError("the date index holds nulls")
    values = series.to_list()
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError("the date index must be strictly increasing (sorted, no duplicates)")
    return values


def anchor_row(values: Sequence[dt.date], anchor: dt.date) -> int:
    """Row of the anchor: the first date >= anchor; past the data, the last row plus the
    business days from the last date to the anchor (exact for Mon-Fri calendars)."""
    if not values:
        raise ValueError("the date index is empty")
    if anchor > values[-1]:
        extra = int(np.busday_count(np.datetime64(values[-1], "D"), np.datetime64(anchor, "D")))
        return len(values) - 1 + max(extra, 1)
    return int(np.searchsorted(np.asarray(values, dtype="datetime64[D]"), np.datetime64(anchor)))


def grid_rows(a: int, step: Fraction, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """(j, row) of every grid origin with lo <= row <= hi, ascending."""
    if hi < lo:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    num, den = step.numerator, step.denominator
    # row(j) = a - floor((-2 j num + den) / (2 den)); bracket j, then filter exactly.
    j_lo = (lo - a) * den // num - 2
    j_hi = (hi - a) * den // num + 2
    j = np.arange(j_lo, j_hi + 1, dtype=np.int64)
    rows = a - (-2 * j * num + den) // (2 * den)
    keep = (rows >= lo) & (rows <= hi)
    return j[keep], rows[keep]


def protocol_origins(
    dates: pl.Series | Sequence[dt.date] | np.ndarray,
    horizon_days: int,
    protocol: Protocol | None = None,
) -> OriginPlan:
    """The protocol's origins on a trading-date index (module docstring for the rule)."""
    protocol = protocol or Protocol()
    if horizon_days < 1:
        raise ValueError("horizon_days must be >= 1")
    values = _as_dates(dates)
    last = len(values) - 1
    a = anchor_row(values, protocol.anchor)
    j, rows = grid_rows(a, protocol.step, protocol.min_first_origin_row, last - protocol.end_offset)
    counts = protocol.window_counts(len(rows))
    wanted = counts.n_calibration + counts.n_development + counts.n_scored
    j, rows = j[len(rows) - wanted :], rows[len(rows) - wanted :]
    role = (
        (CALIBRATION,) * counts.n_calibration
        + (DEVELOPMENT,) * counts.n_development
        + (SCORED,) * counts.n_scored
    )
    return OriginPlan(
        dates=tuple(values[i] for i in rows),
        index=tuple(int(i) for i in rows),
        role=role,
        target_known=tuple(bool(i + horizon_days <= last) for i in rows),
        horizon_days=int(horizon_days),
        spacing_days=float(protocol.step),
        n_dates=len(values),
        grid_index=tuple(int(x) for x in j),
        notice=counts.notice,
    )


def walk_forward_origins(
    dates: pl.Series | Sequence[dt.date] | np.ndarray,
    horizon_days: int,
    n_origins: int = 60,
    span: int = 1512,
    end_offset: int = 5,
    n_burn_in: int = 30,
    *,
    n_development: int | None = None,
    anchor: dt.date | None = None,
) -> OriginPlan:
    """Small protocols for tests and ad-hoc runs: `n_origins` scored over `span` rows and
    `n_burn_in` earlier origins (the last `n_development`, default min(60, n_burn_in), are the
    development window). Without `anchor` the grid is anchored at the last scored origin of
    the given index, which moves with new data: the platform always passes a recorded anchor.
    """
    values = _as_dates(dates)
    if n_origins < 2:
        raise ValueError("n_origins must be >= 2")
    if span < n_origins:
        raise ValueError("span must be >= n_origins (at most one origin per row)")
    if end_offset < 0 or n_burn_in < 0:
        raise ValueError("end_offset and n_burn_in must be >= 0")
    last = len(values) - 1
    if anchor is None:
        if last - end_offset < 0:
            raise ValueError(f"{len(values)} dates are too few for end_offset {end_offset}")
        anchor = values[last - end_offset]
    n_dev = min(60, n_burn_in) if n_development is None else n_development
    protocol = Protocol(
        anchor=anchor,
        span=span,
        n_scored=n_origins,
        end_offset=end_offset,
        n_development=n_dev,
        n_calibration=n_burn_in - n_dev,
        min_first_origin_row=0,
    )
    step = protocol.step
    a = anchor_row(values, anchor)
    _, rows = grid_rows(a, step, 0, last - end_offset)
    if len(rows) < n_origins + n_burn_in:
        raise ValueError(
            f"{len(values)} dates are too few for {n_burn_in} burn-in + {n_origins} origins "
            f"over {span} rows ending {end_offset} before the last"
        )
    return protocol_origins(values, horizon_days, protocol)


def with_live_origin(plan: OriginPlan, last_date: dt.date) -> OriginPlan:
    """Append the last date of the index as a `live` origin (target unknown, never scored).

    Walk-forward, ensemble and zones then produce the user-facing forecast by exactly the same
    code path, and under the same embargo, as every evaluated origin.
    """
    last = plan.n_dates - 1
    grid = plan.grid_index or (None,) * plan.n_origins
    if plan.index and plan.index[-1] == last:  # end_offset 0: the last origin becomes the live one
        return replace(plan, role=(*plan.role[:-1], LIVE), grid_index=grid)
    return replace(
        plan,
        dates=(*plan.dates, last_date),
        index=(*plan.index, last),
        role=(*plan.role, LIVE),
        target_known=(*plan.target_known, False),
        grid_index=(*grid, None),
    )
