"""Fit failures do not hide: a fallback to the random walk is in the OOF table and counted."""

import numpy as np
import polars as pl

from cbi_platform.evaluation.metrics import leaderboard
from cbi_platform.evaluation.walk_forward import run_walk_forward
from cbi_platform.models.base import ModelSpec
from cbi_platform.models.statistical import ArimaModel
from cbi_platform_tests.evaluation.test_walk_forward import make_frame, small_plan


class FlakyModel:
    """Falls back to the random walk whenever its training window has an odd number of rows."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.fallback_reason = None

    def fit(self, data):
        odd = len(data.y) % 2 == 1
        self.fallback_reason = "estimation failed (planted) -> random walk" if odd else None
        self.value = 0.0 if odd else 0.001
        return self

    def predict(self, X, prices):
        return np.array([self.value])


def build(spec: ModelSpec):
    return FlakyModel(spec)


def test_fallback_reason_reaches_the_oof_table_and_the_leaderboard_counts_it():
    frame = make_frame(horizons=("1w",))
    plan = small_plan(frame)
    oof = run_walk_forward(frame, [ModelSpec("flaky", "flaky", "statistical")], build, plan)
    assert "fallback_reason" in oof.columns
    flagged = oof.filter(pl.col("fallback_reason").is_not_null())
    assert 0 < flagged.height < oof.height
    assert (flagged["forecast_logret"] == 0.0).all()
    assert (oof.filter(pl.col("fallback_reason").is_null())["forecast_logret"] == 0.001).all()
    board = leaderboard(oof).filter(pl.col("model") == "flaky")
    scored = oof.filter((pl.col("role") == "scored") & pl.col("actual").is_not_null())
    assert board["n_fallback"][0] == scored["fallback_reason"].is_not_null().sum() > 0


def test_a_real_arima_that_cannot_be_estimated_records_why():
    from cbi_platform.models.base import FitData

    spec = ModelSpec("arima", "arima", "statistical", params={"order": [1, 1, 0], "window": 100})
    model = ArimaModel(spec)
    data = FitData(
        X=np.zeros((5, 0)),
        y=np.zeros(5),
        prices=np.linspace(40.0, 41.0, 30),  # fewer closes than the model's min_obs
        horizon_days=5,
        feature_names=[],
    )
    model.fit(data)
    assert model.fallback_reason is not None and "random walk" in model.fallback_reason
    assert float(model.predict(np.zeros((1, 0)), data.prices)[0]) == 0.0
