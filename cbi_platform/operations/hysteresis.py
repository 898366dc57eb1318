"""Hysteresis for rate monitors: fire above one level, clear below a lower one, and keep an
episode open for a minimum number of judgements.

A monitor that compares a noisy rolling statistic with one threshold flaps: a rolling MAE ratio
hovering around 1.15 fires, clears and fires again as single outcomes enter and leave its
window (one planted degradation fired and resolved the accuracy alert 7 times). With two
levels and a minimum episode, an episode opens when the statistic crosses `fire`, stays open
while it sits between the levels, and clears only once it is back past `clear` after at least
`min_days` judgements.

The state is a pure function of the statistic's history: `states` replays the whole series
from its first value, so the daily monitor (which recomputes the series from stored data) and
the offline benchmark (which computes it for every day at once) agree by construction, and a
restart or a re-run of a day cannot change what the book is told.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Hysteresis:
    """`direction` "above": open when value > fire, clear when value < clear (clear <= fire).
    "below": open when value < fire, clear when value > clear (clear >= fire). `min_days`: an
    open episode is not cleared before it has been open this many judgements (1: the next
    judgement may clear it)."""

    fire: float
    clear: float
    min_days: int = 1
    direction: Literal["above", "below"] = "above"

    def __post_init__(self) -> None:
        if self.direction not in ("above", "below"):
            raise ValueError(f"Hysteresis.direction: {self.direction!r}; 'above' or 'below'")
        if self.min_days < 1:
            raise ValueError(f"Hysteresis.min_days: {self.min_days} < 1")
        wrong = self.clear > self.fire if self.direction == "above" else self.clear < self.fire
        if wrong:
            raise ValueError(
                f"Hysteresis: clear level {self.clear} lies beyond the fire level {self.fire} "
                f"({self.direction}); an episode could never clear"
            )

    def crosses_fire(self, value: float) -> bool:
        return value > self.fire if self.direction == "above" else value < self.fire

    def crosses_clear(self, value: float) -> bool:
        return value < self.clear if self.direction == "above" else value > self.clear


def states(values: Sequence[float] | np.ndarray, rule: Hysteresis, start_open: bool = False):
    """The open/closed state after each value (a bool array). A NaN or None value is "not
    judged": the state carries over and the day does not count toward `min_days`."""
    out = np.zeros(len(values), dtype=bool)
    is_open, held = start_open, 0
    for i, raw in enumerate(values):
        value = float("nan") if raw is None else float(raw)
        if math.isnan(value):
            out[i] = is_open
            continue
        if is_open:
            held += 1
            if held > rule.min_days and rule.crosses_clear(value):
                is_open, held = False, 0
        elif rule.crosses_fire(value):
            is_open, held = True, 1
        out[i] = is_open
    return out


def episodes(state: Sequence[bool] | np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of open states."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, on in enumerate(state):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(state) - 1))
    return runs
