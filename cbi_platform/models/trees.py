"""Gradient-boosted trees: LightGBM (dart or gbdt via params) and XGBoost (booster dart).

NaN features go to the libraries' native missing-value handling. Trees are grown for a fixed
number of rounds: early stopping would need a validation split that leaks unless embargoed.
Every fit runs on one thread, set here rather than trusted to the environment. `.booster` is
the library booster, ready for shap.TreeExplainer.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np
import xgboost as xgb

from cbi_platform.models.attribution import (
    ADDITIVITY_RTOL,
    FLOAT32_ADDITIVITY_RTOL,
    Method,
    ShapAdditivityError,
    as_matrix,
    check_additivity,
    check_method,
    last_row_contributions,
)
from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.baselines import single_thread, training_weights

_LGBM_THREAD_KEYS = ("num_threads", "num_thread", "nthread", "nthreads", "n_jobs")
_XGB_THREAD_KEYS = ("nthread", "n_jobs")


def monotone_signs(spec: ModelSpec) -> dict[str, int]:
    """The spec's `monotone: {feature: +1/-1}` option, validated (empty when absent)."""
    raw = spec.params.get("monotone") or {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{spec.name}: monotone must be a mapping feature -> +1/-1, got {raw!r}")
    signs: dict[str, int] = {}
    for feature, sign in raw.items():
        if sign not in (1, -1) or isinstance(sign, bool):
            raise ValueError(f"{spec.name}: monotone sign for {feature!r} must be +1 or -1")
        signs[str(feature)] = int(sign)
    return signs


def monotone_constraints(spec: ModelSpec, feature_names: list[str]) -> list[int] | None:
    """Map the spec's monotone option onto one constraint per feature column, by name."""
    signs = monotone_signs(spec)
    if not signs:
        return None
    unknown = sorted(set(signs) - set(feature_names))
    if unknown:
        raise ValueError(
            f"{spec.name}: monotone constraint on unknown feature(s) {unknown}; "
            f"the fit has {len(feature_names)} features: {feature_names[:8]}"
            + (" ..." if len(feature_names) > 8 else "")
        )
    return [signs.get(name, 0) for name in feature_names]


def _checked_training_arrays(spec: ModelSpec, data: FitData) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(data.X, dtype=np.float64)
    y = np.asarray(data.y, dtype=np.float64).reshape(-1)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"{spec.name}: X {X.shape} does not match y {y.shape}")
    if X.shape[1] != len(data.feature_names):
        raise ValueError(f"{spec.name}: {X.shape[1]} columns, {len(data.feature_names)} names")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{spec.name}: training targets must be finite")
    if X.shape[0] == 0:
        raise ValueError(f"{spec.name}: no training rows")
    return X, y


