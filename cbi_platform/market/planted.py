"""Planted data faults for the soak: the simulated feed delivers a bad day, or revises a past one.

`CBI_PLANTED_DATA` names a JSON file the soak's driver writes (and removes when the fault is
over); when it is absent or empty the feed is untouched. It holds a list of faults:

    [{"kind": "negative_price", "day": "2025-07-14"}, ...]

Each applies to the delivery while the feed's day (`as_of`, the data clock) equals `day`:
- `negative_price`: the target's close on `day` is delivered as its negative;
- `duplicate_date`: the target's row for `day` is delivered twice, the copy 1% higher;
- `missing_column`: the delivery lacks `published_at`;
- `late_revision`: from `day` on (not only that day), the target's close of `revised` (an
  earlier date) is delivered `factor` times its first value, published on `day` — a vendor's
  correction of a past day.

The first three must be refused by `market_prices`' validation with a message naming the
column and rows, the run failing and every earlier materialization intact; a revision is data,
not an error, and must flow through without duplicating or losing a row anywhere.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

PLANTED_DATA_ENV = "CBI_PLANTED_DATA"
KINDS = ("negative_price", "duplicate_date", "missing_column", "late_revision")


class PlantedDataError(ValueError):
    """A planted-fault file that cannot be read; the message names the file and the entry."""


@dataclass(frozen=True)
class PlantedFault:
    kind: str
    day: dt.date
    revised: dt.date | None = None
    factor: float = 1.0

    def active(self, as_of: dt.date) -> bool:
        return as_of >= self.day if self.kind == "late_revision" else as_of == self.day


def read_planted(path: str | Path) -> list[PlantedFault]:
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text().strip()
    if not text:
        return []
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlantedDataError(f"planted data file {path}: not JSON ({exc})") from None
    faults = []
    for i, entry in enumerate(entries):
        try:
            kind = entry["kind"]
            if kind not in KINDS:
                raise ValueError(f"kind {kind!r} is not one of {KINDS}")
            revised = entry.get("revised")
            if kind == "late_revision" and revised is None:
                raise ValueError("late_revision needs 'revised' (the past date it corrects)")
            faults.append(
                PlantedFault(
                    kind=kind,
                    day=dt.date.fromisoformat(entry["day"]),
                    revised=dt.date.fromisoformat(revised) if revised else None,
                    factor=float(entry.get("factor", 1.0)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlantedDataError(f"planted data file {path}: entry {i}: {exc}") from None
    return faults


def plant(prices: pl.DataFrame, target: str, as_of: dt.date, faults: list[PlantedFault]):
    """`prices` as the faulty feed would deliver them on `as_of`."""
    for fault in faults:
        if not fault.active(as_of):
            continue
        on_day = (pl.col("symbol") == target) & (pl.col("date") == fault.day)
        if fault.kind == "negative_price":
            prices = prices.with_columns(
                pl.when(on_day).then(-pl.col("value").abs()).otherwise(pl.col("value"))
            )
        elif fault.kind == "duplicate_date":
            copy = prices.filter(on_day).with_columns(pl.col("value") * 1.01)
            prices = pl.concat([prices, copy])
        elif fault.kind == "missing_column":
            prices = prices.drop("published_at")
        else:
            past = (pl.col("symbol") == target) & (pl.col("date") == fault.revised)
            prices = prices.with_columns(
                pl.when(past).then(pl.col("value") * fault.factor).otherwise(pl.col("value")),
                pl.when(past)
                .then(pl.lit(fault.day))
                .otherwise(pl.col("published_at"))
                .alias("published_at"),
            )
    return prices


def planted_faults(env: Mapping[str, str] | None = None) -> list[PlantedFault]:
    env = os.environ if env is None else env
    path = env.get(PLANTED_DATA_ENV)
    return read_planted(path) if path else []
