"""The canonical tables every source produces and every consumer reads.

`market_prices` is long: one row per (symbol, date). `published_at` is the business day the
value became known; point-in-time joins use it, never `date`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

MARKET_PRICES_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.Utf8(),
    "date": pl.Date(),
    "value": pl.Float64(),
    "unit": pl.Utf8(),
    "source": pl.Utf8(),
    "published_at": pl.Date(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "volume": pl.Float64(),
}
REQUIRED_PRICE_COLUMNS = ("symbol", "date", "value", "unit", "source", "published_at")
OPTIONAL_PRICE_COLUMNS = ("open", "high", "low", "volume")

NEWS_SCHEMA: dict[str, pl.DataType] = {
    "published_at": pl.Date(),
    "headline": pl.Utf8(),
    "body": pl.Utf8(),
    "source": pl.Utf8(),
}

# Canonical symbols. Sources map their own names onto these; features refer only to these.
TARGET_SYMBOL = "ZL"
SYMBOLS: dict[str, str] = {
    "ZL": "CBOT soybean oil, front month (US cents/lb)",
    "ZS": "CBOT soybeans, front month (US cents/bu)",
    "ZM": "CBOT soybean meal, front month (USD/short ton)",
    "PALM": "Crude palm oil (USD/metric ton)",
    "WTI": "WTI crude oil (USD/bbl)",
    "BRENT": "Brent crude oil (USD/bbl)",
    "DXY": "US dollar index (index points)",
    "USDBRL": "US dollar in Brazilian real (BRL per USD)",
    "RIN_D4": "D4 biomass-based diesel RIN (USD/RIN)",
    "COT_ZL": "CFTC managed net position in ZL, % of open interest (weekly, as of Tuesday)",
    "COT_ZS": "CFTC net position in ZS, % of open interest (weekly, as of Tuesday)",
    "COT_ZM": "CFTC net position in ZM, % of open interest (weekly, as of Tuesday)",
    "ZL_M": "Soybean oil, monthly average (USD/metric ton, IMF)",
    "PALM_M": "Palm oil, monthly average (USD/metric ton, IMF)",
    "ZS_M": "Soybeans, monthly average (USD/metric ton, IMF)",
    "ZM_M": "Soybean meal, monthly average (USD/metric ton, IMF)",
    "RAPESEED_M": "Rapeseed oil, monthly average (USD/metric ton, IMF)",
    "SUNFLOWER_M": "Sunflower oil, monthly average (USD/metric ton, IMF)",
    "WTI_M": "WTI crude, monthly average (USD/bbl, IMF)",
}


class MarketDataError(ValueError):
    """Bad input: the message names the file, the column and the rows, and says what to do."""


@dataclass(frozen=True)
class MarketBundle:
    """What a source returns: canonical prices and news, the symbol to forecast, and notices.

    `target` is the source's own answer (a manifest's `target`, ZL for the simulator and
    BigQuery), so callers need not re-read the configuration.
    """

    prices: pl.DataFrame
    news: pl.DataFrame
    target: str
    notices: tuple[str, ...] = field(default_factory=tuple)
    as_of: object | None = None  # datetime.date of a historical snapshot, None for live data


def empty_news() -> pl.DataFrame:
    return pl.DataFrame(schema=NEWS_SCHEMA)


def conform_prices(df: pl.DataFrame) -> pl.DataFrame:
    """Cast to the canonical schema, adding absent optional columns as nulls, in canonical order."""
    missing = [c for c in REQUIRED_PRICE_COLUMNS if c not in df.columns]
    if missing:
        raise MarketDataError(f"market_prices is missing required column(s) {missing}")
    exprs = []
    for name, dtype in MARKET_PRICES_SCHEMA.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(exprs).sort(["symbol", "date"])


def conform_news(df: pl.DataFrame) -> pl.DataFrame:
    exprs = []
    for name, dtype in NEWS_SCHEMA.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(exprs).sort(["published_at", "headline", "body"], maintain_order=True)


def target_series(prices: pl.DataFrame, symbol: str) -> pl.DataFrame:
    """One symbol's rows of the long table, in date order."""
    return prices.filter(pl.col("symbol") == symbol).sort("date")
