"""FinBERT's loading path on a tiny checkpoint saved locally, and the lexicon fallback."""

from __future__ import annotations

import numpy as np
import pytest

from cbi_platform.sentiment.finbert import MAX_BATCH_SIZE, FinBertScorer, load_scorer
from cbi_platform.sentiment.lexicon import LEXICON_NAME, LexiconScorer
from cbi_platform.sentiment.tiny_model import save_tiny_finbert
from cbi_platform_tests.sentiment.conftest import HEADLINES


def test_tiny_checkpoint_loads_from_disk_and_scores_in_range(tiny_finbert):
    scorer, info = load_scorer(tiny_finbert)
    assert isinstance(scorer, FinBertScorer)
    assert info.kind == "finbert" and info.notice is None
    assert info.model_path == str(tiny_finbert)
    assert scorer.label_index == {"positive": 0, "negative": 1, "neutral": 2}
    scores = scorer.score_texts([*HEADLINES, ""])
    assert scores.height == len(HEADLINES) + 1
    assert scores["sentiment_score"].is_between(-1.0, 1.0).all()
    probs = scores.select("p_positive", "p_negative", "p_neutral").to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(scores["sentiment_score"], probs[:, 0] - probs[:, 1], atol=1e-12)


@pytest.mark.parametrize(
    ("id2label", "favour", "sign"),
    [
        ({0: "positive", 1: "negative", 2: "neutral"}, "positive", 1.0),
        ({0: "negative", 1: "positive", 2: "neutral"}, "positive", 1.0),
        ({0: "negative", 1: "positive", 2: "neutral"}, "negative", -1.0),
        ({0: "Neutral", 1: "Negative", 2: "Positive"}, "Neutral", 0.0),
    ],
)
def test_labels_are_read_through_id2label_not_position(tmp_path, id2label, favour, sign):
    folder = save_tiny_finbert(tmp_path / "model", id2label=id2label, favour=favour)
    scorer, _ = load_scorer(folder)
    scores = scorer.score_texts(list(HEADLINES))["sentiment_score"].to_numpy()
    np.testing.assert_allclose(scores, sign, atol=0.01)


def test_batches_never_exceed_sixteen_and_order_is_kept(tiny_finbert):
    scorer, _ = load_scorer(tiny_finbert)
    sizes: list[int] = []
    hook = scorer.model.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    texts = [f"{HEADLINES[i % 5]} {'oil ' * (i % 7)}".strip() for i in range(37)]
    try:
        together = scorer.score_texts(texts)["sentiment_score"].to_numpy()
    finally:
        hook.remove()
    assert max(sizes) <= MAX_BATCH_SIZE and sum(sizes) == len(texts)
    assert len(sizes) == 3  # 16 + 16 + 5
    one_by_one = np.array([scorer.score_texts([t])["sentiment_score"][0] for t in texts[:6]])
    np.testing.assert_allclose(together[:6], one_by_one, atol=1e-5)
    long_text = " ".join(["soybean"] * 400)  # truncated to 128 tokens, not an error
    assert scorer.score_texts([long_text]).height == 1
    with pytest.raises(ValueError, match="batch_size"):
        FinBertScorer(scorer.model, scorer.tokenizer, batch_size=32)


def test_missing_weights_fall_back_to_the_lexicon_with_the_reason(tmp_path):
    missing = tmp_path / "no_such_model"
    scorer, info = load_scorer(missing)
    assert isinstance(scorer, LexiconScorer)
    assert info.kind == "lexicon" and info.name == LEXICON_NAME == "lexicon fallback (VADER)"
    assert info.notice == (
        f"FinBERT weights not found at {missing}; using the VADER lexicon fallback"
    )
    scores = scorer.score_texts(["Prices surge on strong demand", "Crops fail, disaster"])
    assert scores["sentiment_score"][0] > 0 > scores["sentiment_score"][1]


def test_a_checkpoint_without_finbert_labels_falls_back_and_says_why(tmp_path):
    folder = save_tiny_finbert(tmp_path / "model", id2label={0: "LABEL_0", 1: "LABEL_1", 2: "x"})
    scorer, info = load_scorer(folder)
    assert isinstance(scorer, LexiconScorer)
    assert "could not be loaded" in info.notice and "positive" in info.notice
    assert info.notice.endswith("using the VADER lexicon fallback")
