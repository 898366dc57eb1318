"""A tiny FinBERT-shaped checkpoint on disk, and synthetic scored articles."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

HEADLINES = (
    "Soybean oil prices surge on strong biofuel demand",
    "Crude slumps as supply rises",
    "China cancels soybean purchases",
    "Brazil harvests record soybean crop",
    "Palm oil export levy unchanged",
)


@pytest.fixture(scope="session")
def tiny_finbert(tmp_path_factory):
    """A randomly initialised 2-layer BERT classifier saved with save_pretrained."""
    from cbi_platform.sentiment.tiny_model import save_tiny_finbert

    return save_tiny_finbert(tmp_path_factory.mktemp("tiny_finbert"), words=HEADLINES)


def articles(n: int = 12, start: dt.date = dt.date(2021, 3, 1)) -> pl.DataFrame:
    """News in the canonical schema: one headline a day from `start` (weekends included)."""
    days = [start + dt.timedelta(days=i) for i in range(n)]
    return pl.DataFrame(
        {
            "published_at": days,
            "headline": [HEADLINES[i % len(HEADLINES)] for i in range(n)],
            "body": ["Traders said so." if i % 2 else None for i in range(n)],
            "source": "test-wire",
        },
        schema={"published_at": pl.Date, "headline": pl.Utf8, "body": pl.Utf8, "source": pl.Utf8},
    )


def scored_articles(days: list[dt.date], seed: int = 0, per_day: float = 0.5) -> pl.DataFrame:
    """Random scores in [-1, 1] on a random subset of `days` (0-2 articles a day)."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(per_day, len(days)).clip(0, 2)
    dates = [d for d, c in zip(days, counts, strict=True) for _ in range(int(c))]
    return pl.DataFrame(
        {"published_at": dates, "sentiment_score": rng.uniform(-1, 1, len(dates))},
        schema={"published_at": pl.Date, "sentiment_score": pl.Float64},
    )
