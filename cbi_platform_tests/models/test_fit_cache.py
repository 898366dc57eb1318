"""The fit cache: a network the walk-forward fitted is reused, not refitted, by the registered
version and the daily decision series; any change to its inputs is a different entry."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from cbi_platform.evaluation import horizon_run
from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.fit_cache import FitCache, fit_key
from cbi_platform.models.neural import NeuralModel
from cbi_platform.models.registry import build_model
from cbi_platform.procurement.decision_series import members_fitted_at
from cbi_platform_tests.models.test_neural_tuning import _cfg, _frame

GRU = ModelSpec("nn_gru_c", "gru", "neural", {"lookback": 4, "units": 4, "epochs": 1})
RIDGE = ModelSpec("ridge", "ridge", "sanity")


def _data(seed: int = 0) -> FitData:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(120, 3))
    return FitData(X, rng.normal(size=120) * 0.01, np.linspace(40, 41, 130), 5, ["a", "b", "c"])


def test_the_key_changes_with_any_input_and_only_networks_are_kept(tmp_path):
    data = _data()
    assert fit_key(GRU, data) == fit_key(GRU, _data())
    changed = _data()
    changed.y[7] += 1e-9
    assert fit_key(GRU, changed) != fit_key(GRU, data)
    other = dataclasses.replace(GRU, params={**GRU.params, "units": 5})
    assert fit_key(other, data) != fit_key(GRU, data)
    assert fit_key(GRU, dataclasses.replace(data, train_rows=np.arange(120))) != fit_key(GRU, data)

    cache = FitCache(tmp_path)
    first = cache.fit(GRU, data, build_model)
    again = cache.fit(GRU, data, build_model)
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first.predict(data.X[-4:]), again.predict(data.X[-4:]))
    cache.fit(RIDGE, data, build_model)
    assert len(list(tmp_path.rglob("*.joblib"))) == 1  # the ridge fit is not kept


def test_later_steps_reuse_the_walk_forward_fits(tmp_path, monkeypatch):
    frame, cfg = _frame(), dataclasses.replace(_cfg(), fit_cache=str(tmp_path))
    spec = dataclasses.replace(GRU, refit_every=6)
    regimes = frame.select("date", regime=pl.lit("normal"))
    run = horizon_run.member_walk_forward(frame, regimes, "1w", cfg, specs=[spec])
    oof = run.oof.drop_nulls("fitted_at")
    stored = len(list(tmp_path.rglob("*.joblib")))
    assert stored == oof["fitted_at"].n_unique() >= 2

    fits = []
    original = NeuralModel.fit
    monkeypatch.setattr(
        NeuralModel, "fit", lambda self, data: fits.append(1) or original(self, data)
    )
    closes = frame["price"].to_numpy()
    for fitted_at in oof["fitted_at"].unique().to_list():
        model = members_fitted_at(frame, regimes, "1w", fitted_at, [spec], cfg.fit_cache)[spec.name]
        row = oof.filter(pl.col("origin") == fitted_at)  # the fit's own origin
        upto = frame.filter(pl.col("date") <= fitted_at)
        X = upto.select("f_0", "f_1", "f_2").to_numpy()
        forecast = model.predict(X[-4:], closes[: upto.height])[-1]
        assert forecast == row["forecast_logret"][0]  # the very model, not a look-alike
    live = horizon_run.fit_final_models(frame, regimes, "1w", [spec], fit_cache=cfg.fit_cache)
    assert live[spec.name] is not None
    assert fits == []  # nothing was refitted
    # Without the cache the same call fits again.
    horizon_run.fit_final_models(frame, regimes, "1w", [spec])
    assert fits == [1]
