"""Checks on the written `market_prices`: blocking gates and warnings, each with evidence.

One step runs them all (`multi_asset_check`): the daily refresh loads `market_prices` once
instead of once per check (seven steps of ~0.2 s each, most of it the load). Each rule keeps its
own check name, description and blocking flag; a rule that raises is reported as its own failed
check, so the others still report.
"""

from collections.abc import Callable, Iterator

import dagster as dg
import polars as pl

from cbi_platform.defs.market.assets import market_prices
from cbi_platform.defs.resources import MarketSourceResource
from cbi_platform.market import validation as v

MARKET_PRICES = market_prices.key


def _result(name: str, finding: v.Finding) -> dg.AssetCheckResult:
    severity = (
        dg.AssetCheckSeverity.ERROR if finding.severity == v.ERROR else dg.AssetCheckSeverity.WARN
    )
    return dg.AssetCheckResult(
        asset_key=MARKET_PRICES,
        check_name=name,
        passed=finding.passed,
        severity=severity,
        description=finding.message[:2000],
        metadata={"evidence": dg.MetadataValue.json(finding.evidence), "rule": finding.rule},
    )


# (check name, blocking, description, rule(prices, source) -> Finding)
RULES: list[tuple[str, bool, str, Callable[[pl.DataFrame, MarketSourceResource], v.Finding]]] = [
    (
        "market_prices_schema",
        True,
        "Columns, types, no nulls in required columns.",
        lambda df, src: v.check_schema(df),
    ),
    (
        "market_prices_duplicate_dates",
        True,
        "No duplicate (symbol, date) rows.",
        lambda df, src: v.check_duplicates(df),
    ),
    (
        "market_prices_target_positive",
        True,
        "Target prices present and > 0.",
        lambda df, src: v.check_target_positive(df, src.target()),
    ),
    (
        "market_prices_driver_positive",
        False,
        "Non-positive driver prices (e.g. WTI -36.98).",
        lambda df, src: v.check_driver_positive(df, src.target()),
    ),
    (
        "market_prices_gaps",
        False,
        "Daily series missing over 5 business days in a row.",
        lambda df, src: v.check_gaps(df),
    ),
    (
        "market_prices_staleness",
        False,
        "Series behind the snapshot's as_of (or today).",
        lambda df, src: v.check_staleness(df, src.reference_date()),
    ),
    (
        "market_prices_return_outliers",
        False,
        "Daily returns with robust |z| over 12.",
        lambda df, src: v.check_return_outliers(df),
    ),
]


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=market_prices, blocking=blocking, description=description)
        for name, blocking, description, _ in RULES
    ],
    description="The market-data gates and warnings, over one load of market_prices.",
)
def market_prices_checks(
    market_prices: pl.DataFrame, market_source: MarketSourceResource
) -> Iterator[dg.AssetCheckResult]:
    for name, blocking, _, rule in RULES:
        try:
            finding = rule(market_prices, market_source)
        except Exception as exc:  # noqa: BLE001 - reported as this check's failure
            yield dg.AssetCheckResult(
                asset_key=MARKET_PRICES,
                check_name=name,
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
                description=f"{name} could not run: {type(exc).__name__}: {exc}"[:2000],
            )
            continue
        yield _result(name, finding)


market_checks = [market_prices_checks]
