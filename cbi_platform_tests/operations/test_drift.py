"""Drift monitor: PSI/KS per feature, prediction drift, driver rank drift and the condition."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest

from cbi_platform.conditions import DRIFT
from cbi_platform.operations.drift import (
    DriftSettings,
    drift_conditions,
    driver_drift_breached,
    driver_rank_drift,
    feature_drift,
    prediction_drift,
    psi,
    split_reference_current,
)

AS_OF = dt.date(2024, 6, 21)


def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- psi


def test_psi_is_zero_for_identical_and_small_for_same_distribution():
    rng = _rng()
    x = rng.standard_normal(5000)
    assert psi(x, x) == pytest.approx(0.0, abs=1e-12)
    assert psi(x, rng.standard_normal(5000)) < 0.02


def test_psi_grows_with_the_shift():
    rng = _rng()
    ref = rng.standard_normal(20_000)
    values = [psi(ref, rng.standard_normal(20_000) + d) for d in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values)
    assert values[1] > 0.15  # ~0.23: near the "major shift" level
    assert values[2] > 0.7  # ~0.9
    assert values[3] > 2.0


def test_psi_detects_a_change_of_spread_with_the_same_mean():
    rng = _rng()
    assert psi(rng.standard_normal(5000), 3 * rng.standard_normal(5000)) > 0.5


def test_psi_bins_discrete_and_constant_features_by_value():
    # 5% ones in the reference: deciles are all 0, so quantile bins alone would merge 0 and 1
    ref = np.r_[np.zeros(95), np.ones(5)]
    assert psi(ref, np.r_[np.zeros(95), np.ones(5)]) == pytest.approx(0.0)
    assert psi(ref, np.r_[np.zeros(50), np.ones(50)]) > 0.5
    # a constant reference: anything different, above or below, is drift
    assert psi(np.zeros(100), np.zeros(100)) == pytest.approx(0.0)
    assert psi(np.zeros(100), np.ones(100)) > 5
    assert psi(np.zeros(100), -np.ones(100)) > 5


def test_psi_ignores_non_finite_values_and_is_nan_when_empty():
    rng = _rng()
    x = rng.standard_normal(1000)
    dirty = np.r_[x, np.nan, np.inf, -np.inf]
    assert psi(dirty, x) == pytest.approx(psi(x, x))
    assert psi(pl.Series([1.0, None, 2.0] * 10), pl.Series([1.0, 2.0] * 10)) == pytest.approx(0.0)
    assert np.isnan(psi([], x))


# ---------------------------------------------------------------- features


def _frames(seed: int = 3) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = _rng(seed)
    n_ref, n_cur = 756, 63
    sparse_cur = np.full(n_cur, np.nan)
    sparse_cur[:10] = 1.0
    reference = pl.DataFrame(
        {
            "stable": rng.standard_normal(n_ref),
            "shifted": rng.standard_normal(n_ref),
            "dirty": rng.standard_normal(n_ref),
            "sparse": rng.standard_normal(n_ref),
            "name": ["a"] * n_ref,
        }
    )
    dirty = rng.standard_normal(n_cur) + 2.0
    dirty[:5] = np.inf
    current = pl.DataFrame(
        {
            "stable": rng.standard_normal(n_cur),
            "shifted": rng.standard_normal(n_cur) + 1.5,
            "dirty": dirty,
            "sparse": sparse_cur,
            "name": ["b"] * n_cur,
        }
    ).with_columns(pl.col("dirty").fill_nan(None))
    return reference, current


def test_feature_drift_flags_shifted_features_and_explains_skipped_ones():
    reference, current = _frames()
    features = ["stable", "shifted", "dirty", "sparse", "name", "absent"]
    table = feature_drift(reference, current, features, DriftSettings())
    assert table.columns == [
        "feature",
        "psi",
        "ks_stat",
        "ks_pvalue",
        "n_reference",
        "n_current",
        "drifted",
        "reason",
    ]
    assert table["feature"].to_list() == features
    rows = {r["feature"]: r for r in table.iter_rows(named=True)}

    assert rows["stable"]["drifted"] is False
    assert rows["stable"]["psi"] < 0.25 and rows["stable"]["ks_pvalue"] > 0.01

    shifted = rows["shifted"]
    assert shifted["drifted"] is True
    assert shifted["psi"] > 1.0  # a 1.5 sd shift
    assert shifted["ks_stat"] > 0.4 and shifted["ks_pvalue"] < 1e-6  # KS detects the shift

    # infinities (5) are ignored, not binned
    assert rows["dirty"]["n_current"] == 58 and rows["dirty"]["drifted"] is True

    for name, words in (("sparse", "min_rows"), ("name", "not numeric"), ("absent", "missing")):
        assert rows[name]["drifted"] is None and rows[name]["psi"] is None
        assert words in rows[name]["reason"]
    assert rows["sparse"]["n_current"] == 10


def test_feature_drift_requires_both_psi_and_ks():
    # a pure-noise quarter that happens to have PSI above the threshold is not called drift
    # when KS disagrees; a loose KS threshold (p < 1) leaves PSI alone to decide
    reference, current = _frames()
    strict = feature_drift(reference, current, ["stable"], DriftSettings(psi_threshold=0.0))
    assert strict["drifted"].to_list() == [False]
    loose = DriftSettings(psi_threshold=0.0, ks_pvalue=0.999999)
    assert feature_drift(reference, current, ["stable"], loose)["drifted"].to_list() == [True]


def test_split_reference_current_takes_the_last_rows_by_date():
    frame = pl.DataFrame(
        {"date": pl.date_range(dt.date(2020, 1, 1), dt.date(2020, 12, 31), eager=True)}
    ).with_row_index("i")
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=1)
    ref, cur = split_reference_current(shuffled, DriftSettings(reference_rows=100, current_rows=30))
    assert cur["i"].to_list() == list(range(336, 366))
    assert ref["i"].to_list() == list(range(236, 336))


# ---------------------------------------------------------------- predictions


def test_prediction_drift():
    rng = _rng(11)
    ref = rng.normal(0.0, 0.02, 756)
    same = prediction_drift(ref, rng.normal(0.0, 0.02, 63), DriftSettings())
    assert same["drifted"] is False
    assert abs(same["mean_shift_sd"]) < 0.5
    moved = prediction_drift(ref, rng.normal(0.02, 0.02, 63), DriftSettings())
    assert moved["drifted"] is True
    assert moved["mean_shift_sd"] == pytest.approx(1.0, abs=0.35)
    assert moved["psi"] > 0.25 and moved["ks_pvalue"] < 0.01
    short = prediction_drift(ref, ref[:5] + 1, DriftSettings())
    assert short["drifted"] is None and "min_rows" in short["reason"]


# ---------------------------------------------------------------- drivers


def _contributions(n_days: int, swap_last: int, n_features: int = 10) -> pl.DataFrame:
    """Feature i has importance ~ (n_features - i); the last `swap_last` days reverse it."""
    rng = _rng(5)
    days = pl.date_range(dt.date(2024, 1, 1), dt.date(2024, 12, 31), "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5).head(n_days).to_list()
    rows = []
    for d, day in enumerate(days):
        reversed_ = d >= n_days - swap_last
        for i in range(n_features):
            scale = (i + 1) if reversed_ else (n_features - i)
            sign = 1 if rng.random() < 0.5 else -1  # |contribution| is what ranks
            value = sign * scale * (1 + 0.2 * rng.standard_normal())
            rows.append({"as_of": day, "feature": f"f{i}", "contribution": value})
    return pl.DataFrame(rows)


def test_driver_rank_drift_is_stable_without_change():
    settings = DriftSettings(driver_window=21, top_k=5)
    frame = driver_rank_drift(_contributions(21 * 4 + 7, swap_last=0), settings)
    assert frame.height == 4  # the 7 oldest days (an incomplete block) are dropped
    assert frame["n_days"].to_list() == [21] * 4
    assert frame["top_features"][-1].to_list() == ["f0", "f1", "f2", "f3", "f4"]
    assert frame["overlap"][0] is None and frame["rank_corr"][0] is None
    assert frame["overlap"][1:].to_list() == [1.0] * 3
    assert min(frame["rank_corr"][1:].to_list()) > 0.9
    assert driver_drift_breached(frame, settings) is False


def test_driver_rank_drift_detects_a_swap_of_top_drivers():
    settings = DriftSettings(driver_window=21, top_k=5)
    frame = driver_rank_drift(_contributions(21 * 4, swap_last=21), settings)
    last = frame.row(frame.height - 1, named=True)
    assert last["top_features"] == ["f9", "f8", "f7", "f6", "f5"]
    assert last["overlap"] == 0.0
    assert last["rank_corr"] < -0.9
    assert driver_drift_breached(frame, settings) is True
    # the swap is in the latest block only: the block before was stable
    assert frame["overlap"][-2] == 1.0
    assert driver_drift_breached(frame.head(3), settings) is False


def test_driver_rank_drift_with_too_few_days_is_empty():
    frame = driver_rank_drift(_contributions(10, swap_last=0), DriftSettings(driver_window=21))
    assert frame.height == 0
    assert driver_drift_breached(frame) is False


# ---------------------------------------------------------------- condition


def _feature_table(n_features: int, n_drifted: int) -> pl.DataFrame:
    rng = _rng(1)
    ref = {f"x{i}": rng.standard_normal(756) for i in range(n_features)}
    shift = [2.0 if i < n_drifted else 0.0 for i in range(n_features)]
    cur = {f"x{i}": rng.standard_normal(63) + shift[i] for i in range(n_features)}
    return feature_drift(pl.DataFrame(ref), pl.DataFrame(cur), list(ref))


def test_drift_condition_quiet_when_nothing_drifts():
    settings = DriftSettings()
    rng = _rng(2)
    ref = rng.normal(size=756)
    prediction = prediction_drift(ref, rng.normal(size=63), settings)
    drivers = driver_rank_drift(_contributions(84, swap_last=0), settings)
    [cond] = drift_conditions("1m", AS_OF, _feature_table(8, 1), prediction, drivers, settings)
    assert cond.key == "drift/1m" and cond.kind == DRIFT and cond.horizon == "1m"
    assert cond.firing is False and cond.as_of == AS_OF
    assert cond.evidence["fired"] == []
    assert cond.evidence["features"]["drifted"] == 1  # 1 of 8 < 25%
    json.dumps(cond.evidence)  # JSON-ready


def test_drift_condition_fires_on_a_quarter_of_features_and_lists_them():
    settings = DriftSettings()
    [cond] = drift_conditions("1w", AS_OF, _feature_table(8, 2), None, None, settings, link="r1")
    assert cond.firing is True and cond.link == "r1"
    feats = cond.evidence["features"]
    assert feats["judged"] == 8 and feats["drifted"] == 2 and feats["share"] == 0.25
    top = feats["top"]
    assert {t["feature"] for t in top[:2]} == {"x0", "x1"}  # drifted first, by PSI
    assert top[0]["psi"] >= top[1]["psi"]
    assert all(t["drifted"] for t in top[:2]) and not any(t["drifted"] for t in top[2:])
    assert top[0]["psi"] > 1 and top[0]["ks_pvalue"] < 0.01 and "ks_stat" in top[0]
    assert len(top) == settings.evidence_features
    assert cond.evidence["fired"] == ["features"]
    assert "2/8 features drifted" in cond.title
    json.dumps(cond.evidence)


def test_drift_condition_fires_on_predictions_or_drivers_alone():
    settings = DriftSettings()
    rng = _rng(4)
    moved = prediction_drift(rng.normal(size=756), rng.normal(size=63) + 1.5, settings)
    [cond] = drift_conditions("3m", AS_OF, _feature_table(8, 0), moved, None, settings)
    assert cond.firing is True and cond.evidence["fired"] == ["prediction"]
    assert cond.evidence["prediction"]["mean_shift_sd"] > 1

    swapped = driver_rank_drift(_contributions(84, swap_last=21), settings)
    [cond] = drift_conditions("6m", AS_OF, None, None, swapped, settings)
    assert cond.firing is True and cond.evidence["fired"] == ["drivers"]
    drivers = cond.evidence["drivers"]
    assert drivers["overlap"] == 0.0 and drivers["previous_top_features"][0] == "f0"
    json.dumps(cond.evidence)

    [cond] = drift_conditions("12m", AS_OF, None, None, None, settings)
    assert cond.firing is False and "nothing monitored" in cond.title


def test_settings_are_validated():
    with pytest.raises(ValueError):
        DriftSettings(min_drifted_share=0)
    with pytest.raises(ValueError):
        DriftSettings(psi_bins=1)
