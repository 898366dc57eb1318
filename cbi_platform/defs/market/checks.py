"""Checks on the written `market_prices`: blocking gates and warnings, each with evidence."""

import dagster as dg
import polars as pl

from cbi_platform.defs.market.assets import market_prices
from cbi_platform.defs.resources import MarketSourceResource
from cbi_platform.market import validation as v


def _result(finding: v.Finding) -> dg.AssetCheckResult:
    severity = (
        dg.AssetCheckSeverity.ERROR if finding.severity == v.ERROR else dg.AssetCheckSeverity.WARN
    )
    return dg.AssetCheckResult(
        passed=finding.passed,
        severity=severity,
        description=finding.message[:2000],
        metadata={"evidence": dg.MetadataValue.json(finding.evidence), "rule": finding.rule},
    )


@dg.asset_check(
    asset=market_prices, blocking=True, description="Columns, types, no nulls in required columns."
)
def market_prices_schema(market_prices: pl.DataFrame) -> dg.AssetCheckResult:
    return _result(v.check_schema(market_prices))


@dg.asset_check(asset=market_prices, blocking=True, description="No duplicate (symbol, date) rows.")
def market_prices_duplicate_dates(market_prices: pl.DataFrame) -> dg.AssetCheckResult:
    return _result(v.check_duplicates(market_prices))


@dg.asset_check(asset=market_prices, blocking=True, description="Target prices present and > 0.")
def market_prices_target_positive(
    market_prices: pl.DataFrame, market_source: MarketSourceResource
) -> dg.AssetCheckResult:
    return _result(v.check_target_positive(market_prices, market_source.target()))


@dg.asset_check(asset=market_prices, description="Non-positive driver prices (e.g. WTI -36.98).")
def market_prices_driver_positive(
    market_prices: pl.DataFrame, market_source: MarketSourceResource
) -> dg.AssetCheckResult:
    return _result(v.check_driver_positive(market_prices, market_source.target()))


@dg.asset_check(
    asset=market_prices, description="Daily series missing over 5 business days in a row."
)
def market_prices_gaps(market_prices: pl.DataFrame) -> dg.AssetCheckResult:
    return _result(v.check_gaps(market_prices))


@dg.asset_check(asset=market_prices, description="Series behind the snapshot's as_of (or today).")
def market_prices_staleness(
    market_prices: pl.DataFrame, market_source: MarketSourceResource
) -> dg.AssetCheckResult:
    return _result(v.check_staleness(market_prices, market_source.reference_date()))


@dg.asset_check(asset=market_prices, description="Daily returns with robust |z| over 12.")
def market_prices_return_outliers(market_prices: pl.DataFrame) -> dg.AssetCheckResult:
    return _result(v.check_return_outliers(market_prices))


market_checks = [
    market_prices_schema,
    market_prices_duplicate_dates,
    market_prices_target_positive,
    market_prices_driver_positive,
    market_prices_gaps,
    market_prices_staleness,
    market_prices_return_outliers,
]
