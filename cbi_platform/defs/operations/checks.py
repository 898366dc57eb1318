"""Operations checks: stale source data and correlation breaks (warnings, not blocking: the
alert sensor mails them)."""

import dagster as dg
import polars as pl

from cbi_platform.defs.operations.assets import correlation_monitor, live_features
from cbi_platform.defs.resources import MarketSourceResource, OperationsResource
from cbi_platform.defs.sentiment.assets import SENTIMENT_IN_FEATURES, SENTIMENT_SETTINGS
from cbi_platform.features.contract import horizon_frame
from cbi_platform.operations.daily import stale_condition


@dg.asset_check(
    asset="market_prices",
    description="The target's last close is at most `max_business_days_behind` business days "
    "behind the source's reference date (today for live sources).",
)
def market_prices_fresh(
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    operations: OperationsResource,
) -> dg.AssetCheckResult:
    cond = stale_condition(
        market_source.target_prices(market_prices),
        market_source.reference_date(),
        operations.config().refresh.max_business_days_behind,
    )
    return dg.AssetCheckResult(
        passed=not cond.firing,
        severity=dg.AssetCheckSeverity.WARN,
        description=cond.title,
        metadata={k: str(v) for k, v in cond.evidence.items()},
    )


@dg.asset_check(
    asset=correlation_monitor,
    description="No soy-palm / soy-crude correlation outside its own 2.5-97.5% band for the "
    "configured number of consecutive days.",
)
def correlation_break(correlation_monitor: pl.DataFrame) -> dg.AssetCheckResult:
    if correlation_monitor.height == 0:
        return dg.AssetCheckResult(passed=True, description="no pair could be judged")
    latest = correlation_monitor.sort("date").group_by("pair", maintain_order=True).last()
    breaking = latest.filter(pl.col("breaking"))
    text = "; ".join(
        f"{r['pair']} ({r['partner']}): corr {r['corr']:.2f} outside "
        f"[{r['band_lo']:.2f}, {r['band_hi']:.2f}] for {r['run_length']} days"
        for r in breaking.iter_rows(named=True)
    )
    return dg.AssetCheckResult(
        passed=breaking.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=text or "no break",
        metadata={"pairs": dg.MetadataValue.json(latest["pair"].to_list())},
    )


_LIVE_LEAKAGE = dict(
    name="live_features_leakage",
    asset=live_features,
    blocking=True,
    description="The leakage gates of the `features` partitions (truncation, forward shift, "
    "target correlation, as-of) on today's features, per horizon: nothing is forecast from "
    "features that fail them.",
)
_PRICES = {"market_prices": dg.AssetIn("market_prices")}


def _live_features_leakage(
    live_features: pl.DataFrame,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    news_sentiment: pl.DataFrame | None = None,
) -> dg.AssetCheckResult:
    from cbi_platform.features.leakage import run_leakage_gates

    failures, summary = [], {}
    for horizon in live_features["horizon"].unique(maintain_order=True).to_list():
        frame = horizon_frame(live_features, horizon)
        news = news_sentiment if SENTIMENT_SETTINGS.uses(horizon) else None
        gates = run_leakage_gates(
            frame, market_prices, horizon, market_source.target(), news_sentiment=news
        )
        for name, gate in gates.items():
            summary[f"{horizon}/{name}"] = gate.summary
            if not gate.passed:
                failures.append(f"{horizon} {name}: {gate.summary}")
    return dg.AssetCheckResult(
        passed=not failures,
        description="; ".join(failures) or f"all gates passed on {len(summary)} horizon-gates",
        metadata={"gates": dg.MetadataValue.json(summary)},
    )


# The gates rebuild what live_features built: with news when sentiment.yaml says so.
if SENTIMENT_IN_FEATURES:

    @dg.asset_check(
        **_LIVE_LEAKAGE,
        additional_ins={**_PRICES, "news_sentiment": dg.AssetIn("news_sentiment")},
    )
    def live_features_leakage(
        live_features: pl.DataFrame,
        market_prices: pl.DataFrame,
        news_sentiment: pl.DataFrame,
        market_source: MarketSourceResource,
    ) -> dg.AssetCheckResult:
        return _live_features_leakage(live_features, market_prices, market_source, news_sentiment)

else:

    @dg.asset_check(**_LIVE_LEAKAGE, additional_ins=_PRICES)
    def live_features_leakage(
        live_features: pl.DataFrame,
        market_prices: pl.DataFrame,
        market_source: MarketSourceResource,
    ) -> dg.AssetCheckResult:
        return _live_features_leakage(live_features, market_prices, market_source)


OPERATIONS_CHECKS = [market_prices_fresh, correlation_break, live_features_leakage]
