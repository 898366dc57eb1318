import datetime as dt

import polars as pl

from cbi_platform.serving.drivers import forecast_drivers, member_signals
from cbi_platform.serving.forecast import assemble_forecast
from cbi_platform.serving.store import ForecastStore

ZONE = {
    "origin": dt.date(2024, 6, 21),
    "target_date": None,
    "price": 44.0,
    "forecast": 44.0,
    "lo90": 41.0,
    "p10": 41.8,
    "p30": 43.2,
    "p50": 44.0,
    "p70": 44.8,
    "p90": 46.2,
    "hi90": 47.0,
    "cdf_logret": [-0.08, -0.05, -0.018, 0.0, 0.018, 0.05, 0.08],
    "cdf_prob": [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0],
    "combiner": "inverse_error",
    "shrink_weight": 0.3,
}


def _record(**kw):
    return assemble_forecast(
        {**ZONE, **kw},
        horizon="1m",
        horizon_days=21,
        model_version="cbi-zl-1m/v1",
        regime="bull",
        regime_outlook={"bull": 0.6, "normal": 0.4},
        drivers=["x"],
        volatility=0.05,
        data_reference_date=dt.date(2024, 6, 25),
    )


def test_record_has_statement_freshness_and_target_date():
    rec = _record()
    assert rec["target_date"] == dt.date(2024, 7, 22)  # 21 business days after the origin
    assert rec["statement"].startswith(f"{rec['band_probability']:.0%} probability ZL is between")
    assert rec["band_lo"] < rec["p50"] < rec["band_hi"]
    assert rec["data_business_days_behind"] == 2
    assert rec["regime_outlook"] == "bull 60%, normal 40%"


def test_uncalibrated_zone_says_so_instead_of_inventing_a_band():
    rec = _record(p10=None, p90=None, lo90=None, hi90=None, p50=None, n_calibration=12)
    assert rec["band_probability"] is None and "no calibrated zone" in rec["statement"]


def test_store_is_append_only(tmp_path):
    store = ForecastStore(tmp_path / "f.duckdb")
    rec = _record()
    assert store.append([rec]) == 1
    assert store.append([{**rec, "forecast": 99.0}]) == 0  # same key: kept as issued
    latest = store.latest()
    assert latest["forecast"][0] == 44.0 and latest["drivers"][0].to_list() == ["x"]
    assert store.append([{**rec, "model_version": "cbi-zl-1m/v2"}]) == 1
    assert store.history().height == 2


SHAP = pl.DataFrame(
    {
        "horizon": ["1m"] * 4,
        "origin": [dt.date(2024, 6, 21)] * 4,
        "model": ["a", "a", "b", "b"],
        "feature": ["f_zl_ret21", "f_zl_vol21"] * 2,
        "value": [0.05, 0.2, 0.05, 0.2],
        "shap": [0.02, -0.001, -0.01, 0.0],
        "base": [0.0] * 4,
    }
)


def test_drivers_follow_the_linear_weights_and_say_when_the_ensemble_is_the_random_walk():
    weights = pl.DataFrame(
        {
            "horizon": ["1m"] * 2,
            "origin": [dt.date(2024, 6, 21)] * 2,
            "model": ["a", "random_walk"],
            "weight": [0.5, 0.5],
            "weight_kind": ["linear"] * 2,
        }
    )
    lines, note = forecast_drivers(SHAP, weights, "1m")
    assert note.startswith("exact") and "21-day" in lines[0] and "up" in lines[0]
    rw_only = weights.with_columns(weight=pl.Series([0.0, 1.0]))
    lines, note = forecast_drivers(SHAP, rw_only, "1m")
    assert lines == [] and "random walk" in note
    board = pl.DataFrame({"model": ["a", "b"], "rel_mae": [1.05, 1.02]})
    signals = member_signals(SHAP, board, "1m")
    assert signals and "not used: b" in signals[0] and "down" in signals[0]
