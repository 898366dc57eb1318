"""The replay wrapper: any source's delivery, cut to what was published by a given day.

`cbi replay` walks the daily loop over history. On each simulated day the platform must see the
data exactly as it stood then, so every row whose `published_at` is after the day is dropped
(prices, weekly COT released days after its as-of date, monthly series with their lags, news).
The rest of the pipeline runs unchanged: the same features, checks and models as production.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl

from cbi_platform.market.schema import MarketBundle, MarketDataError


def published_by(bundle: MarketBundle, day: dt.date) -> MarketBundle:
    """The bundle as it stood at the end of `day` (rows published after it are dropped)."""
    prices = bundle.prices.filter(pl.col("published_at") <= day)
    target = prices.filter(pl.col("symbol") == bundle.target)
    if target.height == 0:
        raise MarketDataError(
            f"replay: no {bundle.target} price was published by {day}; the source starts "
            f"{bundle.prices['date'].min()}"
        )
    news = bundle.news
    if "published_at" in news.columns:
        news = news.filter(pl.col("published_at") <= day)
    dropped = bundle.prices.height - prices.height
    return dataclasses.replace(
        bundle,
        prices=prices,
        news=news,
        as_of=day,
        notices=(
            *bundle.notices,
            f"Replay: data as published by {day} ({dropped} later price rows withheld).",
        ),
    )
