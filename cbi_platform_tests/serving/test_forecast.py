import datetime as dt
import math
import subprocess
import sys

import duckdb
import polars as pl
import pytest

from cbi_platform.ensemble.conformal import probability_between
from cbi_platform.serving.calibration import pit_values
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
    extra = {
        k: kw.pop(k)
        for k in ("past_pit", "provisional", "failed_gates", "drivers_detail", "model_version")
        if k in kw
    }
    extra.setdefault("model_version", "cbi-zl-1m/v1")
    return assemble_forecast(
        {**ZONE, **kw},
        **extra,
        horizon="1m",
        horizon_days=21,
        regime="bull",
        regime_outlook={"bull": 0.6, "normal": 0.4},
        drivers=["x"],
        volatility=0.05,
        data_reference_date=dt.date(2024, 6, 25),
    )


def test_record_has_statement_freshness_and_target_date():
    rec = _record()
    assert rec["target_date"] == dt.date(2024, 7, 22)  # 21 business days after the origin
    # No past resolved forecast: the band's nominal level is labelled as such, not stated.
    assert rec["band_probability"] is None and rec["band_resolved"] == 0
    assert "nominal" in rec["statement"] and "not yet checked" in rec["statement"]
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
    assert latest["forecast"][0] == 44.0 and latest["drivers"][0] == ["x"]
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


def _past_zones(outcomes: list[float]) -> pl.DataFrame:
    """Resolved past rows of the series with the live row's CDF; outcomes are log returns."""
    origins = [dt.date(2023, 1, 2) + dt.timedelta(days=7 * i) for i in range(len(outcomes))]
    return pl.DataFrame(
        {
            "origin": origins,
            "target_date": [o + dt.timedelta(days=30) for o in origins],
            "price": [44.0] * len(outcomes),
            "actual": [44.0 * math.exp(y) for y in outcomes],
            "cdf_logret": [ZONE["cdf_logret"]] * len(outcomes),
            "cdf_prob": [ZONE["cdf_prob"]] * len(outcomes),
        }
    )


def test_the_stated_probability_is_the_achieved_rate_not_the_nominal():
    """Past coverage is deliberately poor: 15 of 20 outcomes landed far in the upper tail."""
    pit = pit_values(_past_zones([0.07] * 15 + [0.0] * 5), before=ZONE["origin"])
    assert len(pit) == 20
    rec = _record(past_pit=pit)
    assert rec["band_hits"] == 5 and rec["band_resolved"] == 20
    assert rec["band_probability"] == 0.25
    nominal = probability_between(rec["band_lo"], rec["band_hi"], ZONE)
    assert rec["band_probability_nominal"] == pytest.approx(nominal) and nominal > 0.5
    assert rec["statement"].startswith("25% probability ZL is between")
    assert "held in 5 of 20 past resolved forecasts; nominal " in rec["statement"]
    assert f"nominal {nominal:.0%}" in rec["statement"]


def test_pit_values_use_only_forecasts_resolved_before_the_live_origin():
    zones = _past_zones([0.0] * 4)
    assert len(pit_values(zones, before=dt.date(2023, 1, 2))) == 0
    assert len(pit_values(zones, before=dt.date(2023, 2, 5))) == 1  # one target known by then
    assert pit_values(zones) == pytest.approx([0.5] * 4)


def test_p50_and_the_point_forecast_are_shown_with_the_reason_they_differ():
    rec = _record(p50=45.32, forecast=44.0)
    assert rec["p50_note"] == (
        "P50 sits 1.32 c/lb above the point forecast: past errors at this horizon were "
        "skewed up by a median of +3.0%"
    )
    assert "below" in _record(p50=43.0)["p50_note"]
    assert "equals" in _record()["p50_note"]


def test_a_provisional_forecast_says_so_with_its_failing_gates():
    rec = _record(provisional=True, failed_gates=["90% coverage 0.700 is not within 5% of 0.90"])
    assert rec["provisional"] and rec["failed_gates"] == [
        "90% coverage 0.700 is not within 5% of 0.90"
    ]
    assert rec["statement"].startswith(
        "PROVISIONAL (the served version failed the promotion gates or cannot serve: 90%"
    )


OLD_DDL = """
CREATE SCHEMA IF NOT EXISTS cbi;
CREATE TABLE IF NOT EXISTS cbi.forecast_history (
    as_of DATE, horizon VARCHAR, model_version VARCHAR, target_date DATE,
    price DOUBLE, forecast DOUBLE, p10 DOUBLE, p30 DOUBLE, p50 DOUBLE, p70 DOUBLE, p90 DOUBLE,
    lo90 DOUBLE, hi90 DOUBLE, band_lo DOUBLE, band_hi DOUBLE, band_probability DOUBLE,
    statement VARCHAR, regime VARCHAR, regime_outlook VARCHAR, drivers VARCHAR,
    volatility DOUBLE, combiner VARCHAR, shrink_weight DOUBLE, data_last_date DATE,
    data_reference_date DATE, data_business_days_behind INTEGER, created_at TIMESTAMP,
    PRIMARY KEY (as_of, horizon, model_version)
);
"""


def test_an_existing_history_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "forecasts.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(OLD_DDL)
        con.execute(
            "INSERT INTO cbi.forecast_history (as_of, horizon, model_version, drivers, created_at)"
            " VALUES ('2024-06-20', '1m', 'cbi-zl-1m/v1', '[]', '2024-06-20 10:00:00')"
        )
    store = ForecastStore(path)
    assert store.history()["provisional"].to_list() == [None]  # read before migrating
    detail = [{"feature": "f_zl_ret21", "value": 0.05, "contribution_pct": 1.2}]
    rec = _record(provisional=True, failed_gates=["MASE undefined"], drivers_detail=detail)
    assert store.append([rec]) == 1
    history = store.history()
    assert history.height == 2 and history["provisional"].to_list() == [None, True]
    latest = store.latest().row(0, named=True)
    assert latest["failed_gates"] == ["MASE undefined"] and latest["drivers_detail"] == detail
    assert latest["band_probability_nominal"] is not None


def test_readers_never_open_the_database_file(tmp_path):
    path = tmp_path / "forecasts.duckdb"
    store = ForecastStore(path)
    assert store.history().height == 0 and store.latest().height == 0
    assert not path.exists()  # a reader never creates the file
    store.append([_record()])
    # Another process holds the DuckDB file for writing: readers still work (snapshot) ...
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            f"con = duckdb.connect({str(path)!r})\n"
            "print('open', flush=True)\n"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        assert store.history().height == 1 and store.latest()["horizon"][0] == "1m"
        # ... which they could not if they opened the file, even read-only.
        with pytest.raises(duckdb.IOException):
            duckdb.connect(str(path), read_only=True)
    finally:
        holder.kill()
        holder.wait()
