"""The operating thresholds (`monitoring.yaml`, or the file in CBI_MONITORING), as settings."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cbi_platform.conditions import RETRAIN_KINDS
from cbi_platform.operations.correlation import CorrelationSettings
from cbi_platform.operations.drift import DriftSettings
from cbi_platform.operations.validation import ValidationSettings

DEFAULT_FILE = Path(__file__).with_name("monitoring.yaml")


@dataclass(frozen=True)
class RefreshSettings:
    cron: str = "30 14 * * 1-5"
    timezone: str = "America/Chicago"
    max_business_days_behind: int = 2


@dataclass(frozen=True)
class RetrainingSettings:
    cooldown_business_days: int = 10
    kinds: tuple[str, ...] = RETRAIN_KINDS

    def __post_init__(self) -> None:
        not_evidence = sorted(set(self.kinds) - set(RETRAIN_KINDS))
        if not_evidence:
            raise ValueError(
                f"retraining.kinds: {not_evidence} cannot request a retrain; only "
                f"{list(RETRAIN_KINDS)} (drift and correlation breaks inform the engineer)"
            )


@dataclass(frozen=True)
class ShadowSettings:
    min_outcomes: int = 20
    margin: float = 0.10
    dm_alpha: float = 0.10
    auto_promote: bool = True


@dataclass(frozen=True)
class MonitoringConfig:
    refresh: RefreshSettings = field(default_factory=RefreshSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    correlation: CorrelationSettings = field(default_factory=CorrelationSettings)
    retraining: RetrainingSettings = field(default_factory=RetrainingSettings)
    shadow: ShadowSettings = field(default_factory=ShadowSettings)


def _section(cls, values: dict[str, Any] | None, where: str):
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)


def load_monitoring(path: str | Path | None = None) -> MonitoringConfig:
    path = Path(path) if path else DEFAULT_FILE
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"monitoring settings {path}: {exc}") from exc
    sections = {f.name: f.type for f in fields(MonitoringConfig)}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; known: {sorted(sections)}")
    classes = {
        "refresh": RefreshSettings,
        "validation": ValidationSettings,
        "drift": DriftSettings,
        "correlation": CorrelationSettings,
        "retraining": RetrainingSettings,
        "shadow": ShadowSettings,
    }
    return MonitoringConfig(
        **{name: _section(cls, raw.get(name), f"{path}: {name}") for name, cls in classes.items()}
    )
