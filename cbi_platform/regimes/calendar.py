"""The regime calendar (hindsight): named date windows with sample weights.

It is read from one YAML file and used only to weight training rows and to export per-regime
datasets. Nothing that a forecast or a metric depends on may read it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

DEFAULT_CALENDAR_PATH = Path(__file__).with_name("regime_calendar.yaml")


@dataclass(frozen=True)
class RegimeWindow:
    name: str
    start: dt.date
    end: dt.date
    weight: float


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
    ordered = sorted(windows, key=lambda w: w.start)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.start <= a.end:
            raise ValueError(
                f"{path}: windows {a.name} and {b.name} overlap ({b.start} <= {a.end})"
            )
    return RegimeCalendar(windows, str(default["name"]), float(default["weight"]))


def _as_date(value: object) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
