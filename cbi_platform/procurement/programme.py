"""The buying programme: how much, over which trading days, and what buying early costs.

A window is `window_days` consecutive trading days; its delivery date is its last day. Buying
on day d carries the oil until then: carry(d) = carry_cents_per_lb_month × (trading days
from d to the window's end) / 21 c/lb, so the last day carries nothing. The effective cost of
a schedule is its lb-weighted mean of price + carry (c/lb); dollars = c/lb × lb / 100.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cbi_platform.settings import HORIZON_KEYS, horizon_days

TRADING_DAYS_PER_MONTH = 21
DEFAULT_CONFIG = Path(__file__).with_name("procurement.yaml")


@dataclass(frozen=True)
class Programme:
    """What the buyer must buy in every window and what holding it early costs."""

    railcar_lb: float = 180_000.0
    railcars_per_window: int = 10
    window_days: int = 21
    carry_cents_per_lb_month: float = 0.25
    price_ceiling: float | None = None  # c/lb: no purchase above it except the forced last day
    min_daily_fraction: float = 0.0  # pace floor: at least this share of total_lb per day
    max_worst_shortfall_cents: float = 2.0  # the parameter-choice rule's worst-window limit

    def __post_init__(self) -> None:
        if self.railcar_lb <= 0 or self.railcars_per_window <= 0:
            raise ValueError("railcar_lb and railcars_per_window must be > 0")
        if self.window_days < 1:
            raise ValueError("window_days must be >= 1")
        if self.carry_cents_per_lb_month < 0:
            raise ValueError("carry_cents_per_lb_month must be >= 0")
        if not 0.0 <= self.min_daily_fraction <= 1.0:
            raise ValueError("min_daily_fraction must be in [0, 1]")

    @property
    def total_lb(self) -> float:
        return float(self.railcar_lb * self.railcars_per_window)

    def carry(self, days_to_end: int | np.ndarray) -> float | np.ndarray:
        """Carry (c/lb) of a purchase `days_to_end` trading days before the window's end."""
        return self.carry_cents_per_lb_month * np.asarray(days_to_end) / TRADING_DAYS_PER_MONTH

    def dollars(self, cents_per_lb: float, lb: float | None = None) -> float:
        """Dollars of a c/lb figure over `lb` (default: the whole window's programme)."""
        return float(cents_per_lb) * (self.total_lb if lb is None else lb) / 100.0


@dataclass(frozen=True)
class BuyingWindow:
    """Trading days [first, last]; delivery on `last`."""

    first: dt.date
    last: dt.date


def buying_windows(
    dates: Sequence[dt.date],
    window_days: int,
    step: int,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> list[BuyingWindow]:
    """Every window of `window_days` consecutive trading days (from `dates`, sorted) that
    starts every `step` trading days from the first date >= `start` and ends <= `end`."""
    if window_days < 1 or step < 1:
        raise ValueError("window_days and step must be >= 1")
    days = sorted(d for d in dates if (start is None or d >= start) and (end is None or d <= end))
    return [
        BuyingWindow(days[i], days[i + window_days - 1])
        for i in range(0, len(days) - window_days + 1, step)
    ]


def effective_cost(buys_lb: np.ndarray, prices: np.ndarray, carry: np.ndarray) -> float:
    """Σ lb × (price + carry) / Σ lb, in c/lb."""
    buys_lb = np.asarray(buys_lb, dtype=float)
    total = buys_lb.sum()
    if total <= 0:
        raise ValueError("a schedule that buys nothing has no effective cost")
    return float(buys_lb @ (np.asarray(prices, float) + np.asarray(carry, float)) / total)


@dataclass(frozen=True)
class BacktestSettings:
    """How windows are laid out and how results are judged (procurement.yaml `backtest:`)."""

    window_step: int = 21
    bootstrap_resamples: int = 2000
    confidence: float = 0.90
    seed: int = 20240613
    alarm_capture_share: float = 0.5
    alarm_relative_mae: float = 0.5
    alarm_min_windows: int = 20
    alarm_min_rows: int = 30


@dataclass(frozen=True)
class PipelineSettings:
    """What the pipeline and the daily refresh do (procurement.yaml `pipeline:`)."""

    # The decision forecasts the policies read: a choice among the horizons, not their list.
    horizons: tuple[str, ...] = HORIZON_KEYS[:3]  # 1w, 1m, 3m
    series_from: str = "scored"  # the daily series starts at this window's first origin
    recommend: str = "cvar"  # the policy whose decision the buyer is shown
    quality_windows: int = 6  # decision-quality drift: completed windows in the rolling mean
    quality_threshold_cents: float = 0.5  # fires when dearer than even by more than this

    def __post_init__(self) -> None:
        object.__setattr__(self, "horizons", tuple(self.horizons))
        for horizon in self.horizons:
            horizon_days(horizon)  # an unknown horizon fails here, naming the valid ones
        if self.series_from not in ("calibration", "development", "scored"):
            raise ValueError(f"pipeline.series_from: unknown window {self.series_from!r}")
        if self.quality_windows < 1:
            raise ValueError("pipeline.quality_windows must be >= 1")


@dataclass(frozen=True)
class ProcurementConfig:
    """procurement.yaml as objects: the programme, the policies as data, the tuning grid."""

    programme: Programme
    policies: list[dict[str, Any]]
    grid: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    backtest: BacktestSettings = field(default_factory=BacktestSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)

    def policy(self, name: str) -> dict[str, Any]:
        for entry in self.policies:
            if entry["name"] == name:
                return entry
        raise ValueError(f"no policy named {name!r} in procurement.yaml ({self.names()})")

    def names(self) -> list[str]:
        return [e["name"] for e in self.policies]


def _only_known(cls: type, raw: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    return raw


def load_config(path: str | Path | None = None) -> ProcurementConfig:
    """Read procurement.yaml (the packaged one by default); unknown keys are refused."""
    raw = yaml.safe_load(Path(path or DEFAULT_CONFIG).read_text()) or {}
    programme = Programme(**_only_known(Programme, raw.get("programme") or {}, "programme"))
    settings = BacktestSettings(
        **_only_known(BacktestSettings, raw.get("backtest") or {}, "backtest")
    )
    policies = list(raw.get("policies") or [])
    for entry in policies:
        missing = {"name", "kind"} - set(entry)
        if missing:
            raise ValueError(f"policy entry {entry} lacks {sorted(missing)}")
    names = [e["name"] for e in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"policy names must be unique: {names}")
    grid = {str(k): dict(v or {}) for k, v in (raw.get("grid") or {}).items()}
    pipeline = PipelineSettings(
        **_only_known(PipelineSettings, raw.get("pipeline") or {}, "pipeline")
    )
    config = ProcurementConfig(programme, policies, grid, settings, pipeline)
    config.policy(pipeline.recommend)  # the recommended policy must be listed
    unknown = sorted(set(raw) - {"programme", "backtest", "policies", "grid", "pipeline"})
    if unknown:
        raise ValueError(f"procurement.yaml: unknown section(s) {unknown}")
    return config


def load_programme(path: str | Path | None = None) -> Programme:
    return load_config(path).programme
