"""What day it is: the real calendar, or a simulated one read from a file (the soak, issue 21).

Every code path that decides "what day is it" asks `today()` / `now()` here. Unset,
`CBI_CLOCK_FILE` leaves the real calendar; set, the file holds an ISO date that is re-read on
every call, so a long-lived process (code server, daemon, API) follows the clock as a driver
advances it. `CBI_DATA_CLOCK_FILE` (optional) holds the day the market feed has delivered data
through, so a soak can hold the feed (an outage) while the calendar moves on; unset, data
arrives through the calendar day. Wall-clock timestamps (created_at, logged_at) are not dates
of the business calendar and stay real.

It sits in the bottom layer (beside settings) because the market sources below `operations`
read it too.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path

CLOCK_ENV = "CBI_CLOCK_FILE"
DATA_CLOCK_ENV = "CBI_DATA_CLOCK_FILE"


class ClockError(ValueError):
    """A clock file that cannot be read as one ISO date; the message names the file."""


def read_clock_file(path: str | Path) -> dt.date:
    """The ISO date in `path` (surrounding whitespace ignored)."""
    path = Path(path)
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ClockError(f"clock file {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ClockError(
            f"clock file {path}: {text[:40]!r} is not an ISO date (YYYY-MM-DD)"
        ) from None


def write_clock_file(path: str | Path, day: dt.date) -> None:
    """Set the clock: written beside and renamed over, so a reader never sees half a date."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(day.isoformat() + "\n")
    os.replace(partial, path)


def simulated(env: Mapping[str, str] | None = None) -> bool:
    """Whether the calendar is simulated (`CBI_CLOCK_FILE` is set)."""
    env = os.environ if env is None else env
    return bool(env.get(CLOCK_ENV))


def today(env: Mapping[str, str] | None = None) -> dt.date:
    """The simulated date when `CBI_CLOCK_FILE` is set (read now), else the real date."""
    env = os.environ if env is None else env
    path = env.get(CLOCK_ENV)
    return read_clock_file(path) if path else dt.date.today()


def now(tz: dt.tzinfo | None = None, env: Mapping[str, str] | None = None) -> dt.datetime:
    """The real time of day on the simulated date when the clock is simulated, else the real
    now (in `tz` when given, as `datetime.now(tz)`)."""
    real = dt.datetime.now(tz)
    env = os.environ if env is None else env
    path = env.get(CLOCK_ENV)
    if not path:
        return real
    return dt.datetime.combine(read_clock_file(path), real.timetz())


def data_through(env: Mapping[str, str] | None = None) -> dt.date:
    """The last day the market feed has delivered: `CBI_DATA_CLOCK_FILE`'s date, never after
    `today()` (a feed cannot deliver the future); `today()` when it is unset or names no file
    (a soak holds the feed by writing the file and releases it by removing it)."""
    env = os.environ if env is None else env
    day = today(env)
    path = env.get(DATA_CLOCK_ENV)
    if not path or not Path(path).exists():
        return day
    return min(read_clock_file(path), day)


SENSOR_INTERVAL_ENV = "CBI_SENSOR_INTERVAL_SECONDS"
SIMULATED_SENSOR_INTERVAL = 5


def sensor_interval_seconds(default: int, env: Mapping[str, str] | None = None) -> int:
    """The minimum interval of the operations sensors (alerts, digest, retraining):
    `CBI_SENSOR_INTERVAL_SECONDS` when set, else 5 s under the simulated clock (a simulated day
    lasts seconds: a sensor ticking every minute would never see a condition that fires and
    clears within it), else `default`."""
    env = os.environ if env is None else env
    text = env.get(SENSOR_INTERVAL_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{SENSOR_INTERVAL_ENV}={text!r} is not a whole number") from None
        if value < 1:
            raise ValueError(f"{SENSOR_INTERVAL_ENV}={text!r}: at least 1 second")
        return value
    return SIMULATED_SENSOR_INTERVAL if simulated(env) else default
