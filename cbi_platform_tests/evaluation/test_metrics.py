"""Metrics against the random walk: hand examples, the DM test, breakdowns, the plot."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from scipy import stats

from cbi_platform.evaluation.metrics import (
    RANDOM_WALK,
    by_group,
    by_move_size,
    diebold_mariano,
    directional_accuracy,
    dm_lags,
    effective_sample_size,
    interval_coverage,
    interval_width_pct,
    leaderboard,
    mae,
    mape,
    mase,
    rmse,
    smape,
)
from cbi_platform.evaluation.plots import error_by_origin_png
from cbi_platform.evaluation.walk_forward import OOF_SCHEMA


def make_oof(
    price, actual, forecasts: dict[str, np.ndarray], naive_scale=None, horizon="1m", roles=None
) -> pl.DataFrame:
    """A hand-made oof: one row per (model, origin), origins 25 trading days apart."""
    price, actual = np.asarray(price, float), np.asarray(actual, float)
    n = len(price)
    scale = np.ones(n) if naive_scale is None else np.asarray(naive_scale, float)
    origins = [dt.date(2020, 1, 1) + dt.timedelta(days=35 * k) for k in range(n)]
    parts = []
    for name, forecast in forecasts.items():
        forecast = np.asarray(forecast, float)
        parts.append(
            pl.DataFrame(
                {
                    "horizon": horizon,
                    "horizon_days": {"1w": 5, "1m": 21, "3m": 63, "12m": 252}[horizon],
                    "model": name,
                    "origin": origins,
                    "origin_row": np.arange(n) * 25 + 1000,
                    "role": roles or ["scored"] * n,
                    "target_date": [o + dt.timedelta(days=30) for o in origins],
                    "price": price,
                    "actual": actual,
                    "forecast": forecast,
                    "forecast_logret": np.log(forecast / price),
                    "fitted_at": origins,
                    "n_train": 500,
                    "naive_scale": scale,
                    "fallback_reason": [None] * n,
                }
            )
        )
    return pl.concat(parts).select([pl.col(c).cast(t) for c, t in OOF_SCHEMA.items()])


def row(table: pl.DataFrame, model: str, **keys) -> dict:
    filtered = table.filter(pl.col("model") == model)
    for key, value in keys.items():
        filtered = filtered.filter(pl.col(key) == value)
    assert filtered.height == 1
    return filtered.row(0, named=True)


# ---- point metrics by hand --------------------------------------------------------------


def test_point_metrics_hand_examples():
    actual, forecast = [100.0, 200.0], [110.0, 180.0]
    assert mape(actual, forecast) == pytest.approx(10.0)
    assert smape(actual, forecast) == pytest.approx(100 * (20 / 210 + 40 / 380) / 2)
    assert rmse(actual, forecast) == pytest.approx(math.sqrt((100 + 400) / 2))
    assert mae(actual, forecast) == pytest.approx(15.0)
    assert smape([0.0], [0.0]) == 0.0


def test_mase_scales_each_origin_by_its_own_naive_error():
    # errors 1 and 0.5 over scales 2 and 0.5: (0.5 + 1.0) / 2, not 1.5 / 2.5
    assert mase([10.0, 12.0], [11.0, 12.5], [2.0, 0.5]) == pytest.approx(0.75)
    oof = make_oof([10.0, 12.0], [10.0, 12.0], {"m": [11.0, 12.5]}, naive_scale=[2.0, 0.5])
    assert row(leaderboard(oof), "m")["mase"] == pytest.approx(0.75)


def test_directional_accuracy_and_the_random_walk_has_none():
    price, actual = [10.0, 10.0, 10.0, 10.0], [11.0, 9.0, 11.0, 10.0]
    da, n = directional_accuracy(price, actual, [10.5, 10.5, 9.0, 12.0])  # last: flat outcome
    assert (da, n) == (pytest.approx(1 / 3), 3)
    da, n = directional_accuracy(price, actual, price)
    assert math.isnan(da) and n == 0


def test_interval_coverage_and_width():
    actual = [1.0, 2.0, 3.0, 4.0]
    lo, hi = [0.0, 2.5, 3.0, 5.0], [2.0, 3.0, 3.0, 6.0]
    assert interval_coverage(actual, lo, hi) == 0.5  # closed interval: 3 in [3, 3]
    assert interval_width_pct([9.0, 18.0], [11.0, 22.0], [10.0, 20.0]) == pytest.approx(20.0)


# ---- overlap and Diebold-Mariano ------------------------------------------------------


def test_dm_lags_and_effective_sample_size_at_the_protocol_spacing():
    spacing = 1511 / 59
    assert [dm_lags(h, spacing) for h in (5, 21, 63, 126, 252)] == [0, 0, 2, 4, 9]
    ess = [
        effective_sample_size(n, h, spacing)
        for n, h in zip((60, 59, 57, 55, 50), (5, 21, 63, 126, 252), strict=True)
    ]
    assert ess == [60, 59, 19, 11, 5]
    assert dm_lags(50, 25.0) == 1  # exactly two spacings: one overlapping neighbour
    assert effective_sample_size(0, 21, 25.0) == 0


def test_dm_without_lags_is_the_one_sample_t_test():
    rng = np.random.default_rng(1)
    d = rng.normal(0.2, 1.0, 40)
    result = diebold_mariano(d, np.zeros(40), lags=0)
    t = stats.ttest_1samp(d, 0.0)
    assert result.stat == pytest.approx(t.statistic)
    assert result.pvalue == pytest.approx(t.pvalue)


def test_dm_with_lags_matches_a_newey_west_hac_regression():
    rng = np.random.default_rng(2)
    d = np.convolve(rng.normal(0.3, 1.0, 63), np.ones(4) / 4, mode="valid")  # MA(3)
    n, lags = d.size, 3
    fit = sm.OLS(d, np.ones(n)).fit(
        cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": False}
    )
    k = lags + 1
    expected = fit.tvalues[0] * math.sqrt((n + 1 - 2 * k + k * (k - 1) / n) / n)
    result = diebold_mariano(d, np.zeros(n), lags=lags)
    assert result.stat == pytest.approx(expected, rel=1e-10)
    assert result.pvalue == pytest.approx(2 * stats.t.sf(abs(expected), n - 1))


def test_dm_separates_a_better_model_from_an_equal_one():
    rng = np.random.default_rng(3)
    rw_loss = np.abs(rng.normal(0.0, 2.0, 50))
    better = rw_loss * 0.5 + np.abs(rng.normal(0.0, 0.1, 50))
    result = diebold_mariano(better, rw_loss, lags=0)
    assert result.stat < 0 and result.pvalue < 0.001
    same_on_average = diebold_mariano(rw_loss[::-1], rw_loss, lags=2)  # same losses, reordered
    assert same_on_average.pvalue > 0.99
    identical = diebold_mariano(rw_loss, rw_loss.copy(), lags=2)  # defined as undefined
    assert math.isnan(identical.stat) and math.isnan(identical.pvalue)


# ---- tables -------------------------------------------------------------------------------


def noisy_oof(n: int = 60, seed: int = 4, horizon: str = "1m") -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    price = 50 * np.exp(np.cumsum(rng.normal(0, 0.05, n)))
    actual = price * np.exp(rng.normal(0, 0.06, n))
    good = price + 0.6 * (actual - price) + rng.normal(0, 0.3, n)
    bad = price * np.exp(rng.normal(0, 0.08, n))
    return make_oof(
        price,
        actual,
        {RANDOM_WALK: price, "good": good, "bad": bad},
        naive_scale=np.full(n, 2.0),
        horizon=horizon,
    )


def test_leaderboard_random_walk_row_and_a_better_model():
    board = leaderboard(noisy_oof())
    rw = row(board, RANDOM_WALK)
    assert rw["rel_mae"] == 1.0 and rw["skill"] == 0.0
    assert rw["dm_stat"] is None and rw["dm_pvalue"] is None
    assert rw["directional_accuracy"] is None and rw["n_directional"] == 0
    good = row(board, "good")
    assert good["skill"] > 0.3 and good["dm_stat"] < 0 and good["dm_pvalue"] < 0.001
    assert good["directional_accuracy"] > 0.8
    assert board["model"].to_list()[0] == "good"  # sorted by rel_mae
    assert good["dm_lags"] == 0 and good["effective_n"] == 60  # 21 days < the 25-row spacing


def test_leaderboard_uses_scored_origins_with_known_targets_only():
    oof = noisy_oof(20)
    early = pl.col("origin_row") < 1050  # the first two origins become burn-in, badly missed
    burn_in = oof.with_columns(
        role=pl.when(early).then(pl.lit("burn_in")).otherwise("role"),
        forecast=pl.when(early).then(pl.col("forecast") * 10).otherwise("forecast"),
    )
    unknown = oof.filter(pl.col("origin_row") == 1475).with_columns(  # target not known yet
        origin=pl.lit(dt.date(2030, 1, 1)),
        origin_row=pl.lit(1500, dtype=pl.Int64),
        actual=pl.lit(None, dtype=pl.Float64),
        forecast=pl.lit(1e6),
    )
    board = leaderboard(pl.concat([burn_in, unknown]))
    good = oof.filter((pl.col("model") == "good") & ~early)
    assert row(board, "good")["n"] == 18
    assert row(board, "good")["mae"] == pytest.approx(mae(good["actual"], good["forecast"]))
    assert row(leaderboard(oof), "good")["n"] == 20


def test_random_walk_is_added_when_the_oof_lacks_it():
    oof = noisy_oof().filter(pl.col("model") != RANDOM_WALK)
    board = leaderboard(oof)
    assert set(board["model"]) == {RANDOM_WALK, "good", "bad"}
    assert row(board, RANDOM_WALK)["rel_mae"] == 1.0
    assert row(board, "good")["rel_mae"] == row(leaderboard(noisy_oof()), "good")["rel_mae"]


def test_dm_lags_follow_the_origin_spacing_for_long_horizons():
    board = leaderboard(noisy_oof(horizon="12m"))
    good = row(board, "good")
    assert good["dm_lags"] == 10 and good["effective_n"] == 6  # ceil(252 / 25) = 11 per window
    assert (
        row(leaderboard(noisy_oof(horizon="12m"), spacing_days=1511 / 59), "good")["dm_lags"] == 9
    )


def test_by_group_matches_the_leaderboard_on_each_subset():
    oof = noisy_oof().with_columns(
        regime=pl.when(pl.col("origin_row") % 50 == 0)
        .then(pl.lit("bull"))
        .otherwise(pl.lit("bear"))
    )
    table = by_group(oof, "regime")
    assert set(table["regime"]) == {"bull", "bear"}
    for regime in ("bull", "bear"):
        sub = leaderboard(oof.filter(pl.col("regime") == regime), spacing_days=25.0)
        for model in ("good", "bad", RANDOM_WALK):
            got, want = row(table, model, regime=regime), row(sub, model)
            assert got["n"] == want["n"] == 30
            assert got["mae"] == pytest.approx(want["mae"])
            assert got["rel_mae"] == pytest.approx(want["rel_mae"])
    with pytest.raises(ValueError, match="no column"):
        by_group(oof, "missing")


def test_by_move_size_bins_the_realised_move():
    oof = noisy_oof()
    table = by_move_size(oof, bins=3)
    rw = table.filter(pl.col("model") == RANDOM_WALK).sort("move_bin")
    assert rw["n"].to_list() == [20, 20, 20]
    assert rw["move_bin"].str.starts_with("q").all()
    assert rw["mae"].to_list() == sorted(rw["mae"].to_list())  # bigger moves, bigger RW error
    explicit = by_move_size(oof, bins=[0.05])
    assert explicit.filter(pl.col("model") == "good")["n"].sum() == 60


def test_error_by_origin_png_draws_a_png():
    png = error_by_origin_png(noisy_oof().filter(pl.col("model") != RANDOM_WALK), ["good"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    empty = error_by_origin_png(noisy_oof().filter(pl.col("role") == "burn_in"), ["good"])
    assert empty[:4] == b"\x89PNG"
