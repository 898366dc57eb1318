"""News sentiment: articles scored in a separate process, aggregated to daily features."""

import tempfile

import dagster as dg
import polars as pl

from cbi_platform.defs.resources import PlatformHome, SentimentResource
from cbi_platform.operations.market_state import news_state, publish_news_state
from cbi_platform.sentiment.config import SentimentSettings, load_sentiment_settings
from cbi_platform.sentiment.features import DAILY_SCHEMA, F_COUNT, F_MEAN, daily_sentiment
from cbi_platform.sentiment.score import score_articles_subprocess

# sentiment.yaml (decided by benchmarks/sentiment_ablation.py), read once when the definitions
# load. With every flag off no other asset reads news_sentiment and `make run` scores no news.
SENTIMENT_SETTINGS = load_sentiment_settings()
SENTIMENT_IN_FEATURES = bool(SENTIMENT_SETTINGS.enabled_horizons)


def news_input(settings: SentimentSettings = SENTIMENT_SETTINGS) -> dict[str, dg.AssetIn]:
    """`news_sentiment` as an input of the feature builders only when sentiment.yaml puts news
    in some horizon's features: with every flag off the graph is what it was without it."""
    return {"news_sentiment": dg.AssetIn("news_sentiment")} if settings.enabled_horizons else {}


@dg.asset(
    group_name="features",
    kinds={"polars", "duckdb"},
    description="Daily news sentiment (f_news_*), point in time: articles scored by FinBERT, "
    "or the VADER lexicon when its weights are absent, in a separate process; earlier "
    "articles keep their cached scores.",
)
def news_sentiment(
    context: dg.AssetExecutionContext,
    news_articles: pl.DataFrame,
    sentiment: SentimentResource,
    home: PlatformHome,
) -> dg.Output[pl.DataFrame]:
    if news_articles.height:
        cache = home.folder("sentiment") / "article_scores.parquet"
        with tempfile.TemporaryDirectory(prefix="cbi-sentiment-") as workdir:
            scored, info = score_articles_subprocess(
                news_articles, sentiment.finbert_path, workdir, cache=cache
            )
        daily = daily_sentiment(scored)
        mean_score = scored["sentiment_score"].mean()
    else:
        daily, mean_score = pl.DataFrame(schema=DAILY_SCHEMA), None
        info = {"name": "none", "kind": "none", "notice": "no news articles: nothing scored"}
    if info.get("notice"):
        context.log.warning(info["notice"])
    scorer = {k: info.get(k) for k in ("name", "kind", "model_path", "notice", "fingerprint")}
    publish_news_state(home.path, news_state(daily, scorer=info["name"]))  # the buyer's page
    return dg.Output(
        daily,
        metadata={
            "dagster/row_count": daily.height,
            "scorer": info["name"],
            "scorer_kind": info["kind"],
            "scorer_notice": info.get("notice") or "none",
            "scorer_info": dg.MetadataValue.json(scorer),
            "articles_scored": int(info.get("articles", 0)),
            "articles_from_cache": int(info.get("articles_from_cache", 0)),
            "scoring_seconds": float(info.get("score_seconds") or 0.0),
            "articles_per_second": float(info.get("articles_per_second") or 0.0),
            "process_seconds": float(info.get("process_seconds") or 0.0),
            "days_with_news_in_window": int((daily[F_COUNT] > 0).sum()) if daily.height else 0,
            "days_with_mean": int(daily[F_MEAN].is_not_null().sum()) if daily.height else 0,
            "first_date": str(daily["date"].min()) if daily.height else "none",
            "last_date": str(daily["date"].max()) if daily.height else "none",
            "used_in_features": dg.MetadataValue.json(SENTIMENT_SETTINGS.use_in_features),
        }
        | ({"mean_article_score": float(mean_score)} if mean_score is not None else {}),
    )
