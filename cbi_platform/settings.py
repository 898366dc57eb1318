"""Platform settings without Dagster: horizons, regimes, names, home paths, the protocol.

Everything here is plain data. `cbi_platform/defs/resources.py` turns it into Dagster
resources; the CLI, benchmarks and plain modules read it directly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

# A horizon is a plain `str` ("1m") in frames, partition keys and JSON; this alias types it.
# (Not an Enum: polars reads enum members as its own Enum dtype, not as text.)
Horizon = Literal["1w", "1m", "3m", "6m", "12m"]
HORIZON_KEYS: tuple[Horizon, ...] = get_args(Horizon)  # in order, shortest first
# The one table of horizons: key -> (trading days after the origin, the words the page shows).
_HORIZON_TABLE: dict[str, tuple[int, str]] = {
    "1w": (5, "1 week"),
    "1m": (21, "1 month"),
    "3m": (63, "3 months"),
    "6m": (126, "6 months"),
    "12m": (252, "12 months"),
}
if tuple(_HORIZON_TABLE) != HORIZON_KEYS:
    raise RuntimeError("settings: the horizon table and the Horizon type list different keys")
HORIZONS: dict[str, int] = {h: days for h, (days, _) in _HORIZON_TABLE.items()}
HORIZON_NAMES: dict[str, str] = {h: name for h, (_, name) in _HORIZON_TABLE.items()}


def horizon_days(horizon: str) -> int:
    """Trading days after the origin; an unknown horizon is an error that names the valid ones."""
    try:
        return HORIZONS[horizon]
    except KeyError:
        raise ValueError(f"horizon {horizon!r} is not one of {list(HORIZON_KEYS)}") from None


def horizon_name(horizon: str) -> str:
    """The horizon in words ("1 month"), as the buyer's page shows it."""
    horizon_days(horizon)  # the same error for an unknown horizon
    return HORIZON_NAMES[horizon]


def horizon_order(horizon: str) -> int:
    """Sort key: shortest horizon first, an unknown one last."""
    return HORIZON_KEYS.index(horizon) if horizon in HORIZONS else len(HORIZON_KEYS)


DETECTED_REGIMES = ("crisis", "bull", "bear", "normal")  # never the hindsight calendar's
RANDOM_WALK = "random_walk"
ENSEMBLE = "ensemble"

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO_ROOT / ".cbi_home"
PROTOCOL_PATH = Path(__file__).with_name("protocol.yaml")


def home_path(env: Mapping[str, str] | None = None) -> Path:
    """The platform home folder: $CBI_HOME, else `.cbi_home/` in the repository."""
    env = os.environ if env is None else env
    return Path(env.get("CBI_HOME", str(DEFAULT_HOME))).resolve()


@dataclass(frozen=True)
class WindowCounts:
    """How many grid origins each window holds on one date index (after the short-history rule)."""

    n_calibration: int
    n_development: int
    n_scored: int
    scale: float  # 1.0 when the history is long enough
    notice: str | None  # set when the windows were scaled down


@dataclass(frozen=True)
class Protocol:
    """The walk-forward protocol (see protocol.yaml for where each value was chosen)."""

    anchor: dt.date = dt.date(2024, 6, 13)
    span: int = 1512
    n_scored: int = 60
    end_offset: int = 5
    n_development: int = 60
    n_calibration: int = 40
    min_first_origin_row: int = 756
    min_history: int = 30
    zone_method: str = "history_vol"

    def __post_init__(self) -> None:
        if self.n_scored < 2 or self.span < self.n_scored:
            raise ValueError("protocol: need n_scored >= 2 and span >= n_scored")
        if min(self.n_development, self.n_calibration, self.end_offset) < 0:
            raise ValueError("protocol: window counts and end_offset must be >= 0")

    @property
    def step(self) -> Fraction:
        """Trading days between grid origins: (span - 1) / (n_scored - 1), exact."""
        return Fraction(self.span - 1, self.n_scored - 1)

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in _fields(self)}

    def hash(self) -> str:
        """First 12 hex digits of the SHA-256 of the protocol's canonical JSON."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> Protocol:
        return dataclasses.replace(self, **changes)

    def window_counts(self, n_grid_origins: int) -> WindowCounts:
        """The short-history rule, one rule for every window.

        With G grid origins available after the warm-up and N = calibration + development +
        scored wanted, a history with G >= N keeps the protocol's counts. Otherwise every
        window shrinks by the same factor f = G / N: scored = floor(f * n_scored), development
        = floor(f * n_development), calibration = the rest. Fewer than 4 scored or development
        origins is refused: the data is too short for any honest number.
        """
        wanted = self.n_calibration + self.n_development + self.n_scored
        if n_grid_origins >= wanted:
            return WindowCounts(self.n_calibration, self.n_development, self.n_scored, 1.0, None)
        factor = n_grid_origins / wanted
        scored = int(factor * self.n_scored)
        development = int(factor * self.n_development)
        calibration = n_grid_origins - scored - development
        if min(scored, development) < 4:
            raise ValueError(
                f"the history holds {n_grid_origins} grid origins after the "
                f"{self.min_first_origin_row}-row warm-up, too few for the protocol "
                f"({wanted} wanted, at least 4 scored and 4 development): supply a longer history"
            )
        notice = (
            f"short history: {n_grid_origins} grid origins after the "
            f"{self.min_first_origin_row}-row warm-up, fewer than the protocol's {wanted}; every "
            f"window scaled by {factor:.2f} to {calibration} calibration / {development} "
            f"development / {scored} scored origins (same grid, same spacing)"
        )
        return WindowCounts(calibration, development, scored, factor, notice)


def _fields(protocol: Protocol):
    for f in dataclasses.fields(protocol):
        yield f.name, getattr(protocol, f.name)


def load_protocol(path: str | Path | None = None, **overrides: Any) -> Protocol:
    """The protocol from YAML (default: cbi_platform/protocol.yaml), then `overrides`."""
    path = Path(path) if path is not None else PROTOCOL_PATH
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ValueError(f"protocol file {path} not found") from exc
    try:
        grid, windows = raw["grid"], raw["windows"]
        values: dict[str, Any] = {
            "anchor": _as_date(grid["anchor"]),
            "span": int(grid["span"]),
            "n_scored": int(grid["n_scored"]),
            "end_offset": int(grid["end_offset"]),
            "n_development": int(windows["n_development"]),
            "n_calibration": int(windows["n_calibration"]),
            "min_first_origin_row": int(windows["min_first_origin_row"]),
            "min_history": int(raw["ensemble"]["min_history"]),
            "zone_method": str(raw["zones"]["method"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: protocol is missing or has a bad field ({exc})") from exc
    unknown = set(overrides) - set(values)
    if unknown:
        raise ValueError(f"unknown protocol setting(s) {sorted(unknown)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values["anchor"], str):
        values["anchor"] = _as_date(values["anchor"])
    return Protocol(**values)


def _as_date(value: object) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
