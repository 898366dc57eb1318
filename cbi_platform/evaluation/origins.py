"""Walk-forward origins: where the protocol stands to forecast, fixed once for every horizon.

The origin rule (reproducible in any language, integer arithmetic only):

    N      = number of trading dates, last = N - 1
    e      = last - end_offset                   # the last scored origin (row index)
    step m = 0, 1, ..., n_origins + n_burn_in - 1  # steps back from e
    offset(m) = floor((2 * (span - 1) * m + (n_origins - 1)) / (2 * (n_origins - 1)))
              = round_half_up((span - 1) * m / (n_origins - 1))
    index(m)  = e - offset(m)
    role      = "scored" if m < n_origins else "burn_in"
    known(h)  = index(m) + h <= last             # the target close exists in the data

So the `n_origins` scored origins cover exactly the last `span` rows ending at `e` (the first
at e - (span - 1), the last at e), spaced (span - 1) / (n_origins - 1) rows apart (25.61 for
the protocol's 1,512 / 60), and the burn-in origins continue the same grid backwards. With
end_offset = 5 the origins are identical for every horizon; on 5,000 rows the scored origins
with a known target are 60 / 59 / 57 / 55 / 50 for 5 / 21 / 63 / 126 / 252 days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

SCORED = "scored"
BURN_IN = "burn_in"
LIVE = "live"  # the latest date: its forecast is the one users see; never scored


@dataclass(frozen=True)
class OriginPlan:
    """Origins (ascending, burn-in first) for one horizon, with their roles and target status."""

    dates: tuple[dt.date, ...]  # origin dates
    index: tuple[int, ...]  # row index of each origin in the date index the plan was built on
    role: tuple[str, ...]  # "burn_in" | "scored"
    target_known: tuple[bool, ...]  # index + horizon_days <= last index of the date index
    horizon_days: int
    spacing_days: float  # (span - 1) / (n_origins - 1): trading days between origins
    n_dates: int  # length of the date index the plan was built on

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
        return pl.DataFrame(
            {
                "origin": list(self.dates),
                "origin_index": list(self.index),
                "role": list(self.role),
                "target_known": list(self.target_known),
                "horizon_days": [self.horizon_days] * self.n_origins,
            },
            schema={
                "origin": pl.Date,
                "origin_index": pl.Int64,
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


def walk_forward_origins(
    dates: pl.Series | Sequence[dt.date] | np.ndarray,
    horizon_days: int,
    n_origins: int = 60,
    span: int = 1512,
    end_offset: int = 5,
    n_burn_in: int = 30,
) -> OriginPlan:
    """The protocol's origins on a trading-date index (see the module docstring for the rule)."""
    values = _as_dates(dates)
    if n_origins < 2:
        raise ValueError("n_origins must be >= 2")
    if span < n_origins:
        raise ValueError("span must be >= n_origins (at most one origin per row)")
    if end_offset < 0 or n_burn_in < 0 or horizon_days < 1:
        raise ValueError("end_offset and n_burn_in must be >= 0, horizon_days >= 1")
    last = len(values) - 1
    end = last - end_offset
    steps = np.arange(n_origins + n_burn_in - 1, -1, -1, dtype=np.int64)  # ascending in time
    offsets = (2 * (span - 1) * steps + (n_origins - 1)) // (2 * (n_origins - 1))
    index = end - offsets
    if index[0] < 0:
        raise ValueError(
            f"{len(values)} dates are too few for {n_burn_in} burn-in + {n_origins} origins "
            f"over {span} rows ending {end_offset} before the last (needs index {index[0]} >= 0)"
        )
    role = tuple(SCORED if m < n_origins else BURN_IN for m in steps)
    return OriginPlan(
        dates=tuple(values[i] for i in index),
        index=tuple(int(i) for i in index),
        role=role,
        target_known=tuple(bool(i + horizon_days <= last) for i in index),
        horizon_days=int(horizon_days),
        spacing_days=(span - 1) / (n_origins - 1),
        n_dates=len(values),
    )


def with_live_origin(plan: OriginPlan, last_date: dt.date) -> OriginPlan:
    """Append the last date of the index as a `live` origin (target unknown, never scored).

    Walk-forward, ensemble and zones then produce the user-facing forecast by exactly the same
    code path, and under the same embargo, as every evaluated origin.
    """
    last = plan.n_dates - 1
    if plan.index and plan.index[-1] == last:  # end_offset 0: the last origin becomes the live one
        return replace(plan, role=(*plan.role[:-1], LIVE))
    return replace(
        plan,
        dates=(*plan.dates, last_date),
        index=(*plan.index, last),
        role=(*plan.role, LIVE),
        target_known=(*plan.target_known, False),
    )
