"""What every model's SHAP hook shares: input checks, the additivity tolerance and its check.

Models explain themselves (`shap_values` for many rows, `contributions` for the forecast of the
last row), so `cbi_platform.explain` calls the hooks and never dispatches on model classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Method = Literal["auto", "tree_explainer", "native"]
METHODS: tuple[str, ...] = ("auto", "tree_explainer", "native")

# Additivity tolerance, relative to the size of the terms summed (|base| + sum |shap|): a
# prediction near zero makes a tolerance relative to the prediction itself meaningless.
ADDITIVITY_RTOL = 1e-6
# XGBoost predicts and attributes in float32 (eps 1.2e-7, summed over trees and features):
# measured errors reach ~6e-7 of the terms' size, so its runtime check allows 1e-5.
FLOAT32_ADDITIVITY_RTOL = 1e-5


class ShapAdditivityError(AssertionError):
    """base + sum(shap) does not reproduce the model's prediction."""


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use auto, tree_explainer or native")


def as_matrix(X: np.ndarray, feature_names: Sequence[str], model: Any) -> np.ndarray:
    """X as a float (n, p) matrix whose columns are the features the model was fitted on."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    if X.ndim != 2 or X.shape[1] != len(feature_names):
        raise ValueError(f"X has shape {X.shape}, expected (n, {len(feature_names)})")
    fitted = list(getattr(model, "feature_names", []) or [])
    if fitted and fitted != list(feature_names):
        raise ValueError(
            f"{model.spec.name}: feature names differ from the fit's "
            f"(first fitted: {fitted[:4]}, given: {list(feature_names)[:4]})"
        )
    return X


def additivity_error(values: np.ndarray, base: float, prediction: np.ndarray, rtol: float) -> float:
    """Largest |base + sum(shap) - prediction| in units of the allowed tolerance (> 1: fails)."""
    scale = np.abs(base) + np.abs(values).sum(axis=1)
    gap = np.abs(base + values.sum(axis=1) - prediction)
    return float(np.max(gap / (rtol * scale + 1e-15))) if gap.size else 0.0


def check_additivity(model: Any, X: np.ndarray, values: np.ndarray, base: float, how: str) -> None:
    """Raise ShapAdditivityError unless base + row sums reproduce model.predict(X), within the
    model's `additivity_rtol` (ADDITIVITY_RTOL by default)."""
    rtol = float(getattr(model, "additivity_rtol", ADDITIVITY_RTOL))
    prediction = np.asarray(model.predict(X, np.empty(0)), dtype=np.float64).reshape(-1)
    excess = additivity_error(values, base, prediction, rtol)
    if not excess <= 1.0:
        raise ShapAdditivityError(
            f"{model.spec.name}: {how} SHAP values miss the prediction by {excess:.3g}x the "
            f"tolerance (rtol {rtol:g} of |base| + sum|shap|)"
        )


def last_row_contributions(model: Any, X: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
    """[shap_1 .. shap_p, base] of the forecast for the last row of X, from the model's own
    `shap_values` (the native path: the numbers TreeExplainer returns, without its overhead)."""
    values, base = model.shap_values(np.asarray(X)[-1:], feature_names, method="native")
    return np.append(values[0], base)
