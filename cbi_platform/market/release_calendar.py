"""When a published statistic becomes usable: release rules that a plain business-day lag misses.

The CFTC releases Commitments of Traders on the Friday of the as-of week (15:30 ET, after the
CBOT close), later when a federal holiday or closure eats a processing day. A fixed lag of 4
business days from the as-of date is right for an ordinary Tuesday but a week's release too
early for the Monday as-of dates the CFTC uses in holiday weeks (Monday + 4 = that Friday, the
release day itself). See docs/manifest.md, "Release rules".
"""

from __future__ import annotations

import datetime as dt
from functools import cache

import polars as pl

RELEASE_RULES = ("cftc_weekly",)

# Federal offices closed by executive order or for a national day of mourning, beyond the
# statutory holidays below. Only ever makes a release later, never earlier.
EXTRA_FEDERAL_CLOSURES: tuple[dt.date, ...] = (
    dt.date(2001, 12, 24),
    dt.date(2003, 12, 26),
    dt.date(2004, 6, 11),  # President Reagan's funeral
    dt.date(2007, 1, 2),  # President Ford's funeral
    dt.date(2007, 12, 24),
    dt.date(2008, 12, 26),
    dt.date(2012, 12, 24),
    dt.date(2014, 12, 26),
    dt.date(2015, 12, 24),
    dt.date(2018, 12, 5),  # President G. H. W. Bush's funeral
    dt.date(2018, 12, 24),
    dt.date(2019, 12, 24),
    dt.date(2020, 12, 24),
    dt.date(2024, 12, 24),
    dt.date(2025, 1, 9),  # President Carter's funeral
    dt.date(2025, 12, 24),
    dt.date(2025, 12, 26),
)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The n-th `weekday` (Monday = 0) of a month; n = -1 is the last one."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: dt.date) -> dt.date:
    """A fixed-date holiday on Saturday is observed on Friday, on Sunday on Monday."""
    if day.weekday() == 5:
        return day - dt.timedelta(days=1)
    if day.weekday() == 6:
        return day + dt.timedelta(days=1)
    return day


@cache
def us_federal_holidays(first_year: int, last_year: int) -> tuple[dt.date, ...]:
    """Observed US federal holidays (5 U.S.C. 6103) plus EXTRA_FEDERAL_CLOSURES, sorted."""
    days: set[dt.date] = set(EXTRA_FEDERAL_CLOSURES)
    for year in range(first_year, last_year + 2):  # next New Year may be observed on Dec 31
        days.add(_observed(dt.date(year, 1, 1)))
        if year >= 1986:
            days.add(_nth_weekday(year, 1, 0, 3))  # Martin Luther King Jr. Day
        days.add(_nth_weekday(year, 2, 0, 3))  # Washington's Birthday
        days.add(_nth_weekday(year, 5, 0, -1))  # Memorial Day
        if year >= 2021:
            days.add(_observed(dt.date(year, 6, 19)))  # Juneteenth
        days.add(_observed(dt.date(year, 7, 4)))
        days.add(_nth_weekday(year, 9, 0, 1))  # Labor Day
        days.add(_nth_weekday(year, 10, 0, 2))  # Columbus Day
        days.add(_observed(dt.date(year, 11, 11)))  # Veterans Day
        days.add(_nth_weekday(year, 11, 3, 4))  # Thanksgiving
        days.add(_observed(dt.date(year, 12, 25)))
    return tuple(sorted(d for d in days if first_year <= d.year <= last_year))


def cftc_weekly_release(as_of: pl.Series) -> pl.DataFrame:
    """Release day and first usable day of COT reports with positions as of `as_of` (dates).

    release = the later of (a) the Friday of the as-of week, moved to the next federal business
    day when it is a holiday, and (b) three federal business days after the as-of day (the
    CFTC's processing time: Thanksgiving or a Wednesday-Friday holiday pushes the release to
    Monday). An as-of day that is itself a closure counts from the next business day. The
    report comes out at 15:30 ET, after the CBOT close, so `published_at` is the next weekday
    after the release (a federal holiday there is harmless: features join on the next trading
    day with published_at <= t). Lapses in appropriations (2013-10, 2018-12..2019-03) delayed
    releases by weeks and are not modelled (docs/manifest.md). As-of dates must be weekdays
    (the caller checks, naming the file and rows).
    """
    frame = pl.DataFrame({"as_of": as_of.cast(pl.Date)})
    if frame.height == 0 or frame["as_of"].null_count() == frame.height:
        return frame.with_columns(release=pl.col("as_of"), published_at=pl.col("as_of"))
    holidays = us_federal_holidays(frame["as_of"].min().year, frame["as_of"].max().year + 1)
    day = pl.col("as_of")
    friday = day + pl.duration(days=5 - day.dt.weekday().cast(pl.Int64))
    on_friday = friday.dt.add_business_days(0, holidays=holidays, roll="forward")
    processed = day.dt.add_business_days(3, holidays=holidays, roll="forward")
    frame = frame.with_columns(release=pl.max_horizontal(on_friday, processed))
    return frame.with_columns(published_at=pl.col("release").dt.add_business_days(1))
