"""sentiment.yaml: which horizons' features include news sentiment (decided by the ablation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from cbi_platform.settings import HORIZONS

SENTIMENT_CONFIG_PATH = Path(__file__).with_name("sentiment.yaml")


@dataclass(frozen=True)
class SentimentSettings:
    use_in_features: dict[str, bool]

    @property
    def enabled_horizons(self) -> tuple[str, ...]:
        return tuple(h for h in HORIZONS if self.use_in_features.get(h, False))

    def uses(self, horizon: str) -> bool:
        return self.use_in_features.get(horizon, False)


def load_sentiment_settings(path: str | Path | None = None) -> SentimentSettings:
    """Read and check the flags; a horizon the file does not name is off."""
    path = Path(path) if path is not None else SENTIMENT_CONFIG_PATH
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    flags = raw.get("use_in_features") if isinstance(raw, dict) else None
    if not isinstance(flags, dict):
        raise ValueError(f"{path}: expected 'use_in_features: {{1w: false, ...}}'")
    unknown = sorted(set(map(str, flags)) - set(HORIZONS))
    if unknown:
        raise ValueError(f"{path}: unknown horizon(s) {unknown}; known {list(HORIZONS)}")
    not_bool = sorted(str(h) for h, v in flags.items() if not isinstance(v, bool))
    if not_bool:
        raise ValueError(f"{path}: use_in_features values must be true/false ({not_bool})")
    return SentimentSettings({str(h): bool(v) for h, v in flags.items()})
