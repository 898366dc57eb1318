"""The soak's day loop (issue 21): on each simulated business day, one daily refresh.

The soak sensor asks `soak_tick` with the clock's day and its cursor. The run key is the day
itself, so Dagster never launches a day twice, even when the daemon dies between the request
and the cursor's commit; the cursor only spares it asking again."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

SOAK_DAY_TAG = "cbi/soak_day"


def is_business_day(day: dt.date) -> bool:
    """Monday to Friday (the simulated market trades on weekdays)."""
    return day.weekday() < 5


@dataclass(frozen=True)
class SoakTick:
    day: dt.date
    run_key: str | None  # the day (ISO) to refresh, or None
    cursor: str
    reason: str

    @property
    def tags(self) -> dict[str, str]:
        return {SOAK_DAY_TAG: self.day.isoformat()}


def soak_tick(today: dt.date, cursor: str | None) -> SoakTick:
    """A refresh for `today` unless it is a weekend or was already requested (cursor: the last
    day requested, JSON). A clock set back never re-requests an earlier day."""
    last = json.loads(cursor)["last_requested"] if cursor else None
    last_day = dt.date.fromisoformat(last) if last else None
    keep = json.dumps({"last_requested": last})
    if not is_business_day(today):
        return SoakTick(today, None, keep, f"{today} is not a business day")
    if last_day is not None and today <= last_day:
        return SoakTick(today, None, keep, f"{today} already requested (last: {last_day})")
    return SoakTick(
        today,
        today.isoformat(),
        json.dumps({"last_requested": today.isoformat()}),
        f"refresh for {today}",
    )
