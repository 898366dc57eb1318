"""news_sentiment materializes in-process (lexicon fallback); the flag wires it into features."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import polars as pl
from polars.testing import assert_frame_equal

from cbi_platform.defs.features.assets import build_features_asset
from cbi_platform.defs.features.checks import news_aware_leakage_check
from cbi_platform.defs.market.assets import market_prices, raw_market_data
from cbi_platform.defs.resources import build_resources
from cbi_platform.defs.sentiment.assets import news_sentiment
from cbi_platform.operations.market_state import news_state, news_state_path
from cbi_platform.sentiment.config import SentimentSettings
from cbi_platform.sentiment.features import DAILY_SCHEMA, SENTIMENT_FEATURES
from cbi_platform_tests.conftest import file_resources

ON_1W = SentimentSettings({"1w": True})


def _resources(tmp_path, **env) -> dict:
    return build_resources(
        {
            "CBI_HOME": str(tmp_path / "home"),
            "CBI_SIM_END": "2003-06-30",
            "CBI_FINBERT_PATH": str(tmp_path / "no_finbert"),
            **env,
        }
    )


def _table(tmp_path, name: str) -> pl.DataFrame:
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(f"select * from cbi.{name}").pl()


def _metadata(result, key: str) -> dict:
    materialization = next(
        m for m in result.get_asset_materialization_events() if m.asset_key.path == [key]
    )
    return {k: v.value for k, v in materialization.materialization.metadata.items()}


def test_news_sentiment_materializes_with_the_lexicon_and_says_why(tmp_path):
    def run():
        return dg.materialize(
            [raw_market_data, news_sentiment],
            resources=_resources(tmp_path),
            instance=dg.DagsterInstance.ephemeral(),
        )

    result = run()
    assert result.success
    meta = _metadata(result, "news_sentiment")
    assert meta["articles_from_cache"] == 0
    assert meta["scorer"] == "lexicon fallback (VADER)" and meta["scorer_kind"] == "lexicon"
    assert meta["scorer_notice"].startswith(
        f"FinBERT weights not found at {tmp_path / 'no_finbert'}"
    )
    assert meta["articles_scored"] > 100 and meta["articles_per_second"] > 0
    daily = _table(tmp_path, "news_sentiment")
    assert daily.height == meta["dagster/row_count"] and set(DAILY_SCHEMA) <= set(daily.columns)
    assert (daily["published_at"] == daily["date"]).all()
    # The latest day is published for the buyer's page (operations.market_state.news_state).
    published = json.loads(news_state_path(tmp_path / "home").read_text())
    assert published == news_state(daily, scorer=meta["scorer"])
    again = _metadata(run(), "news_sentiment")  # the next day: old articles keep their scores
    assert again["articles_from_cache"] == again["articles_scored"] == meta["articles_scored"]
    assert_frame_equal(_table(tmp_path, "news_sentiment"), daily)


def test_flag_on_features_carry_sentiment_and_pass_the_gates(tmp_path):
    off, on = build_features_asset(SentimentSettings({})), build_features_asset(ON_1W)
    assert dg.AssetKey("news_sentiment") not in off.dependency_keys
    assert dg.AssetKey("news_sentiment") in on.dependency_keys
    checks = [
        news_aware_leakage_check(gate, f"features_leakage_{gate}", gate, settings=ON_1W)
        for gate in ("truncation", "asof")
    ]
    resources = _resources(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    upstream = [raw_market_data, market_prices, news_sentiment]
    assert dg.materialize(upstream, resources=resources, instance=instance).success
    result = dg.materialize(
        [*upstream, on, *checks],
        selection=dg.AssetSelection.assets(on) | dg.AssetSelection.checks(*checks),
        partition_key="1w",
        resources=resources,
        instance=instance,
    )
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 2 and all(e.passed for e in evaluations)
    features = _table(tmp_path, "features")
    assert set(SENTIMENT_FEATURES) <= set(features.columns)
    assert features["f_news_count"].drop_nulls().len() > 0.9 * features.height


def test_without_news_the_flagged_features_drop_out_with_a_notice(small_manifest, tmp_path):
    resources = file_resources(small_manifest, tmp_path / "home")
    instance = dg.DagsterInstance.ephemeral()
    upstream = [raw_market_data, market_prices, news_sentiment]
    first = dg.materialize(upstream, resources=resources, instance=instance)
    assert first.success and _metadata(first, "news_sentiment")["scorer_kind"] == "none"
    on = build_features_asset(ON_1W)
    result = dg.materialize(
        [*upstream, on],
        selection=dg.AssetSelection.assets(on),
        partition_key="1w",
        resources=resources,
        instance=instance,
    )
    assert result.success
    meta = _metadata(result, "features")
    assert set(SENTIMENT_FEATURES) <= set(meta["dropped_features"])
    assert "NEWS_SENTIMENT absent from news_sentiment (no scored articles)" in meta["notices"]
