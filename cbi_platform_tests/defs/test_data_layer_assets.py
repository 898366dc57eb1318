"""Materialize the data layer in-process on a small manifest; bad input leaves tables intact."""

import dagster as dg
import duckdb
import polars as pl

from cbi_platform.defs.features.assets import features
from cbi_platform.defs.pipeline import MARKET, MONITOR_CHECKS, NEWS
from cbi_platform.defs.regimes.assets import regime_calendar, regime_datasets
from cbi_platform.runner import materialize
from cbi_platform_tests.conftest import file_resources

DATA = (MARKET | NEWS | dg.AssetSelection.assets(regime_calendar)) - MONITOR_CHECKS
FEATURES = dg.AssetSelection.assets(features, regime_datasets)


def _materialize(resources, partition=None, raise_on_error=True):
    return materialize(
        DATA if partition is None else FEATURES,
        partition,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def _table(home, name):
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(f"select * from cbi.{name}").pl()


def test_market_and_features_materialize_with_checks(small_manifest, tmp_path):
    home = tmp_path / "home"
    resources = file_resources(small_manifest, home)
    result = _materialize(resources)
    assert result.success
    assert {e.check_name for e in result.get_asset_check_evaluations()} >= {"market_prices_schema"}
    result = _materialize(resources, "1m")
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(e.passed for name, e in evaluations.items() if name.startswith("features_leakage"))
    features = _table(home, "features")
    assert set(features["horizon"].unique()) == {"1m"}
    assert features.filter(pl.col("target_price").is_null()).height == 21
    assert (home / "regime_datasets" / "1m" / "historical.parquet").exists()


def test_bad_rematerialization_keeps_last_good_tables(small_manifest, tmp_path):
    home = tmp_path / "home"
    resources = file_resources(small_manifest, home)
    assert _materialize(resources).success
    before = _table(home, "market_prices")
    zl = small_manifest.parent / "zl.csv"
    lines = zl.read_text().splitlines()
    lines.insert(100, lines[99])  # a duplicated date
    zl.write_text("\n".join(lines) + "\n")
    result = _materialize(resources, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.cause.message
    assert "zl.csv" in message and "duplicate" in message.lower()
    after = _table(home, "market_prices")
    assert after.equals(before)


def test_planted_look_ahead_feature_is_blocked(small_manifest, tmp_path, monkeypatch):
    import cbi_platform.defs.features.assets as feature_assets
    from cbi_platform.features.build import FeatureResult, build_features

    def leaky(prices, horizon, target="ZL", **inputs):  # inputs: news_sentiment if enabled
        honest = build_features(prices, horizon, target=target, **inputs)
        frame = honest.frame.with_columns(f_leak=pl.col("target_logret") + 0.0)
        return FeatureResult(frame, honest.notices, honest.dropped)

    monkeypatch.setattr(feature_assets, "build_features", leaky)
    home = tmp_path / "home"
    resources = file_resources(small_manifest, home)
    assert _materialize(resources).success
    result = _materialize(resources, "1w", raise_on_error=False)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["features_leakage_forward_shift"].passed
    assert not evaluations["features_leakage_target_correlation"].passed
    # Truncation examines the materialized table: the honest rebuilds lack f_leak, which is
    # not null before the cuts.
    truncation = evaluations["features_leakage_truncation"]
    assert not truncation.passed
    evidence = truncation.metadata["evidence"].value["1w"]
    assert evidence["offending_columns"] == ["f_leak"]
    # Blocking: the downstream per-regime export did not run on leaky features.
    materialized = {
        e.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }
    assert "regime_datasets" not in materialized
    assert not result.success
