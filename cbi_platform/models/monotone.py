"""Verify that every model with a monotone-constraint option honours it once fitted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from cbi_platform.features.contract import TARGET_LOGRET, feature_columns
from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.registry import build_model
from cbi_platform.models.trees import check_monotone, monotone_signs


@dataclass(frozen=True)
class MonotoneResult:
    model: str
    feature: str
    sign: int
    monotone: bool


def verify_monotone_specs(
    frame: pl.DataFrame, specs: list[ModelSpec], weights: np.ndarray | None = None
) -> list[MonotoneResult]:
    """Fit each spec that declares constraints on the rows with a known target and check the
    partial dependence of each constrained feature (mean and every individual curve)."""
    known = frame.filter(pl.col(TARGET_LOGRET).is_not_null()).sort("date")
    names = feature_columns(known)
    X = known.select(names).cast(pl.Float64).to_numpy()
    y = known[TARGET_LOGRET].to_numpy()
    results = []
    for spec in specs:
        signs = monotone_signs(spec)
        if not signs:
            continue
        data = FitData(
            X=X,
            y=y,
            prices=known["price"].to_numpy(),
            horizon_days=int(known["horizon_days"][0]),
            feature_names=names,
            sample_weight=weights[: known.height]
            if spec.weighted and weights is not None
            else None,
        )
        model = build_model(spec).fit(data)
        for feature, sign in signs.items():
            ok = check_monotone(model, X, feature, sign, individual=True)
            results.append(MonotoneResult(spec.name, feature, sign, ok))
    return results
