"""Which version serves, how a candidate is judged, and what `cbi forecast` prints."""

import datetime as dt

import polars as pl
import pytest

from cbi_platform.release.gates import (
    LEAKAGE_CHECKS,
    Decision,
    candidate,
    candidate_from_tags,
    serving_choice,
)
from cbi_platform.serving.store import ForecastStore
from cbi_platform_tests.serving.test_forecast import _record

PROMOTED = Decision(True, ("first ensemble that passes the gates: champion",))
REFUSED = Decision(False, ("90% coverage 0.700 is not within 5% of 0.90",))
REFUSED = Decision(False, REFUSED.reasons, failed_gates=REFUSED.reasons)


def test_the_champion_serves_and_a_version_that_failed_is_provisional_only_without_one():
    assert serving_choice("3", "1", PROMOTED) == ("3", False, ())
    assert serving_choice("3", "1", REFUSED) == ("1", False, ())  # the older champion serves
    assert serving_choice("1", None, REFUSED) == ("1", True, REFUSED.reasons)


def test_a_hand_promoted_champion_that_failed_its_gates_serves_provisional():
    # Issue 18: before, a champion that failed the coverage gate (promoted by hand or by the
    # replay's start) was served with provisional False and no gates.
    failed = ("90% coverage 0.600 on 5 independent outcomes: ...",)
    assert serving_choice("3", "1", REFUSED, failed) == ("1", True, failed)


def test_a_candidate_carries_its_mase_terms_per_scored_origin_and_its_tags_read_back():
    zones = pl.DataFrame(
        {
            "model": ["ensemble"] * 3,
            "role": ["scored", "scored", "live"],
            "origin": [dt.date(2024, 1, 2), dt.date(2024, 2, 2), dt.date(2024, 3, 1)],
            "target_date": [dt.date(2024, 2, 1), dt.date(2024, 3, 1), None],
            "horizon": ["1m"] * 3,
            "price": [40.0, 42.0, 41.0],
            "forecast": [40.0, 42.0, 41.0],
            "actual": [42.0, 41.0, None],
            "naive_scale": [1.0, 2.0, 2.0],
            "regime": ["bull"] * 3,
            **{c: [30.0, 30.0, 30.0] for c in ("lo90", "p10", "p30")},
            **{c: [50.0, 50.0, 50.0] for c in ("p50", "p70", "p90", "hi90")},
        }
    )
    board = pl.DataFrame({"model": ["ensemble"], "mase": [0.9]})
    leakage = {n: True for n in LEAKAGE_CHECKS}
    c = candidate("4", board, zones, leakage)
    assert c.errors == {"2024-01-02": 2.0, "2024-02-02": 0.5}
    assert c.mase == 0.9 and c.coverage90 == 1.0
    import json

    tags = {
        "mase": "0.9",
        "coverage90": "1.0",
        "leakage": json.dumps(leakage),
        "mase_terms": json.dumps(c.errors),
        "coverage90_n_effective": "2",
    }
    assert candidate_from_tags("4", tags) == c
    assert candidate_from_tags("4", {}).leakage == {}  # an old version: gates will refuse it


def test_cbi_forecast_prints_the_point_forecast_p50_reason_and_provisional_flag(
    tmp_path, monkeypatch, capsys
):
    from cbi_platform.cli import main

    monkeypatch.setenv("CBI_HOME", str(tmp_path))
    rec = _record(
        p50=45.32,
        provisional=True,
        failed_gates=["90% coverage 0.700 is not within 5% of 0.90"],
        model_version="cbi-zl-1m/v1",
    )
    ForecastStore(tmp_path / "forecasts.duckdb").append([rec])
    assert main(["forecast"]) == 0
    out = capsys.readouterr().out
    assert "point" in out and "P50" in out and "45.32" in out
    assert "PROVISIONAL" in out
    assert "provisional: failed gate(s): 90% coverage 0.700 is not within 5% of 0.90" in out
    assert "P50 sits 1.32 c/lb above the point forecast" in out
    assert "volatility 5.0% (unknown model)" in out


@pytest.mark.parametrize("missing", ["as_of", "model_version"])
def test_the_history_refuses_rows_without_their_key(tmp_path, missing):
    with pytest.raises(ValueError, match=missing):
        ForecastStore(tmp_path / "f.duckdb").append([{**_record(), missing: None}])
