"""Market data assets: the source's delivery, the validated prices, the news."""

import dagster as dg
import polars as pl

from cbi_platform.defs.resources import MarketSourceResource
from cbi_platform.market.validation import raise_on_errors, validate_market_prices
from cbi_platform.reporting import markdown_table
from cbi_platform.versioning import frame_version


@dg.multi_asset(
    group_name="market",
    outs={
        "raw_market_prices": dg.AssetOut(
            description="Prices as the configured source delivered them, canonical long form.",
            kinds={"polars", "duckdb"},
        ),
        "news_articles": dg.AssetOut(
            description="Dated news headlines (published_at, headline, body, source).",
            kinds={"polars", "duckdb"},
        ),
    },
)
def raw_market_data(context: dg.AssetExecutionContext, market_source: MarketSourceResource):
    bundle = market_source.load()
    for notice in bundle.notices:
        context.log.info(notice)
    prices, news = bundle.prices, bundle.news
    # Data versions from the content: the same delivery leaves everything downstream fresh.
    yield dg.Output(
        prices,
        output_name="raw_market_prices",
        data_version=dg.DataVersion(frame_version(prices)),
        metadata={
            "dagster/row_count": prices.height,
            "source": market_source.kind,
            "symbols": dg.MetadataValue.json(sorted(prices["symbol"].unique().to_list())),
            "first_date": str(prices["date"].min()),
            "last_date": str(prices["date"].max()),
            "as_of": str(bundle.as_of),
            "notices": dg.MetadataValue.md("\n".join(f"- {n}" for n in bundle.notices) or "none"),
        },
    )
    yield dg.Output(
        news,
        output_name="news_articles",
        data_version=dg.DataVersion(frame_version(news)),
        metadata={"dagster/row_count": news.height, "source": market_source.kind},
    )


@dg.asset(
    group_name="market",
    kinds={"polars", "duckdb"},
    description="Validated market prices (long form); refused before writing if a blocking "
    "rule fails.",
)
def market_prices(
    context: dg.AssetExecutionContext,
    raw_market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
) -> dg.Output[pl.DataFrame]:
    target = market_source.target()
    findings = validate_market_prices(raw_market_prices, target, market_source.reference_date())
    raise_on_errors(findings, where=f"market_prices (source {market_source.kind})")
    for f in findings:
        if not f.passed:
            context.log.warning(f"{f.rule}: {f.message}")
    summary = (
        raw_market_prices.group_by("symbol")
        .agg(
            rows=pl.len(),
            first=pl.col("date").min().cast(pl.Utf8),
            last=pl.col("date").max().cast(pl.Utf8),
            unit=pl.col("unit").first(),
        )
        .sort("symbol")
    )
    return dg.Output(
        raw_market_prices,
        metadata={
            "dagster/row_count": raw_market_prices.height,
            "target": target,
            "series": dg.MetadataValue.md(markdown_table(summary)),
        },
    )
