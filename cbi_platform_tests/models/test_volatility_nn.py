"""The LSTM volatility model: params, causal features, the target embargo, learning on clustered
volatility, seeded reproducibility, and its sparse refit schedule in the volatility
walk-forward. Tiny data and networks throughout."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

tf = pytest.importorskip("tensorflow")
try:  # one thread, before any op runs (another test module may have run ops already)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:
    pass

from cbi_platform.evaluation.origins import OriginPlan  # noqa: E402
from cbi_platform.evaluation.volatility_eval import (  # noqa: E402
    refit_schedule,
    score_volatility,
    volatility_walk_forward,
)
from cbi_platform.models.base import FitData, ModelSpec  # noqa: E402
from cbi_platform.models.registry import build_model, load_specs  # noqa: E402
from cbi_platform.models.volatility import realized_vol  # noqa: E402
from cbi_platform.models.volatility_nn import (  # noqa: E402
    LstmVolatilityModel,
    daily_returns,
    vol_features,
    vol_targets,
)

TINY = {"lookback": 8, "units": 6, "epochs": 3, "batch_size": 32, "learning_rate": 0.01}


def lstm(name: str = "lstm_vol", **params) -> LstmVolatilityModel:
    return LstmVolatilityModel(ModelSpec(name, "lstm_vol", "volatility", {**TINY, **params}))


def clustered_prices(n: int, seed: int) -> np.ndarray:
    """Closes whose daily volatility clusters: log vol is a persistent AR(1) (stochastic
    volatility, GARCH-like clustering with a strong, learnable signal)."""
    rng = np.random.default_rng(seed)
    log_vol = np.empty(n)
    log_vol[0] = 0.0
    for i in range(1, n):
        log_vol[i] = 0.98 * log_vol[i - 1] + 0.15 * rng.standard_normal()
    r = 0.012 * np.exp(log_vol) * rng.standard_normal(n)
    return 40 * np.exp(np.cumsum(np.concatenate([[0.0], r[:-1]])))


# --- construction ---------------------------------------------------------------------------


def test_importing_the_module_does_not_import_keras():
    code = (
        "import sys, cbi_platform.models.volatility_nn as m; "
        "m.LstmVolatilityModel.__name__; "
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_spec_is_registered_small_and_validated():
    spec = {s.name: s for s in load_specs(kinds=["volatility"])}["lstm_vol"]
    model = build_model(spec)
    assert isinstance(model, LstmVolatilityModel)
    assert model.params["batch_size"] <= 32 and model.params["epochs"] <= 10
    assert model.max_fits >= 1
    for bad, match in [
        ({"dropout": 0.1}, "unknown lstm_vol params"),
        ({"batch_size": 64}, "batch_size must be <= 32"),
        ({"lookback": 0}, "lookback must be an integer"),
        ({"units": 2.5}, "units must be an integer"),
        ({"learning_rate": 0}, "learning_rate"),
    ]:
        with pytest.raises(ValueError, match=match) as info:
            lstm("vol_x", **bad)
        assert "vol_x" in str(info.value)


# --- features, targets and the embargo -------------------------------------------------------


def test_features_are_causal_and_targets_exist_only_when_complete():
    returns = daily_returns(clustered_prices(300, seed=1))
    feats = vol_features(returns)
    changed = returns.copy()
    changed[200:] *= 3.0
    np.testing.assert_array_equal(vol_features(changed)[:200], feats[:200])
    assert np.isnan(feats[:62]).all() and np.isfinite(feats[62:]).all()
    # trailing 21-day vol at day 100 is the RMS of returns 80..100
    rms = np.sqrt(np.mean(returns[80:101] ** 2))
    assert np.isclose(np.exp(feats[100, 2]), rms + 1e-6, rtol=1e-9)
    targets = vol_targets(returns, [5, 21])
    m = returns.size
    for col, h in enumerate([5, 21]):
        last = m - 1 - h  # the h returns after this day are the last h returns
        assert np.isfinite(targets[last, col]) and np.isnan(targets[last + 1 :, col]).all()
        expect = np.log(realized_vol(returns[last + 1 : last + 1 + h]))
        assert np.isclose(targets[last, col], expect, atol=1e-4)


def test_no_training_target_ends_after_the_origin():
    prices = clustered_prices(420, seed=2)
    model = lstm(epochs=1).fit_horizons(prices, [5, 63])
    # the newest training target ends exactly at the origin (the last close), never after it
    assert model.fit_origin_row == 419 and model.max_target_end_row == 419
    assert model.n_train > 0 and model.n_val > 0
    assert model.epochs_run == 1 and model.fit_seconds > 0
    # the zoo protocol, one horizon, with the least history that fits: its newest target
    # ends at the origin too; one close fewer is refused, not fitted on unknown targets
    need = lstm().min_closes([63])
    with pytest.raises(ValueError, match="too few"):
        lstm(epochs=1).fit_horizons(prices[: need - 1], [63])
    short = lstm(epochs=1).fit(FitData(np.zeros((1, 1)), np.zeros(1), prices[: need - 1], 63, []))
    assert short.fallback_reason and np.isfinite(short.predict(None, prices[: need - 1])).all()
    model = lstm(epochs=1).fit(FitData(np.zeros((1, 1)), np.zeros(1), prices[:need], 63, []))
    assert model.fallback_reason is None and model.max_target_end_row == need - 1
    out = model.predict(np.zeros((3, 1)), prices)
    assert out.shape == (3,) and np.all(np.isfinite(out)) and np.all(out > 0)


# --- learning and reproducibility ------------------------------------------------------------


def test_it_learns_clustered_volatility_and_is_reproducible_with_a_seed():
    prices = clustered_prices(1100, seed=3)
    model = lstm(seed=7).fit_horizons(prices[:800], [5, 21])
    rows = list(range(800, 1100 - 21))
    forecast = model.forecast_horizons(prices, rows)
    returns = daily_returns(prices)
    realised = np.array([realized_vol(returns[r : r + 5]) for r in rows])
    corr = np.corrcoef(np.log(forecast[:, 0]), np.log(realised))[0, 1]
    assert corr > 0.2, corr
    # beats a constant forecast (the training-period median) on log error
    constant = np.median([realized_vol(returns[r : r + 5]) for r in range(100, 790)])
    assert np.mean(np.abs(np.log(forecast[:, 0] / realised))) < np.mean(
        np.abs(np.log(constant / realised))
    )
    # the single-origin call agrees with the batched one; a row reads only closes up to it
    np.testing.assert_allclose(model.forecast_horizons(prices[:901]), forecast[100], rtol=1e-5)
    again = lstm(seed=7).fit_horizons(prices[:800], [5, 21]).forecast_horizons(prices, rows)
    np.testing.assert_array_equal(again, forecast)
    other = lstm(seed=8).fit_horizons(prices[:800], [5, 21]).forecast_horizons(prices, rows)
    assert not np.allclose(other, forecast)


# --- the refit schedule and the walk-forward -------------------------------------------------


def test_refit_schedule():
    assert refit_schedule(10, 4, 0) == (0, 3, 6, 9)
    assert refit_schedule(100, 4, 0) == (0, 25, 50, 75)
    assert refit_schedule(10, 4, 7) == (7, 8, 9)
    assert refit_schedule(10, 1, 2) == (2,)
    assert refit_schedule(10, 4, None) == () and refit_schedule(10, 4, 10) == ()
    for n in range(1, 40):
        for max_fits in range(1, 8):
            for first in range(n):
                fits = refit_schedule(n, max_fits, first)
                assert fits[0] == first and len(fits) <= max_fits and fits[-1] < n
                assert list(fits) == sorted(set(fits))
    with pytest.raises(ValueError, match="max_fits"):
        refit_schedule(10, 0, 0)


def _plan(n_dates: int, index: list[int]) -> OriginPlan:
    dates = pl.date_range(dt.date(2000, 1, 3), dt.date(2040, 1, 1), "1d", eager=True)[:n_dates]
    half = len(index) // 2
    return OriginPlan(
        dates=tuple(dates[i] for i in index),
        index=tuple(index),
        role=tuple(["development"] * half + ["scored"] * (len(index) - half)),
        target_known=tuple(i + 5 <= n_dates - 1 for i in index),
        horizon_days=5,
        spacing_days=25.0,
        n_dates=n_dates,
    )


def test_walk_forward_refits_on_schedule_and_scores_beside_garch():
    prices = clustered_prices(700, seed=6)
    horizons = {"1w": 5, "1m": 21}
    index = list(range(100, 700 - 21, 60))  # 10 origins; the first one too early for a fit
    plan = _plan(len(prices), index)
    specs = [s for s in load_specs(kinds=["volatility"]) if s.family in ("garch", "gjr_garch")] + [
        ModelSpec("lstm_vol", "lstm_vol", "volatility", {**TINY, "max_fits": 2, "seed": 3})
    ]
    frame = volatility_walk_forward(prices, plan, horizons, specs=specs)
    nn = frame.filter(pl.col("model") == "lstm_vol").sort("origin", "horizon")
    need = lstm().min_closes(list(horizons.values()))
    first = next(k for k, i in enumerate(index) if i + 1 >= need)
    assert first >= 1  # the case where an early origin has no fit
    early = nn.filter(pl.col("origin") < plan.dates[first])
    assert early["forecast_vol"].null_count() == early.height > 0
    assert early["fit_origin"].null_count() == early.height
    fitted = nn.filter(pl.col("origin") >= plan.dates[first])
    assert fitted["forecast_vol"].null_count() == 0
    assert (fitted["forecast_vol"] > 0).all()
    assert set(fitted["horizon"]) == set(horizons)
    fit_origins = sorted(set(fitted["fit_origin"]))
    assert len(fit_origins) == 2
    assert fit_origins == [plan.dates[k] for k in refit_schedule(len(index), 2, first)]
    assert (fitted["fit_origin"] <= fitted["origin"]).all()
    # between refits the last fit forecasts from the closes up to each origin: refit it alone
    k = first + 1
    assert plan.dates[k] not in fit_origins
    row = index[first]  # the fit serving origin k is the one at the first origin
    model = lstm(max_fits=2, seed=3).fit_horizons(prices[: row + 1], list(horizons.values()))
    expect = model.forecast_horizons(prices[: index[k] + 1])
    got = nn.filter(pl.col("origin") == plan.dates[k]).sort("horizon")["forecast_vol"]
    np.testing.assert_allclose(got.to_numpy(), expect[[1, 0]], rtol=1e-5)  # "1m" < "1w"
    # GARCH and the naive are fitted at their own origin
    others = frame.filter(pl.col("model") != "lstm_vol")
    assert (others["fit_origin"] == others["origin"]).all()
    scores = score_volatility(frame, role="scored")
    for h in horizons:
        models = set(scores.filter(pl.col("horizon") == h)["model"])
        assert models == {"garch", "gjr_garch", "lstm_vol", "trailing_vol"}
    assert scores.filter(pl.col("model") == "lstm_vol")["qlike"].is_finite().all()
    # prices after an origin never change its forecast (nor the fits before it)
    shocked = prices.copy()
    cut = index[first + 3]
    shocked[cut + 1 :] *= np.exp(np.linspace(0, 1.5, len(prices) - cut - 1))
    again = volatility_walk_forward(shocked, plan, horizons, specs=specs[-1:])
    keep = pl.col("origin") <= plan.dates[first + 3]
    before = again.filter(keep & (pl.col("model") == "lstm_vol")).sort("origin", "horizon")
    np.testing.assert_array_equal(
        before["forecast_vol"].to_numpy(),
        nn.filter(keep).sort("origin", "horizon")["forecast_vol"].to_numpy(),
    )
