"""The recorded Keras Tuner choices (models/neural_tuned.yaml), read as data.

A loader apart from the search (models/neural_tuning.py, fed by evaluation/tuning_data.py), so
the registry applies the record without importing the evaluation that produced it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

TUNED_PATH = Path(__file__).with_name("neural_tuned.yaml")


@cache
def tuned_table(path: str = str(TUNED_PATH)) -> dict[str, dict[str, dict[str, Any]]]:
    file = Path(path)
    if not file.is_file():
        return {}
    document = yaml.safe_load(file.read_text()) or {}
    return document.get("tuned") or {}


def tuned_params(family: str, horizon: str, path: str | None = None) -> dict[str, Any]:
    """The recorded hyperparameters of a network family at a horizon ({} when none)."""
    table = tuned_table(path or str(TUNED_PATH))
    return dict(table.get(family, {}).get(horizon, {}))
