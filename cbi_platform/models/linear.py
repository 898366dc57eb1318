"""The ridge sanity baseline: a regularised linear model on standardised features.

NaNs are imputed with the training medians (a column with no value at all gets 0), features
are standardised with training statistics, then sklearn's Ridge fits the h-day log return.
If the trees cannot beat this, they are not learning anything a line would miss.
"""

from __future__ import annotations

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from cbi_platform.models.attribution import (
    Method,
    as_matrix,
    check_additivity,
    check_method,
    last_row_contributions,
)
from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.baselines import single_thread, training_weights


class RidgeModel:
    """Median-impute, standardise, Ridge(alpha); params: `alpha` (default 10.0)."""

    def __init__(self, spec: ModelSpec) -> None:
        unknown = set(spec.params) - {"alpha"}
        if unknown:
            raise ValueError(f"{spec.name}: unknown ridge params {sorted(unknown)}; allowed alpha")
        self.spec = spec
        self.alpha = float(spec.params.get("alpha", 10.0))
        if self.alpha < 0:
            raise ValueError(f"{spec.name}: alpha must be >= 0")
        self.feature_names: list[str] = []
        self.fallback_reason: str | None = None
        self.imputer: SimpleImputer | None = None
        self.scaler: StandardScaler | None = None
        self.ridge: Ridge | None = None

    def fit(self, data: FitData) -> RidgeModel:
        X = np.asarray(data.X, dtype=np.float64)
        y = np.asarray(data.y, dtype=np.float64).reshape(-1)
        if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise ValueError(f"{self.spec.name}: X {X.shape} does not match y {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{self.spec.name}: training targets must be finite")
        weights = training_weights(self.spec, data)
        self.feature_names = list(data.feature_names)
        with single_thread():
            self.imputer = SimpleImputer(strategy="median", keep_empty_features=True)
            filled = self.imputer.fit_transform(X)
            self.scaler = StandardScaler().fit(filled, sample_weight=weights)
            self.ridge = Ridge(alpha=self.alpha).fit(
                self.scaler.transform(filled), y, sample_weight=weights
            )
        return self

    def predict(self, X: np.ndarray, prices: np.ndarray | None = None) -> np.ndarray:
        if self.ridge is None or self.imputer is None or self.scaler is None:
            raise RuntimeError(f"{self.spec.name}: predict before fit")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        with single_thread():
            standardised = self.scaler.transform(self.imputer.transform(X))
            return np.asarray(self.ridge.predict(standardised), dtype=np.float64)

    def shap_values(
        self, X: np.ndarray, feature_names: list[str], method: Method = "auto"
    ) -> tuple[np.ndarray, float]:
        """Exact linear SHAP (whatever the method): coef * (z - mean z) on the imputed,
        standardised features, and the base value; additivity checked."""
        check_method(method)
        X = as_matrix(X, feature_names, self)
        if self.ridge is None or self.imputer is None or self.scaler is None:
            raise RuntimeError(f"{self.spec.name}: explain before fit")
        coef = np.asarray(self.ridge.coef_, dtype=np.float64).reshape(-1)
        with single_thread():
            z = self.scaler.transform(self.imputer.transform(X))
            # StandardScaler centres on the (weighted) training mean, so the training mean of
            # z is 0; transforming that mean keeps this exact should the scaler stop centring.
            z_mean = self.scaler.transform(self.scaler.mean_.reshape(1, -1))[0]
        values = coef * (z - z_mean)
        base = float(np.ravel(self.ridge.intercept_)[0] + coef @ z_mean)
        check_additivity(self, X, values, base, "linear")
        return values, base

    def contributions(self, X: np.ndarray, feature_names: list[str]) -> np.ndarray:
        """The explanation hook: SHAP of the forecast for the last row of X, as p values with
        the base value last (base + sum == the forecast; checked)."""
        return last_row_contributions(self, X, feature_names)

    def feature_importance(self) -> dict[str, float]:
        """|coefficient| on the standardised scale, in feature order."""
        if self.ridge is None:
            raise RuntimeError(f"{self.spec.name}: not fitted")
        return {n: float(abs(c)) for n, c in zip(self.feature_names, self.ridge.coef_, strict=True)}
