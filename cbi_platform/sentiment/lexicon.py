"""The lexicon fallback: VADER's compound score on headline and body.

VADER (vaderSentiment, MIT) is a general-purpose social-media lexicon, not a financial one: it
reads "drought expands" as positive and "crude rallies ... output cuts" as negative, where a
soybean-oil trader reads the opposite. It is the fallback when FinBERT's weights are absent, so
the pipeline runs everywhere; its scores are labelled as such wherever they are reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

LEXICON_NAME = "lexicon fallback (VADER)"
LEXICON_KIND = "lexicon"
SCORE_COLUMNS = ("sentiment_score", "p_positive", "p_negative", "p_neutral")


def article_text(headline: str | None, body: str | None) -> str:
    """What a scorer reads: the headline, then the body when there is one."""
    head = (headline or "").strip()
    rest = (body or "").strip()
    if head and rest:
        return f"{head}. {rest}" if head[-1] not in ".!?" else f"{head} {rest}"
    return head or rest


def score_frame(rows: list[tuple[float, float, float, float]]) -> pl.DataFrame:
    """Scorer output in one shape: score in [-1, 1] and three shares that sum to about 1."""
    return pl.DataFrame(rows, schema=dict.fromkeys(SCORE_COLUMNS, pl.Float64), orient="row")


class LexiconScorer:
    """VADER compound score (in [-1, 1]); the shares are VADER's pos/neg/neu text proportions,
    not probabilities."""

    name = LEXICON_NAME
    kind = LEXICON_KIND

    def __init__(self, reason: str | None = None) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # heavy: delayed

        self.reason = reason
        self.analyzer = SentimentIntensityAnalyzer()

    def score_texts(self, texts: Sequence[str]) -> pl.DataFrame:
        rows = []
        for text in texts:
            scores = self.analyzer.polarity_scores(text or "")
            rows.append((scores["compound"], scores["pos"], scores["neg"], scores["neu"]))
        return score_frame(rows)
