"""Blocking gates on `features`: the contract and the four leakage gates."""

import dagster as dg
import polars as pl

from cbi_platform.defs.features.assets import features
from cbi_platform.defs.partitions import horizon_partitions
from cbi_platform.defs.resources import MarketSourceResource
from cbi_platform.defs.sentiment.assets import SENTIMENT_SETTINGS
from cbi_platform.features import leakage
from cbi_platform.features.contract import HORIZON, META_COLUMNS, feature_columns, horizon_frame
from cbi_platform.sentiment.config import SentimentSettings

_PRICES = {"market_prices": dg.AssetIn("market_prices")}
_NEWS = {"news_sentiment": dg.AssetIn("news_sentiment")}


def _partition_frames(context, frame: pl.DataFrame):
    """The check loads the whole table; judge only the partitions of this run."""
    keys = (
        context.partition_keys
        if context.has_partition_key_range or context.has_partition_key
        else None
    )
    for key in keys or sorted(frame[HORIZON].unique().to_list()):
        yield key, horizon_frame(frame, key)


def _leakage_check(
    context,
    features: pl.DataFrame,
    gate: str,
    prices: pl.DataFrame | None = None,
    target: str | None = None,
    news_by_horizon: dict[str, pl.DataFrame] | None = None,
) -> dg.AssetCheckResult:
    """Run one leakage gate (the runner `cbi validate` uses) on each partition of this run,
    with the news sentiment the partition was built with (sentiment.yaml), if any."""
    news = news_by_horizon or {}
    return _combine(
        {
            key: leakage.run_leakage_gates(
                frame, prices, key, target, gates=[gate], news_sentiment=news.get(key)
            )[gate]
            for key, frame in _partition_frames(context, features)
        }
    )


def _combine(results: dict[str, leakage.GateResult]) -> dg.AssetCheckResult:
    passed = all(r.passed for r in results.values())
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(f"{k}: {r.summary}" for k, r in results.items())[:2000],
        metadata={
            "evidence": dg.MetadataValue.json({k: r.evidence for k, r in results.items()}),
            "horizons": dg.MetadataValue.json(sorted(results)),
        },
    )


@dg.asset_check(
    asset=features,
    blocking=True,
    partitions_def=horizon_partitions,
    description="Meta columns present, one row per date, features numeric and not all null.",
)
def features_contract(context: dg.AssetCheckExecutionContext, features: pl.DataFrame):
    results = {}
    for key, frame in _partition_frames(context, features):
        missing = [c for c in META_COLUMNS if c not in frame.columns]
        dup = frame.filter(pl.col("date").is_duplicated())["date"].unique().sort()
        cols = feature_columns(frame)
        non_numeric = [c for c in cols if not frame.schema[c].is_numeric()]
        all_null = [c for c in cols if frame[c].null_count() == frame.height]
        problems = {
            "missing_meta": missing,
            "duplicate_dates": [str(d) for d in dup.head(10)],
            "non_numeric": non_numeric,
            "all_null": all_null,
        }
        ok = frame.height > 0 and not any(problems.values())
        summary = "ok" if ok else ", ".join(f"{k}={v}" for k, v in problems.items() if v)
        results[key] = leakage.GateResult(ok, f"{len(cols)} features, {summary}", problems)
    return _combine(results)


def news_aware_leakage_check(
    gate: str, name: str, description: str, settings: SentimentSettings = SENTIMENT_SETTINGS
) -> dg.AssetChecksDefinition:
    """A gate that recomputes features from their inputs: it also reads `news_sentiment` when
    sentiment.yaml puts news in some horizon's features (the asset read it too)."""
    spec = dict(
        name=name,
        asset=features,
        blocking=True,
        partitions_def=horizon_partitions,
        description=description,
    )
    if not settings.enabled_horizons:

        @dg.asset_check(**spec, additional_ins=_PRICES)
        def check(
            context: dg.AssetCheckExecutionContext,
            features: pl.DataFrame,
            market_prices: pl.DataFrame,
            market_source: MarketSourceResource,
        ):
            return _leakage_check(context, features, gate, market_prices, market_source.target())

        return check

    @dg.asset_check(**spec, additional_ins={**_PRICES, **_NEWS})
    def check_with_news(
        context: dg.AssetCheckExecutionContext,
        features: pl.DataFrame,
        market_prices: pl.DataFrame,
        news_sentiment: pl.DataFrame,
        market_source: MarketSourceResource,
    ):
        news = dict.fromkeys(settings.enabled_horizons, news_sentiment)
        return _leakage_check(
            context, features, gate, market_prices, market_source.target(), news_by_horizon=news
        )

    return check_with_news


TRUNCATION_DESCRIPTION = (
    "Leakage (i): features recomputed on history cut at several origins equal the "
    "materialized table."
)
ASOF_DESCRIPTION = "Leakage (iii): every as-of joined value was published by the row's date."
features_leakage_truncation = news_aware_leakage_check(
    "truncation", "features_leakage_truncation", TRUNCATION_DESCRIPTION
)


@dg.asset_check(
    asset=features,
    blocking=True,
    partitions_def=horizon_partitions,
    additional_ins=_PRICES,
    description="Leakage (ii-a): no feature is an exact forward shift of any series or target.",
)
def features_leakage_forward_shift(
    context: dg.AssetCheckExecutionContext, features: pl.DataFrame, market_prices: pl.DataFrame
):
    return _leakage_check(context, features, "forward_shift", market_prices)


@dg.asset_check(
    asset=features,
    blocking=True,
    partitions_def=horizon_partitions,
    description="Leakage (ii-b): no feature correlates with the future log return above "
    "the threshold.",
)
def features_leakage_target_correlation(
    context: dg.AssetCheckExecutionContext, features: pl.DataFrame
):
    return _leakage_check(context, features, "target_correlation")


features_leakage_asof = news_aware_leakage_check("asof", "features_leakage_asof", ASOF_DESCRIPTION)


feature_checks = [
    features_contract,
    features_leakage_truncation,
    features_leakage_forward_shift,
    features_leakage_target_correlation,
    features_leakage_asof,
]
