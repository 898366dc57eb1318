import datetime as dt

import numpy as np
import polars as pl
import pytest

from cbi_platform.evaluation.origins import walk_forward_origins
from cbi_platform.evaluation.volatility_eval import (
    best_volatility_model,
    score_volatility,
    volatility_models,
    volatility_walk_forward,
)
from cbi_platform.models.base import ModelSpec
from cbi_platform.models.registry import load_specs


def _garch_prices(n=3000, seed=5):
    rng = np.random.default_rng(seed)
    omega, alpha, beta = 2e-6, 0.08, 0.9
    var, r = omega / (1 - alpha - beta), np.empty(n)
    for i in range(n):
        r[i] = np.sqrt(var) * rng.standard_normal()
        var = omega + alpha * r[i] ** 2 + beta * var
    return 40 * np.exp(np.cumsum(r))


def _garch_specs():
    """specs.yaml's GARCH-family volatility specs (the LSTM has its own, cheaper tests in
    models/test_volatility_nn.py)."""
    return [s for s in load_specs(kinds=["volatility"]) if s.family in ("garch", "gjr_garch")]


def test_garch_beats_trailing_vol_on_garch_data_and_never_peeks():
    prices = _garch_prices()
    dates = pl.date_range(dt.date(2000, 1, 1), dt.date(2030, 1, 1), "1d", eager=True)[: len(prices)]
    plan = walk_forward_origins(dates, 5, n_origins=24, span=600, n_burn_in=0)
    horizons = {"1w": 5, "1m": 21}
    frame = volatility_walk_forward(prices, plan, horizons, specs=_garch_specs())
    assert frame.height == 24 * 2 * 3
    # The forecast at an origin does not change when prices after it change.
    shocked = prices.copy()
    shocked[plan.index[10] + 1 :] *= np.exp(np.linspace(0, 1, len(prices) - plan.index[10] - 1))
    again = volatility_walk_forward(shocked, plan, horizons, specs=_garch_specs())
    key = pl.col("origin") == plan.dates[10]
    assert (
        frame.filter(key)["forecast_vol"].to_list() == again.filter(key)["forecast_vol"].to_list()
    )
    scores = score_volatility(frame)
    garch = scores.filter((pl.col("horizon") == "1w") & (pl.col("model") == "garch"))
    assert garch["rel_mae_vs_trailing"][0] < 1.0
    assert best_volatility_model(scores, "1w") in {"garch", "gjr_garch"}


def test_the_walk_forward_runs_the_volatility_specs_with_their_params():
    prices = _garch_prices(n=1500, seed=7)
    dates = pl.date_range(dt.date(2000, 1, 1), dt.date(2030, 1, 1), "1d", eager=True)[: len(prices)]
    plan = walk_forward_origins(dates, 5, n_origins=4, span=300, n_burn_in=0)
    horizons = {"1w": 5}
    # the default is specs.yaml's volatility list, the LSTM included
    names = {s.name for s in load_specs(kinds=["volatility"])}
    assert {m.spec.name for m in volatility_models()} == names and "lstm_vol" in names
    default = volatility_walk_forward(prices, plan, horizons, specs=_garch_specs())
    assert set(default["model"]) == {"garch", "gjr_garch", "trailing_vol"}
    specs = [
        ModelSpec("garch", "garch", "volatility", {"dist": "t", "window": 2500}),
        ModelSpec("garch_short", "garch", "volatility", {"dist": "t", "window": 250}),
        ModelSpec("gjr_normal", "gjr_garch", "volatility", {"dist": "normal", "window": 2500}),
    ]
    frame = volatility_walk_forward(prices, plan, horizons, specs=specs)
    assert set(frame["model"]) == {"garch", "garch_short", "gjr_normal", "trailing_vol"}

    def vols(model):
        return frame.filter(pl.col("model") == model).sort("origin")["forecast_vol"].to_numpy()

    # the same spec as specs.yaml's garch gives its numbers; a shorter window changes them
    same = default.filter(pl.col("model") == "garch").sort("origin")["forecast_vol"].to_numpy()
    np.testing.assert_allclose(vols("garch"), same)
    assert not np.allclose(vols("garch_short"), vols("garch"))
    gjr_t = default.filter(pl.col("model") == "gjr_garch").sort("origin")["forecast_vol"]
    assert not np.allclose(vols("gjr_normal"), gjr_t.to_numpy())
    with pytest.raises(ValueError, match="not volatility models"):
        volatility_walk_forward(
            prices, plan, horizons, specs=[ModelSpec("rw", "random_walk", "benchmark")]
        )
