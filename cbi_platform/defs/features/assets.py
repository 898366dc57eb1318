"""Feature assets: point-in-time drivers and targets, one partition per horizon."""

import dagster as dg
import polars as pl

from cbi_platform.defs.partitions import PARTITION_EXPR, horizon_backfill, horizon_partitions
from cbi_platform.defs.resources import MarketSourceResource
from cbi_platform.defs.sentiment.assets import SENTIMENT_SETTINGS, news_input
from cbi_platform.features.build import build_features
from cbi_platform.features.contract import feature_columns
from cbi_platform.sentiment.config import SentimentSettings

_FEATURES_ASSET = dict(
    name="features",
    group_name="features",
    kinds={"polars", "duckdb"},
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    metadata=PARTITION_EXPR,
    description="Point-in-time drivers (f_*) and the horizon's targets (target_*), per horizon.",
)


def _features(
    context: dg.AssetExecutionContext,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    news_by_horizon: dict[str, pl.DataFrame],
) -> dg.Output[pl.DataFrame]:
    target = market_source.target()
    frames, notices, dropped = [], set(), set()
    for horizon in context.partition_keys:
        news = news_by_horizon.get(horizon)  # only horizons sentiment.yaml enables get news
        inputs = {} if news is None else {"news_sentiment": news}
        result = build_features(market_prices, horizon, target=target, **inputs)
        frames.append(result.frame)
        notices.update(result.notices)
        dropped.update(result.dropped)
    for notice in sorted(notices):
        context.log.info(notice)
    # Horizons may carry different features (news only where sentiment.yaml enables it).
    frame = pl.concat(frames, how="diagonal_relaxed")
    cols = feature_columns(frame)
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": frame.height,
            "feature_count": len(cols),
            "features": dg.MetadataValue.json(cols),
            "dropped_features": dg.MetadataValue.json(sorted(dropped)),
            "first_date": str(frame["date"].min()),
            "last_date": str(frame["date"].max()),
            "notices": dg.MetadataValue.md("\n".join(f"- {n}" for n in sorted(notices)) or "none"),
        },
    )


def build_features_asset(settings: SentimentSettings = SENTIMENT_SETTINGS) -> dg.AssetsDefinition:
    """The `features` asset under `settings` (the module's `features` uses sentiment.yaml)."""

    @dg.asset(**_FEATURES_ASSET, ins=news_input(settings))
    def features(
        context: dg.AssetExecutionContext,
        market_prices: pl.DataFrame,
        market_source: MarketSourceResource,
        **news_sentiment: pl.DataFrame,
    ) -> dg.Output[pl.DataFrame]:
        news = {h: news_sentiment["news_sentiment"] for h in settings.enabled_horizons}
        return _features(context, market_prices, market_source, news)

    return features


features = build_features_asset()
