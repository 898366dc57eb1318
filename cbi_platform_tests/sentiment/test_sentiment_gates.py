"""Sentiment features go through the as-of join and the leakage gates like any other series."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cbi_platform.features.build import FeatureResult, build_features
from cbi_platform.features.leakage import asof_gate, run_leakage_gates, truncation_gate
from cbi_platform.sentiment.features import DAILY_SCHEMA, F_MEAN, SENTIMENT_FEATURES
from cbi_platform.sentiment.features import daily_sentiment as make_daily
from cbi_platform_tests.features.conftest import make_prices
from cbi_platform_tests.sentiment.conftest import scored_articles


@pytest.fixture(scope="module")
def prices() -> pl.DataFrame:
    return make_prices(900, seed=11)


@pytest.fixture(scope="module")
def daily(prices) -> pl.DataFrame:
    days = prices.filter(pl.col("symbol") == "ZL")["date"].to_list()
    return make_daily(scored_articles(days, seed=2))


def test_off_by_default_and_on_only_adds_the_news_columns(prices, daily):
    plain = build_features(prices, "1w")
    assert_frame_equal(build_features(prices, "1w", news_sentiment=None).frame, plain.frame)
    assert not any(c.startswith("f_news") for c in plain.frame.columns)
    with_news = build_features(prices, "1w", news_sentiment=daily)
    assert with_news.frame.columns == [*plain.frame.columns, *SENTIMENT_FEATURES]
    assert_frame_equal(with_news.frame.select(plain.frame.columns), plain.frame)
    assert with_news.notices == plain.notices
    assert with_news.frame[F_MEAN].null_count() < with_news.frame.height // 2


def test_no_scored_articles_drops_the_features_with_a_notice(prices):
    result = build_features(prices, "1m", news_sentiment=pl.DataFrame(schema=DAILY_SCHEMA))
    assert not any(c.startswith("f_news") for c in result.frame.columns)
    assert set(SENTIMENT_FEATURES) <= set(result.dropped)
    assert (
        "NEWS_SENTIMENT absent from news_sentiment (no scored articles): dropped "
        + ", ".join(SENTIMENT_FEATURES)
    ) in result.notices


@pytest.mark.parametrize("horizon", ["1w", "1m"])
def test_every_gate_passes_with_sentiment_on(prices, daily, horizon):
    frame = build_features(prices, horizon, news_sentiment=daily).frame
    results = run_leakage_gates(frame, prices, horizon, "ZL", news_sentiment=daily)
    for name, result in results.items():
        assert result.passed, (name, result.summary, result.evidence)
    assert set(SENTIMENT_FEATURES) <= set(results["asof"].evidence["columns_checked"])


def _leaky(transform):
    """A builder that applies `transform` to the honest frame when it has news features."""

    def build(prices, horizon, target="ZL", news_sentiment=None) -> FeatureResult:
        honest = build_features(prices, horizon, target=target, news_sentiment=news_sentiment)
        frame = honest.frame
        if F_MEAN in frame.columns:
            frame = frame.with_columns(transform(frame))
        return FeatureResult(frame, honest.notices, honest.dropped)

    return build


def test_a_look_ahead_sentiment_feature_fails_truncation_and_asof(prices, daily):
    leak = _leaky(lambda f: pl.col(F_MEAN).shift(-1))
    frame = leak(prices, "1w", news_sentiment=daily).frame
    results = run_leakage_gates(frame, prices, "1w", "ZL", build=leak, news_sentiment=daily)
    assert not results["truncation"].passed
    assert results["truncation"].evidence["offending_columns"] == [F_MEAN]
    assert not results["asof"].passed
    assert list(results["asof"].evidence["offending_rows_per_column"]) == [F_MEAN]
    assert results["forward_shift"].passed and results["target_correlation"].passed


def test_a_join_on_date_instead_of_publication_fails_both_gates(prices, daily):
    # Sentiment computed after the close and published the next business day: a builder that
    # ignores published_at reads each day's value a day early.
    late = daily.with_columns(pl.col("published_at").dt.add_business_days(1))
    on_date = late.with_columns(pl.col("date").alias("published_at"))
    frame = build_features(prices, "1w", news_sentiment=on_date).frame

    def joins_on_date(prices, horizon, target="ZL", news_sentiment=None):
        news = (
            None
            if news_sentiment is None
            else news_sentiment.with_columns(pl.col("date").alias("published_at"))
        )
        return build_features(prices, horizon, target=target, news_sentiment=news)

    assert not asof_gate(frame, prices, news_sentiment=late).passed
    gate = truncation_gate(prices, "1w", build=joins_on_date, frame=frame, news_sentiment=late)
    assert not gate.passed and set(gate.evidence["offending_columns"]) & set(SENTIMENT_FEATURES)
    honest = build_features(prices, "1w", news_sentiment=late).frame
    assert asof_gate(honest, prices, news_sentiment=late).passed


def test_news_columns_without_the_news_frame_cannot_pass(prices, daily):
    frame = build_features(prices, "1w", news_sentiment=daily).frame
    results = run_leakage_gates(frame, prices, "1w", "ZL", gates=["asof", "truncation"])
    assert not results["asof"].passed and not results["truncation"].passed
    assert set(results["truncation"].evidence["offending_columns"]) <= set(SENTIMENT_FEATURES)