class _TreeModel:
    """Shared fit bookkeeping; subclasses train and predict with their library."""

    default_n_estimators = 100
    additivity_rtol = ADDITIVITY_RTOL

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        params = dict(spec.params)
        self.n_estimators = int(params.pop("n_estimators", self.default_n_estimators))
        if self.n_estimators < 1:
            raise ValueError(f"{spec.name}: n_estimators must be >= 1")
        monotone_signs(spec)  # fail at build time on a malformed option
        params.pop("monotone", None)
        for key in ("early_stopping_round", "early_stopping_rounds", "early_stopping"):
            if key in params:
                raise ValueError(f"{spec.name}: early stopping is not allowed (leaks); drop {key}")
        self.library_params = params
        self.feature_names: list[str] = []
        self.fallback_reason: str | None = None
        self._booster: Any = None

    @property
    def booster(self) -> Any:
        if self._booster is None:
            raise RuntimeError(f"{self.spec.name}: not fitted")
        return self._booster

    def shap_values(
        self, X: np.ndarray, feature_names: list[str], method: Method = "auto"
    ) -> tuple[np.ndarray, float]:
        """TreeSHAP values (n_rows x n_features) and the base value, additivity checked.

        `method="auto"` runs shap.TreeExplainer on the booster and falls back (with a warning)
        to the library's native TreeSHAP if additivity fails; "tree_explainer" and "native"
        force one path (the native one is what TreeExplainer calls underneath)."""
        check_method(method)
        X = as_matrix(X, feature_names, self)
        if method == "native":
            values, base = native_tree_contributions(self, X)
            check_additivity(self, X, values, base, "native")
            return values, base
        values, base = tree_explainer_contributions(self, X)
        try:
            check_additivity(self, X, values, base, "TreeExplainer")
        except ShapAdditivityError as exc:
            if method == "tree_explainer":
                raise
            warnings.warn(f"{exc}; using the library's native TreeSHAP", stacklevel=2)
            values, base = native_tree_contributions(self, X)
            check_additivity(self, X, values, base, "native")
        return values, base

    def contributions(self, X: np.ndarray, feature_names: list[str]) -> np.ndarray:
        """The explanation hook: SHAP of the forecast for the last row of X, as p values with
        the base value last (base + sum == the forecast; checked)."""
        return last_row_contributions(self, X, feature_names)

    def _checked_predict_array(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.shape[1] != len(self.feature_names):
            raise ValueError(
                f"{self.spec.name}: predict got {X.shape[1]} columns, "
                f"fitted on {len(self.feature_names)}"
            )
        return X


class LightGBMModel(_TreeModel):
    """LightGBM regressor; `boosting: dart | gbdt` and any LightGBM parameter via the spec."""

    default_n_estimators = 200

    def fit(self, data: FitData) -> LightGBMModel:
        X, y = _checked_training_arrays(self.spec, data)
        self.feature_names = list(data.feature_names)
        params: dict[str, Any] = {
            "objective": "regression",
            "verbosity": -1,
            "seed": 0,
            "deterministic": True,
            "force_col_wise": True,
        }
        params.update({k: v for k, v in self.library_params.items() if k not in _LGBM_THREAD_KEYS})
        params["num_threads"] = 1
        constraints = monotone_constraints(self.spec, self.feature_names)
        if constraints is not None:
            params["monotone_constraints"] = constraints
        dataset = lgb.Dataset(
            X,
            label=y,
            weight=training_weights(self.spec, data),
            feature_name=self.feature_names,
            free_raw_data=True,
        )
        with single_thread():
            self._booster = lgb.train(params, dataset, num_boost_round=self.n_estimators)
        return self

    def predict(self, X: np.ndarray, prices: np.ndarray | None = None) -> np.ndarray:
        X = self._checked_predict_array(X)
        return np.asarray(self.booster.predict(X, num_threads=1), dtype=np.float64)

    def feature_importance(self, importance_type: str = "gain") -> dict[str, float]:
        """Total gain (or split count) per feature, in feature order."""
        values = self.booster.feature_importance(importance_type=importance_type)
        return {name: float(v) for name, v in zip(self.feature_names, values, strict=True)}


class XGBoostModel(_TreeModel):
    """XGBoost regressor (`booster: dart` in the zoo) on a plain DMatrix.

    A plain DMatrix, not the QuantileDMatrix of the sklearn wrapper: DART re-predicts all
    trees every round and that is about 5x slower on a quantile matrix.
    """

    default_n_estimators = 100
    additivity_rtol = FLOAT32_ADDITIVITY_RTOL  # float32 predictions and attributions

    def fit(self, data: FitData) -> XGBoostModel:
        X, y = _checked_training_arrays(self.spec, data)
        self.feature_names = list(data.feature_names)
        params: dict[str, Any] = {
            "objective": "reg:squarederror",
            "tree_method": "hist",
            "verbosity": 0,
            "seed": 0,
        }
        params.update({k: v for k, v in self.library_params.items() if k not in _XGB_THREAD_KEYS})
        params["nthread"] = 1
        constraints = monotone_constraints(self.spec, self.feature_names)
        if constraints is not None:
            params["monotone_constraints"] = "(" + ",".join(str(c) for c in constraints) + ")"
        dmatrix = xgb.DMatrix(
            X,
            label=y,
            weight=training_weights(self.spec, data),
            feature_names=self.feature_names,
            missing=np.nan,
            nthread=1,
        )
        with single_thread():
            self._booster = xgb.train(params, dmatrix, num_boost_round=self.n_estimators)
        return self

    def predict(self, X: np.ndarray, prices: np.ndarray | None = None) -> np.ndarray:
        X = self._checked_predict_array(X)
        dmatrix = xgb.DMatrix(X, feature_names=self.feature_names, missing=np.nan, nthread=1)
        return np.asarray(self.booster.predict(dmatrix), dtype=np.float64)

    def feature_importance(self, importance_type: str = "total_gain") -> dict[str, float]:
        """Total gain per feature (0 for features no tree uses), in feature order."""
        scores = self.booster.get_score(importance_type=importance_type)
        return {name: float(scores.get(name, 0.0)) for name in self.feature_names}


def check_monotone(
    model: Any,
    X: np.ndarray,
    feature: str | int,
    sign: int,
    grid_size: int = 21,
    max_rows: int = 256,
    individual: bool = False,
    tol: float = 0.0,
) -> bool:
    """True when the fitted model's partial dependence on `feature` moves only in `sign`.

    The feature is set to each of `grid_size` quantiles of its observed values on (up to)
    `max_rows` evenly spaced rows of X; the mean prediction per grid value is the partial
    dependence. `individual=True` also requires every row's curve (ICE) to be monotone.
    """
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    X = np.asarray(X, dtype=np.float64)
    names = list(getattr(model, "feature_names", []) or [])
    if isinstance(feature, str):
        if feature not in names:
            raise ValueError(f"unknown feature {feature!r}; model features: {names[:8]}")
        column = names.index(feature)
    else:
        column = int(feature)
    if not 0 <= column < X.shape[1]:
        raise ValueError(f"feature index {column} outside X with {X.shape[1]} columns")
    observed = X[:, column][np.isfinite(X[:, column])]
    if observed.size < 2:
        raise ValueError(f"feature {feature!r} has fewer than 2 finite values")
    grid = np.unique(np.quantile(observed, np.linspace(0, 1, grid_size)))
    rows = X[np.unique(np.linspace(0, X.shape[0] - 1, min(max_rows, X.shape[0])).astype(int))]
    stacked = np.repeat(rows[np.newaxis, :, :], grid.size, axis=0)
    stacked[:, :, column] = grid[:, np.newaxis]
    predictions = np.asarray(
        model.predict(stacked.reshape(-1, X.shape[1]), np.empty(0)), dtype=np.float64
    ).reshape(grid.size, rows.shape[0])
    steps = sign * np.diff(predictions.mean(axis=1))
    monotone = bool(np.all(steps >= -tol))
    if individual:
        monotone = monotone and bool(np.all(sign * np.diff(predictions, axis=0) >= -tol))
    return monotone


# ---- TreeSHAP -----------------------------------------------------------------------------
# DART: LightGBM stores DART's rescaled leaves in the trees, so every path agrees. XGBoost keeps
# DART's tree weights (`weight_drop`) beside the trees; shap's own tree parser ignores them, so
# its interventional path and `expected_value` read before `shap_values` are wrong for XGBoost
# DART. The path-dependent TreeExplainer delegates to XGBoost's `pred_contribs` (weights
# applied), which is right; `method="auto"` still verifies additivity and falls back to native.


def native_tree_contributions(model: LightGBMModel | XGBoostModel, X: np.ndarray):
    """The library's own TreeSHAP (exact, DART tree weights applied): (values, base)."""
    booster = model.booster
    with single_thread():
        if isinstance(booster, lgb.Booster):
            phi = booster.predict(X, pred_contrib=True, num_threads=1)
        elif isinstance(booster, xgb.Booster):
            dmatrix = xgb.DMatrix(X, feature_names=model.feature_names, missing=np.nan, nthread=1)
            phi = booster.predict(dmatrix, pred_contribs=True)
        else:
            raise TypeError(f"{model.spec.name}: unsupported booster {type(booster).__name__}")
    phi = np.asarray(phi, dtype=np.float64)
    if phi.shape != (X.shape[0], X.shape[1] + 1):
        raise ValueError(
            f"{model.spec.name}: contributions of shape {phi.shape}, expected "
            f"({X.shape[0]}, {X.shape[1] + 1}); multi-output boosters unsupported"
        )
    bias = phi[:, -1]
    if not np.allclose(bias, bias[0], rtol=1e-6, atol=1e-12):
        raise ValueError(f"{model.spec.name}: the bias column varies across rows")
    return phi[:, :-1], float(bias[0])


def tree_explainer_contributions(model: LightGBMModel | XGBoostModel, X: np.ndarray):
    """shap.TreeExplainer (path-dependent) on the booster: (values, base)."""
    import shap  # heavy: delayed (only this path needs it)

    with single_thread():
        explainer = shap.TreeExplainer(model.booster, feature_perturbation="tree_path_dependent")
        values = np.asarray(explainer.shap_values(X, check_additivity=False), dtype=np.float64)
    # Read expected_value only after shap_values: before it, shap's parse of an XGBoost DART
    # model (DART tree weights ignored) gives a wrong base; the call resets it from the bias.
    base = float(np.ravel(explainer.expected_value)[0])
    return values.reshape(X.shape), base
