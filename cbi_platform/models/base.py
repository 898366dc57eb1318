"""The one protocol every model follows.

Every model forecasts the h-day log return of the target from an origin; the price level the
user sees is `price * exp(forecast)`. Feature models use `X`; statistical models use the
target's close history up to the origin (`prices`). Both receive both, and ignore what they
do not need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    """A model is a name, a family and parameters; the registry of specs is data (specs.yaml)."""

    name: str  # unique across the zoo, e.g. "lgbm_dart_a_weighted"
    family: str  # key into the family registry, e.g. "lightgbm", "arima", "random_walk"
    kind: str  # "benchmark" | "statistical" | "tree" | "sanity" | "specialist" | "volatility"
    params: dict[str, Any] = field(default_factory=dict)
    weighted: bool = False  # train with regime-calendar sample weights
    refit_every: int = 1  # refit at every k-th walk-forward origin (recorded schedule)
    regime: str | None = None  # for specialists: the detected regime it is trained on


@dataclass
class FitData:
    """What a model sees at one origin: only rows whose target date is <= the origin."""

    X: np.ndarray  # (n, p) features
    y: np.ndarray  # (n,) h-day log return targets
    prices: np.ndarray  # target close history up to and including the origin
    horizon_days: int
    feature_names: list[str]
    sample_weight: np.ndarray | None = None
    # Sequence models only: every feature row up to and including the origin (features at a
    # date are known at that date), and the position in `history` of each training row
    # (aligned with X and y). A sequence model builds each training row's window from them.
    history: np.ndarray | None = None
    train_rows: np.ndarray | None = None


@runtime_checkable
class Model(Protocol):
    spec: ModelSpec

    def fit(self, data: FitData) -> Model: ...

    def predict(self, X: np.ndarray, prices: np.ndarray) -> np.ndarray:
        """Forecast h-day log returns for the rows of X; `prices` ends at the last origin.

        A sequence model (attribute `lookback` > 1) reads X as consecutive rows, oldest first,
        and forecasts each row from the `lookback` rows ending at it; callers pass the last
        `lookback` rows up to the origin and keep the last forecast (`model_input`).
        """
        ...


MAX_LOOKBACK = 256  # the longest input window a sequence model may read (rows)


def lookback(model: object) -> int:
    """Rows of feature history a model reads per forecast (1 for row models)."""
    return max(1, int(getattr(model, "lookback", 1)))


def model_input(model: object, X: np.ndarray, row: int) -> np.ndarray:
    """The rows of X a model needs to forecast row `row`: that row, or for a sequence model
    the `lookback` rows ending at it (fewer at the start of the data)."""
    return X[max(0, row - lookback(model) + 1) : row + 1]
