"""The leakage gates pass honest features and fail planted look-aheads, each for its reason."""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cbi_platform.features.build import FeatureResult, build_features
from cbi_platform.features.contract import HORIZONS
from cbi_platform.features.leakage import (
    CORRELATION_CAP,
    CORRELATION_FLOOR,
    LEAKAGE_GATES,
    GateResult,
    asof_gate,
    correlation_threshold,
    forward_shift_gate,
    run_leakage_gates,
    target_correlation_gate,
    truncation_gate,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _with_feature(build_leak):
    """A builder that adds `f_leak` computed by build_leak on the honest frame."""

    def build(prices: pl.DataFrame, horizon: str) -> FeatureResult:
        honest = build_features(prices, horizon)
        frame = honest.frame.with_columns(build_leak().alias("f_leak"))
        return FeatureResult(frame, honest.notices, honest.dropped)

    return build


def _cot_joined_on_date(prices: pl.DataFrame) -> pl.DataFrame:
    """What a join on `date` sees: COT as if known on its Tuesday as-of date."""
    is_cot = pl.col("symbol") == "COT_ZL"
    return prices.with_columns(
        pl.when(is_cot).then(pl.col("date")).otherwise(pl.col("published_at")).alias("published_at")
    )


def _assert_json_evidence(result: GateResult) -> None:
    assert isinstance(result.summary, str) and result.summary
    json.dumps(result.evidence)


@pytest.mark.parametrize("horizon", list(HORIZONS))
def test_honest_features_pass_every_gate(prices, horizon):
    frame = build_features(prices, horizon).frame
    results = {
        "truncation": truncation_gate(prices, horizon),
        "forward_shift": forward_shift_gate(frame, prices),
        "correlation": target_correlation_gate(frame),
        "asof": asof_gate(frame, prices),
    }
    for name, result in results.items():
        _assert_json_evidence(result)
        assert result.passed, (name, result.summary, result.evidence)
    assert results["truncation"].evidence["columns_checked"] >= 40
    assert len(results["asof"].evidence["columns_checked"]) == 20


@pytest.mark.parametrize(
    "leak",
    [
        lambda: pl.col("price").rolling_mean(5, center=True),
        lambda: pl.col("price").shift(-1),
    ],
    ids=["centered_rolling_mean", "shift_minus_1"],
)
def test_truncation_gate_fails_on_a_builder_that_reads_ahead(prices, leak):
    result = truncation_gate(prices, "1m", build=_with_feature(leak))
    _assert_json_evidence(result)
    assert not result.passed
    assert result.evidence["offending_columns"] == ["f_leak"]
    offender = result.evidence["offenders"][0]
    assert offender["dates"][-1] <= offender["cut"] and offender["truncated"][-1] is None


def test_truncation_gate_fails_on_a_builder_that_joins_cot_on_date(prices):
    def build(data: pl.DataFrame, horizon: str) -> FeatureResult:
        return build_features(_cot_joined_on_date(data), horizon)

    wednesday = dt.date(2018, 6, 13)
    result = truncation_gate(prices, "1m", build=build, cut_dates=[wednesday])
    assert not result.passed
    assert set(result.evidence["offending_columns"]) == {"f_cot_zl_net", "f_cot_zl_chg4"}
    assert truncation_gate(prices, "1m", cut_dates=[wednesday]).passed
    assert not truncation_gate(prices, "1m", build=build).passed  # default cuts: mixed weekdays


def test_truncation_examines_the_given_frame_not_a_rebuild(prices):
    honest = build_features(prices, "1m").frame
    assert truncation_gate(prices, "1m", frame=honest).passed
    # a column the builder never makes, present before the cuts: the rebuilds lack it
    planted = honest.with_columns(f_planted=pl.col("target_logret") + 0.0)
    result = truncation_gate(prices, "1m", frame=planted)
    assert not result.passed
    assert result.evidence["offending_columns"] == ["f_planted"]
    assert result.evidence["offenders"][0]["truncated"] == [None] * 5
    # ... unless it is null on every row up to the last cut
    last_cut = max(dt.date.fromisoformat(c) for c in result.evidence["cuts"])
    late = honest.with_columns(
        f_late=pl.when(pl.col("date") > last_cut).then(pl.col("price")).otherwise(None)
    )
    assert truncation_gate(prices, "1m", frame=late).passed


def test_one_runner_runs_the_gates_for_the_target(prices):
    frame = build_features(prices, "1m").frame
    results = run_leakage_gates(frame, prices, "1m", "ZL")
    assert list(results) == list(LEAKAGE_GATES)
    assert all(r.passed for r in results.values()), {k: r.summary for k, r in results.items()}
    planted = frame.with_columns(f_leak=pl.col("target_logret") + 0.0)
    leaky = run_leakage_gates(planted, prices, "1m", "ZL")
    assert [name for name, r in leaky.items() if not r.passed] == [
        "forward_shift",
        "target_correlation",
        "truncation",
    ]
    only = run_leakage_gates(planted, None, "1m", None, gates=["target_correlation"])
    assert list(only) == ["target_correlation"] and not only["target_correlation"].passed
    with pytest.raises(ValueError, match="need prices"):
        run_leakage_gates(frame, None, "1m", "ZL", gates=["asof"])
    with pytest.raises(ValueError, match="need the target"):
        run_leakage_gates(frame, prices, "1m", None, gates=["truncation"])
    with pytest.raises(ValueError, match="unknown leakage gate"):
        run_leakage_gates(frame, prices, "1m", "ZL", gates=["peek"])


def test_the_runner_checks_the_joins_of_a_non_zl_target(prices):
    zs_prices = prices.with_columns(
        symbol=pl.when(pl.col("symbol") == "COT_ZL").then(pl.lit("COT_ZS")).otherwise("symbol")
    )
    frame = build_features(zs_prices, "1w", target="ZS").frame
    results = run_leakage_gates(frame, zs_prices, "1w", "ZS", gates=["asof", "truncation"])
    assert all(r.passed for r in results.values())
    assert {"f_cot_zs_net", "f_cot_zs_chg4"} <= set(results["asof"].evidence["columns_checked"])


def test_forward_shift_gate_fails_on_the_target_itself(prices):
    frame = build_features(prices, "1m").frame.with_columns(f_leak=pl.col("target_logret"))
    result = forward_shift_gate(frame, prices)
    _assert_json_evidence(result)
    assert not result.passed
    assert result.evidence["offending_columns"] == ["f_leak"]
    assert "target_logret" in {o["equals"] for o in result.evidence["offenders"]}


def test_forward_shift_gate_fails_on_the_next_day_return(prices):
    frame = build_features(prices, "1w").frame
    next_day = (pl.col("price").shift(-1) / pl.col("price")).log()
    result = forward_shift_gate(frame.with_columns(f_leak=next_day), prices)
    assert not result.passed
    assert result.evidence["offending_columns"] == ["f_leak"]
    assert "ZL.logret1.shift(-1)" in {o["equals"] for o in result.evidence["offenders"]}


def test_forward_shift_gate_fails_on_a_driver_level_from_the_future(prices):
    frame = build_features(prices, "1m").frame
    zs = prices.filter(pl.col("symbol") == "ZS").select("date", pl.col("value").alias("zs"))
    leaky = (
        frame.join(zs, on="date", how="left").with_columns(f_leak=pl.col("zs").shift(-3)).drop("zs")
    )
    result = forward_shift_gate(leaky, prices)
    assert not result.passed
    assert "ZS.level.shift(-3)" in {o["equals"] for o in result.evidence["offenders"]}


def test_correlation_gate_fails_a_noisy_look_ahead(prices):
    frame = build_features(prices, "1m").frame
    spread = frame["target_logret"].std()
    noise = np.random.default_rng(7).normal(0.0, 0.5 * spread, frame.height)
    leaky = frame.with_columns(f_leak=pl.col("target_logret") + pl.Series(noise))
    result = target_correlation_gate(leaky)
    _assert_json_evidence(result)
    assert not result.passed
    assert [o["column"] for o in result.evidence["offenders"]] == ["f_leak"]
    assert result.evidence["offenders"][0]["corr"] > 0.8
    assert target_correlation_gate(frame).passed


def test_correlation_threshold_scales_with_effective_sample_size():
    assert correlation_threshold(100_000, 5) == CORRELATION_FLOOR
    assert correlation_threshold(1_000, 252) == CORRELATION_CAP
    middle = correlation_threshold(6_000, 252)  # ~24 independent 12m returns
    assert CORRELATION_FLOOR < middle < CORRELATION_CAP
    assert middle == pytest.approx(4.0 / np.sqrt(6_000 / 252))
    assert correlation_threshold(6_000, 126) < middle


def test_asof_gate_fails_when_cot_is_joined_on_date(prices):
    leaky = build_features(_cot_joined_on_date(prices), "1m").frame
    result = asof_gate(leaky, prices)
    _assert_json_evidence(result)
    assert not result.passed
    assert set(result.evidence["offending_rows_per_column"]) == {"f_cot_zl_net", "f_cot_zl_chg4"}
    weekdays = {
        dt.date.fromisoformat(o["date"]).weekday()
        for o in result.evidence["offenders"]
        if o["column"] == "f_cot_zl_net"
    }
    assert weekdays <= {1, 2, 3, 4}  # Tuesday as-of day to Friday release: never Monday


def test_asof_gate_fails_on_a_driver_return_that_is_one_day_early(prices):
    frame = build_features(prices, "1w").frame
    shifted = frame.with_columns(pl.col("f_zs_ret5").shift(-1))
    result = asof_gate(shifted, prices)
    assert not result.passed
    assert list(result.evidence["offending_rows_per_column"]) == ["f_zs_ret5"]


def _real_prices() -> pl.DataFrame:
    manifest = REPO_ROOT / "manifests" / "shared_data.yaml"
    data_root = REPO_ROOT.parent / "shared" / "data"
    try:
        files = importlib.import_module("cbi_platform.market.files")
    except ImportError:
        pytest.skip("cbi_platform.market.files is not there yet")
    loader = getattr(files, "load_files_source", None)
    if loader is None or not manifest.exists() or not data_root.exists():
        pytest.skip("needs load_files_source, manifests/shared_data.yaml and ../shared/data")
    if len(inspect.signature(loader).parameters) == 0:
        pytest.skip("load_files_source takes no manifest argument: adapt this test")
    loaded = loader(manifest)
    return loaded.prices if hasattr(loaded, "prices") else loaded


def test_honest_features_pass_every_gate_on_real_data_at_1m():
    prices = _real_prices()
    frame = build_features(prices, "1m").frame
    assert frame.height > 1000
    for result in (
        truncation_gate(prices, "1m"),
        forward_shift_gate(frame, prices),
        target_correlation_gate(frame),
        asof_gate(frame, prices),
    ):
        assert result.passed, (result.summary, result.evidence)
