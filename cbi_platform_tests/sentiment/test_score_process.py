"""The scoring process: articles in, scores out, in a child process; failures carry stderr."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cbi_platform.sentiment.lexicon import score_frame
from cbi_platform.sentiment.score import (
    SCORED_SCHEMA,
    SentimentScoringError,
    main,
    score_articles_cached,
    score_articles_subprocess,
)
from cbi_platform_tests.sentiment.conftest import articles


def test_entry_point_scores_with_the_tiny_finbert(tiny_finbert, tmp_path):
    """`main` as the child runs it (in this process: torch is already imported here)."""
    news = articles(20)
    news.write_parquet(tmp_path / "in.parquet")
    argv = ["--in", str(tmp_path / "in.parquet"), "--out", str(tmp_path / "out.parquet")]
    assert main([*argv, "--model", str(tiny_finbert)]) == 0
    scores = pl.read_parquet(tmp_path / "out.parquet")
    info = json.loads((tmp_path / "out.json").read_text())
    assert scores.schema == SCORED_SCHEMA
    assert scores["headline"].to_list() == news["headline"].to_list()  # input order
    assert scores["article_id"].to_list() == list(range(20))
    assert scores["sentiment_score"].is_between(-1.0, 1.0).all()
    assert info["kind"] == "finbert" and info["notice"] is None
    assert info["model_path"] == str(tiny_finbert) and info["articles"] == 20
    assert info["articles_per_second"] > 0


def test_child_process_scores_and_falls_back_to_the_lexicon(tmp_path):
    missing = tmp_path / "absent"
    news = articles(5)
    scores, info = score_articles_subprocess(news, missing, tmp_path / "work")
    assert scores.schema == SCORED_SCHEMA
    assert scores["published_at"].to_list() == news["published_at"].to_list()
    assert info["kind"] == "lexicon" and info["name"] == "lexicon fallback (VADER)"
    assert info["process_seconds"] >= info["score_seconds"] >= 0
    assert info["notice"] == (
        f"FinBERT weights not found at {missing}; using the VADER lexicon fallback"
    )
    assert scores.height == 5 and scores["sentiment_score"][0] > 0  # "surge on strong demand"


def test_a_failing_child_raises_with_its_stderr(tmp_path):
    bad = articles(3).drop("headline")  # the child needs headlines
    with pytest.raises(SentimentScoringError, match="exited with code") as error:
        score_articles_subprocess(bad, tmp_path / "absent", tmp_path / "work")
    assert "headline" in str(error.value) and "Traceback" in str(error.value)


class _CountingScorer:
    """Scores by text length; remembers what it was asked to score."""

    name, kind = "counting", "test"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def score_texts(self, texts):
        self.seen += list(texts)
        return score_frame([(len(t) / 1000, 0.0, 0.0, 1.0) for t in texts])


def test_the_cache_scores_only_new_articles_and_keeps_old_scores(tmp_path):
    cache = tmp_path / "article_scores.parquet"
    first, scorer = articles(10), _CountingScorer()
    scored, from_cache = score_articles_cached(first, scorer, "key-a", cache)
    assert from_cache == 0 and len(scorer.seen) == 10 and cache.exists()
    later = pl.concat([first, articles(3, start=dt.date(2022, 1, 3))])
    again, from_cache = score_articles_cached(later, _CountingScorer(), "key-a", cache)
    assert from_cache == 10 and again.height == 13
    assert_frame_equal(again.head(10), scored)
    other = _CountingScorer()
    _, from_cache = score_articles_cached(later, other, "key-b", cache)  # other weights
    assert from_cache == 0 and len(other.seen) == 13
    assert pl.read_parquet(cache)["scorer"].value_counts().sort("scorer")["count"].to_list() == [
        13,
        13,
    ]
