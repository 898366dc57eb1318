"""The rows a hyperparameter search may see: those known by the LAST development origin.

Evaluation owns the protocol's origins, so the cut lives here; the search itself
(models/neural_tuning.py) receives the rows and never imports evaluation.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from cbi_platform.evaluation.horizon_run import ProtocolConfig, origin_plan
from cbi_platform.evaluation.origins import DEVELOPMENT
from cbi_platform.features.contract import (
    DATE,
    HORIZONS,
    PRICE,
    TARGET_DATE,
    TARGET_LOGRET,
    feature_columns,
)
from cbi_platform.models.base import FitData


def development_data(
    frame: pl.DataFrame, horizon: str, cfg: ProtocolConfig
) -> tuple[FitData, dt.date]:
    """The rows a search may see: those whose target is known by the LAST development origin of
    the protocol at this horizon (and the feature history up to that origin), and its date."""
    frame = frame.sort(DATE)
    plan = origin_plan(frame[DATE], horizon, cfg)
    development = [d for d, r in zip(plan.dates, plan.role, strict=True) if r == DEVELOPMENT]
    if not development:
        raise ValueError(f"{horizon}: the protocol has no development origins on this frame")
    last = max(development)
    upto = frame.filter(pl.col(DATE) <= last)
    names = feature_columns(upto)
    known = upto.select(
        ((pl.col(TARGET_DATE) <= last) & pl.col(TARGET_LOGRET).is_not_null()).fill_null(False)
    ).to_series()
    mask = known.to_numpy()
    X = upto.select(names).cast(pl.Float64).to_numpy()
    y = upto[TARGET_LOGRET].cast(pl.Float64).to_numpy()
    data = FitData(
        X=X[mask],
        y=y[mask],
        prices=upto[PRICE].to_numpy(),
        horizon_days=HORIZONS[horizon],
        feature_names=names,
        history=X,
        train_rows=np.flatnonzero(mask),
    )
    return data, last
