"""The regime calendar: named date windows with sample weights, hindsight unless read in time.

It is read from one YAML file and used only to weight training rows and to export per-regime
datasets. Nothing that a forecast or a metric depends on may read it. `label` is the hindsight
view (exports). Training weights come from `weights_at` / `PointInTimeWeights`: at origin t a
window counts only if its `known_from` <= t, and only up to t; a window without `known_from`
gives no weight. Weights at t therefore never depend on anything the calendar says after t.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import yaml

DEFAULT_CALENDAR_PATH = Path(__file__).with_name("regime_calendar.yaml")


@dataclass(frozen=True)
class RegimeWindow:
    name: str
    start: dt.date
    end: dt.date
    weight: float
    known_from: dt.date | None = None  # first date the window could have been known
    source: str | None = None  # the public event behind known_from


@dataclass(frozen=True)
class RegimeCalendar:
    windows: tuple[RegimeWindow, ...]
    default_name: str
    default_weight: float

    @property
    def regime_names(self) -> list[str]:
        names = [self.default_name] + [w.name for w in self.windows]
        return list(dict.fromkeys(names))

    def label(self, dates: pl.Series) -> pl.DataFrame:
        """Calendar regime name and sample weight for each date (inclusive windows)."""
        name = pl.lit(self.default_name)
        weight = pl.lit(float(self.default_weight))
        for w in self.windows:
            inside = pl.col("date").is_between(w.start, w.end, closed="both")
            name = pl.when(inside).then(pl.lit(w.name)).otherwise(name)
            weight = pl.when(inside).then(pl.lit(float(w.weight))).otherwise(weight)
        frame = pl.DataFrame({"date": dates.cast(pl.Date)})
        return frame.with_columns(
            calendar_regime=name.cast(pl.Utf8), regime_weight=weight.cast(pl.Float64)
        )

    def weights_at(self, dates: pl.Series | np.ndarray, origin: dt.date) -> np.ndarray:
        """Training weight of each date as known at `origin` (point in time).

        Only windows with `known_from` <= origin count, each clipped to end at the origin;
        every other date gets the default weight.
        """
        days = _day_numbers(dates)
        out = np.full(days.shape, float(self.default_weight))
        t = _day(origin)
        for w in self.windows:
            if w.known_from is None or _day(w.known_from) > t:
                continue
            inside = (days >= _day(w.start)) & (days <= min(_day(w.end), t))
            out[inside] = float(w.weight)
        return out


class PointInTimeWeights:
    """Per-origin training weights for the walk-forward engine: `weights(origin_day)` returns
    one weight per row of the frame the engine was given (rows in the frame's order).

    Picklable (plain arrays and the calendar), so it travels to worker processes.
    """

    def __init__(self, calendar: RegimeCalendar, frame_dates: pl.Series | np.ndarray):
        self.calendar = calendar
        self.days = _day_numbers(frame_dates)

    def __call__(self, origin_day: int) -> np.ndarray:
        origin = dt.date(1970, 1, 1) + dt.timedelta(days=int(origin_day))
        return self.calendar.weights_at(self.days, origin)


def _day(value: dt.date) -> int:
    return (value - dt.date(1970, 1, 1)).days


def _day_numbers(dates: pl.Series | np.ndarray) -> np.ndarray:
    if isinstance(dates, pl.Series):
        return dates.cast(pl.Date).cast(pl.Int64).to_numpy()
    values = np.asarray(dates)
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    return values.astype("datetime64[D]").astype(np.int64)


def load_regime_calendar(path: str | Path = DEFAULT_CALENDAR_PATH) -> RegimeCalendar:
    """Parse and validate the calendar; windows must not overlap and weights must be positive."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text())
    try:
        default = raw["default"]
        windows = tuple(
            RegimeWindow(
                name=str(w["name"]),
                start=_as_date(w["start"]),
                end=_as_date(w["end"]),
                weight=float(w["weight"]),
                known_from=_as_date(w["known_from"]) if w.get("known_from") else None,
                source=str(w["source"]) if w.get("source") else None,
            )
            for w in raw["windows"]
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: regime calendar is missing field {exc}") from exc
    for w in windows:
        if w.end < w.start:
            raise ValueError(f"{path}: window {w.name} ends ({w.end}) before it starts ({w.start})")
        if w.weight <= 0:
            raise ValueError(f"{path}: window {w.name} has non-positive weight {w.weight}")
        if w.known_from is not None and not w.source:
            raise ValueError(
                f"{path}: window {w.name} ({w.start}) states known_from {w.known_from} without "
                "a source: cite the event that made it knowable"
            )
    ordered = sorted(windows, key=lambda w: w.start)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.start <= a.end:
            raise ValueError(
                f"{path}: windows {a.name} and {b.name} overlap ({b.start} <= {a.end})"
            )
    return RegimeCalendar(windows, str(default["name"]), float(default["weight"]))


def _as_date(value: object) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
