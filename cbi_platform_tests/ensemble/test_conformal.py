"""Conformal target zones: nominal coverage, ordered quantiles, consistent probabilities, MAPIE."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import polars as pl
import pytest
from mapie.conformity_scores import AbsoluteConformityScore
from mapie.regression import SplitConformalRegressor
from sklearn.base import BaseEstimator, RegressorMixin

from cbi_platform.ensemble import conformal
from cbi_platform.ensemble.conformal import (
    POOLED,
    POOLED_VOL,
    REGIME,
    ZONE_COLUMNS,
    ConformalConfig,
    conformal_zones,
    coverage_report,
    default_band,
    default_statement,
    probability_between,
    probability_statement,
)


def make_forecasts(
    n: int = 500,
    h: int = 5,
    sigma: np.ndarray | float = 0.03,
    seed: int = 0,
    horizon: str = "1w",
) -> pl.DataFrame:
    """Ensemble-shaped forecasts: actual log return = forecast + N(0, sigma) (known noise)."""
    rng = np.random.default_rng(seed)
    days = np.busday_offset("2019-01-01", np.arange(n + h), roll="forward").astype("datetime64[D]")
    price = 45.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    forecast = rng.normal(0.0, 0.01, n)
    y = forecast + rng.normal(0.0, 1.0, n) * np.broadcast_to(sigma, (n,))
    return pl.DataFrame(
        {
            "horizon": horizon,
            "model": "ensemble",
            "origin": days[:n],
            "target_date": days[h : n + h],
            "price": price,
            "actual": price * np.exp(y),
            "forecast": price * np.exp(forecast),
            "forecast_logret": forecast,
            "role": np.where(np.arange(n) < 100, "burn_in", "scored"),
        }
    )


def with_zones(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("p10").is_not_null())


@pytest.fixture(scope="module")
def gaussian_zones() -> pl.DataFrame:
    return conformal_zones(make_forecasts(n=700, seed=1))


def test_coverage_is_near_nominal_on_known_gaussian_noise(gaussian_zones):
    report = coverage_report(gaussian_zones)
    overall = report.filter(pl.col("regime") == "all").row(0, named=True)
    assert overall["n_outcomes"] == 600
    assert 0.85 <= overall["coverage90"] <= 0.95
    assert 0.75 <= overall["coverage80"] <= 0.85
    assert 0.33 <= overall["coverage40"] <= 0.47
    # z(0.95) * 2 * 3% ≈ 9.9% of price for the 90% band
    assert 8.5 < overall["width90_pct"] < 11.5


def test_quantiles_are_ordered(gaussian_zones):
    zones = with_zones(gaussian_zones)
    assert zones.height > 600
    values = zones.select(ZONE_COLUMNS).to_numpy()
    assert np.all(np.diff(values, axis=1) >= 0)
    assert (gaussian_zones.filter(pl.col("p10").is_null())["calibration"] == "insufficient").all()


def test_probabilities_come_from_the_same_calibrated_distribution(gaussian_zones):
    zones = with_zones(gaussian_zones)
    for row in zones.gather_every(50).iter_rows(named=True):
        slack = 2 / (row["n_calibration"] + 1) + 1e-9  # conformal quantiles are conservative
        p90 = probability_between(row["lo90"], row["hi90"], row)
        p80 = probability_between(row["p10"], row["p90"], row)
        p40 = probability_between(row["p30"], row["p70"], row)
        assert 0.9 - 1e-9 <= p90 <= 0.9 + slack
        assert 0.8 - 1e-9 <= p80 <= 0.8 + slack
        assert 0.4 - 1e-9 <= p40 <= 0.4 + slack
        assert probability_between(row["p50"], row["hi90"], row) == pytest.approx(0.45, abs=0.03)
        assert probability_between(0.01, 1e6, row) == 1.0


def test_statement_text():
    row = with_zones(conformal_zones(make_forecasts(n=300))).tail(1).row(0, named=True)
    text = probability_statement(row, 41.5, 44.5, dt.date(2024, 7, 19))
    percent = round(100 * probability_between(41.5, 44.5, row))
    assert text == f"{percent}% probability ZL is between 41.50 and 44.50 c/lb on 2024-07-19"
    assert re.fullmatch(
        r"\d{1,3}% probability ZL is between \d+\.\d{2} and \d+\.\d{2} c/lb on \d{4}-\d{2}-\d{2}",
        default_statement(row),
    )
    assert default_statement(row).endswith(f"on {row['target_date']}")
    lo, hi, prob = default_band(row)
    assert lo <= row["p50"] <= hi
    assert (lo * 2).is_integer() and (hi * 2).is_integer()  # half-cent grid
    assert 0.60 <= prob <= 0.75
    for narrower in [(lo + 0.5, hi), (lo, hi - 0.5)]:  # the narrowest such band around P50
        if narrower[0] <= row["p50"] <= narrower[1]:
            assert probability_between(*narrower, row) < 0.60


def test_regime_conditional_calibration_fixes_coverage_when_noise_differs_by_regime():
    n = 700
    regime = np.where((np.arange(n) // 50) % 2 == 0, "normal", "crisis")
    frame = make_forecasts(n=n, sigma=np.where(regime == "normal", 0.01, 0.05), seed=2)
    context = pl.DataFrame({"origin": frame["origin"], "regime": regime})
    mondrian = conformal_zones(frame, context, ConformalConfig(variants=(POOLED, REGIME)))
    pooled = conformal_zones(frame, context, ConformalConfig(variants=(POOLED,)))

    def by_regime(zones):
        report = coverage_report(zones).filter(pl.col("regime") != "all")
        return dict(zip(report["regime"], report["coverage90"], strict=True))

    pooled_cov, mondrian_cov = by_regime(pooled), by_regime(mondrian)
    assert pooled_cov["normal"] > 0.97 and pooled_cov["crisis"] < 0.85  # one size fits none
    assert all(0.84 <= c <= 0.96 for c in mondrian_cov.values())
    pooled_error = sum(abs(c - 0.9) for c in pooled_cov.values())
    assert sum(abs(c - 0.9) for c in mondrian_cov.values()) < pooled_error / 2
    chosen = mondrian.filter(pl.col("role") == "scored")["calibration"]
    assert (chosen == REGIME).mean() > 0.8


def test_volatility_scaling_is_chosen_when_noise_follows_the_vol_forecast():
    n = 600
    vol = 0.03 * np.exp(0.6 * np.sin(np.arange(n) / 40.0))
    frame = make_forecasts(n=n, sigma=vol, seed=3)
    context = pl.DataFrame({"origin": frame["origin"], "vol_forecast": vol})
    zones = conformal_zones(frame, context, ConformalConfig(variants=(POOLED, POOLED_VOL)))
    scored = zones.filter(pl.col("role") == "scored")
    assert (scored["calibration"] == POOLED_VOL).mean() > 0.7
    high = scored.filter(pl.Series(vol[100:]) > np.quantile(vol, 0.75))
    hit = high.select(pl.col("actual").is_between(pl.col("lo90"), pl.col("hi90")).mean()).item()
    assert hit > 0.82  # pooled zones under-cover the high-vol stretches badly


class _Echo(RegressorMixin, BaseEstimator):
    """An independent pass-through for the check (not the module's own class)."""

    def fit(self, X, y=None):
        self.n_features_in_ = 1
        return self

    def predict(self, X):
        return np.asarray(X, dtype=float)[:, 0]


def test_the_zones_are_what_mapie_returns(gaussian_zones, monkeypatch):
    frame = make_forecasts(n=700, seed=1)
    row = gaussian_zones.filter(pl.col("role") == "scored").row(250, named=True)
    calib = frame.filter(pl.col("target_date") <= row["origin"])
    assert calib.height == row["n_calibration"]
    y = (calib["actual"] / calib["price"]).log().to_numpy()
    mapie = SplitConformalRegressor(
        estimator=_Echo().fit(np.zeros((1, 1))),
        confidence_level=[0.4, 0.8, 0.9],
        conformity_score=AbsoluteConformityScore(sym=False),
        prefit=True,
    ).conformalize(calib["forecast_logret"].to_numpy().reshape(-1, 1), y)
    _, bounds = mapie.predict_interval(np.array([[row["forecast_logret"]]]))
    expected = row["price"] * np.exp(bounds[0])  # rows: lower, upper; columns: 40/80/90%
    got = np.array([[row["p30"], row["p10"], row["lo90"]], [row["p70"], row["p90"], row["hi90"]]])
    np.testing.assert_allclose(got, expected, rtol=1e-12)

    calls = []
    real = conformal.SplitConformalRegressor

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(conformal, "SplitConformalRegressor", spy)
    again = conformal_zones(frame.head(120))
    assert len(calls) == with_zones(again).height > 0  # one MAPIE calibration per zone
    assert all(c["prefit"] is True for c in calls)
    assert all(isinstance(c["estimator"], conformal.PassThroughRegressor) for c in calls)


def test_zones_never_use_a_residual_whose_target_date_is_after_the_origin():
    frame = make_forecasts(n=300, seed=4)
    cut = frame["origin"][200]
    poisoned = frame.with_columns(
        pl.when(pl.col("target_date") > cut)
        .then(pl.col("actual") * 3.0)
        .otherwise(pl.col("actual"))
        .alias("actual")
    )
    cols = ["origin", "calibration", "n_calibration", *ZONE_COLUMNS, "cdf_logret", "cdf_prob"]

    def before(zones):
        return zones.filter(pl.col("origin") <= cut).select(cols)

    clean, dirty = conformal_zones(frame), conformal_zones(poisoned)
    assert before(clean).equals(before(dirty))
    assert not clean.filter(pl.col("origin") > cut + dt.timedelta(days=10))["p90"].equals(
        dirty.filter(pl.col("origin") > cut + dt.timedelta(days=10))["p90"]
    ), "the poison must matter once it is resolved, or this test cannot fail"


def test_coverage_report_counts_independent_outcomes_and_flags_overlap():
    zones = pl.concat(
        [
            conformal_zones(make_forecasts(n=400, h=5, horizon="1w", seed=5)),
            conformal_zones(make_forecasts(n=400, h=252, horizon="12m", seed=6)),
        ]
    )
    report = coverage_report(zones).filter(pl.col("regime") == "all")
    assert report["horizon"].to_list() == ["1w", "12m"]
    weekly, yearly = report.rows(named=True)
    assert weekly["n_outcomes"] == 300
    assert weekly["n_effective"] == pytest.approx(300 / 5, abs=2)  # span / h (+1)
    assert weekly["overlapping"] and "overlap" in weekly["note"]
    assert yearly["n_effective"] <= 2 and yearly["overlapping"]
    last_12m = with_zones(zones.filter(pl.col("horizon") == "12m")).tail(1)
    assert last_12m["n_calibration_independent"].item() < 1.0 < last_12m["n_calibration"].item()
    assert "not meaningful" in yearly["note"]
    assert set(report.columns) >= {
        "coverage80",
        "coverage90",
        "width80_pct",
        "width90_pct",
        "n_effective",
    }
