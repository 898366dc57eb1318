"""Point-in-time feature frames: one row per target trading date, ~45 causal drivers, targets.

Every other series reaches the target's dates through `asof_join` on `published_at` (never on
`date`), so the row at origin t sees only what was published by t. Rolling windows look back
only, so truncating the input after t leaves the row at t unchanged (`leakage.truncation_gate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from cbi_platform.features.contract import (
    DATE,
    FEATURE_PREFIX,
    HORIZON,
    HORIZON_DAYS,
    META_COLUMNS,
    PRICE,
    TARGET_DATE,
    TARGET_LOGRET,
    TARGET_PRICE,
)
from cbi_platform.market.schema import TARGET_SYMBOL, MarketDataError
from cbi_platform.sentiment.features import NEWS_SERIES, SENTIMENT_FEATURES
from cbi_platform.settings import horizon_days

# Log returns of drivers use prices clipped to this floor (WTI printed -36.98 on 2020-04-20) and
# are winsorised to +-RETURN_CLIP_PER_SQRT_DAY * sqrt(k) over k rows, so one bad print can't flood.
PRICE_FLOOR = 0.01
RETURN_CLIP_PER_SQRT_DAY = 0.5
WTI_RATIO_FLOOR = 1.0  # USD/bbl: the ZL/WTI ratio divides by WTI clipped here
TRADING_DAYS_PER_YEAR = 252
CENTS_PER_LB_TO_USD_PER_TONNE = 22.0462
CROSS_ASSET_SYMBOLS = ("ZS", "ZM", "PALM", "WTI", "BRENT", "DXY", "USDBRL", "RIN_D4")
CROSS_ASSET_WINDOWS = (5, 21)
MONTHLY_SYMBOLS = ("PALM_M", "ZL_M")
# How long an as-of value stays usable after its publication (calendar days); older -> null, so a
# series that stops (the IMF file ends in 2017) is not carried forward for years.
STALENESS_DAYS = {"daily": 10, "weekly": 21, "monthly": 75}


@dataclass(frozen=True)
class FeatureResult:
    """The feature frame plus what the run log needs: notices and the features left out."""

    frame: pl.DataFrame
    notices: tuple[str, ...]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class SeriesFeature:
    """A feature computed on one series' own rows, then joined onto the target as of publication.

    kind: "level" (the value), "diff" (value minus the value `lag` releases earlier) or "logret"
    (floored, winsorised log change over `lag` releases). `leakage.asof_gate` recomputes these.
    """

    column: str
    symbol: str
    kind: str
    lag: int


def staleness_days(symbol: str) -> int:
    """Calendar days a published value stays usable: by the series' release frequency."""
    if symbol.startswith("COT_"):
        return STALENESS_DAYS["weekly"]
    if symbol.endswith("_M"):
        return STALENESS_DAYS["monthly"]
    return STALENESS_DAYS["daily"]


def return_clip(k: int) -> float:
    return RETURN_CLIP_PER_SQRT_DAY * math.sqrt(k)


def safe_logret(values: pl.Expr, k: int) -> pl.Expr:
    """Log change over k rows on prices floored at PRICE_FLOOR, winsorised: finite for any print."""
    log_level = values.clip(lower_bound=PRICE_FLOOR).log()
    bound = return_clip(k)
    return (log_level - log_level.shift(k)).clip(-bound, bound)


def series_feature_specs(target: str = TARGET_SYMBOL) -> tuple[SeriesFeature, ...]:
    """The single-series drivers, in output order: cross-asset returns, COT, monthly changes."""
    specs: list[SeriesFeature] = []
    for symbol in CROSS_ASSET_SYMBOLS:
        if symbol == target:
            continue
        for k in CROSS_ASSET_WINDOWS:
            specs.append(SeriesFeature(f"f_{symbol.lower()}_ret{k}", symbol, "logret", k))
    cot = f"COT_{target}"
    specs.append(SeriesFeature(f"f_{cot.lower()}_net", cot, "level", 0))
    specs.append(SeriesFeature(f"f_{cot.lower()}_chg4", cot, "diff", 4))
    for symbol in MONTHLY_SYMBOLS:
        specs.append(SeriesFeature(f"f_{symbol.lower()}_chg3", symbol, "logret", 3))
    return tuple(specs)


def point_in_time_rows(series: pl.DataFrame) -> pl.DataFrame:
    """One series' rows in the order they became known, keeping only rows that were news.

    A value cannot be known before its own date (published_at is raised to date), and a row
    published after a later-dated row is never the latest known value, so it is dropped: what
    remains has date and published_at both increasing, and own-row lags never look ahead.
    """
    rows = series.with_columns(
        pl.max_horizontal(pl.col("published_at"), pl.col(DATE)).alias("published_at")
    ).sort(["published_at", DATE])
    previous_max = pl.col(DATE).cum_max().shift(1)
    return rows.filter(previous_max.is_null() | (pl.col(DATE) > previous_max))


def asof_join(
    base_dates: pl.Series | pl.DataFrame,
    series: pl.DataFrame,
    columns: Sequence[str] = ("value",),
    *,
    max_staleness_days: int | None = None,
) -> pl.DataFrame:
    """For each base date t, `columns` of the latest row with published_at <= t (one row per t).

    The one point-in-time join: rows come back sorted by date; values published more than
    `max_staleness_days` before t come back null.
    """
    dates = base_dates[DATE] if isinstance(base_dates, pl.DataFrame) else base_dates
    left = pl.DataFrame({DATE: dates.cast(pl.Date)}).sort(DATE)
    right = (
        point_in_time_rows(series.select(DATE, "published_at", *columns))
        .unique(subset="published_at", keep="last", maintain_order=True)
        .select(pl.col("published_at").alias("_published_at"), *columns)
    )
    tolerance = f"{max_staleness_days}d" if max_staleness_days is not None else None
    joined = left.join_asof(
        right,
        left_on=DATE,
        right_on="_published_at",
        strategy="backward",
        tolerance=tolerance,
        check_sortedness=False,
    )
    return joined.select(DATE, *columns)


def _prepare(prices: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in ("symbol", DATE, "value", "published_at") if c not in prices.columns]
    if missing:
        raise MarketDataError(f"market_prices is missing column(s) {missing}; conform it first")
    return prices.select(
        pl.col("symbol").cast(pl.Utf8),
        pl.col(DATE).cast(pl.Date),
        pl.col("value").cast(pl.Float64),
        pl.col("published_at").cast(pl.Date),
    ).filter(
        pl.col(DATE).is_not_null()
        & pl.col("published_at").is_not_null()
        & pl.col("value").is_not_null()
        & pl.col("value").is_finite()
    )


def _target_frame(rows: pl.DataFrame, target: str, h: int, horizon: str) -> pl.DataFrame:
    base = rows.sort([DATE, "published_at"]).unique(subset=DATE, keep="last", maintain_order=True)
    bad = base.filter(pl.col("value") <= 0)
    if bad.height:
        raise MarketDataError(
            f"target {target!r} has {bad.height} non-positive close(s) in market_prices "
            f"(first dates {[str(d) for d in bad[DATE].head(5)]}); log returns need prices > 0: "
            "fix or drop those rows at the source"
        )
    future = pl.col(PRICE).shift(-h)
    return base.select(
        pl.col(DATE),
        pl.lit(horizon).alias(HORIZON),
        pl.lit(h, dtype=pl.Int64).alias(HORIZON_DAYS),
        pl.col("value").alias(PRICE),
    ).with_columns(
        pl.col(DATE).shift(-h).alias(TARGET_DATE),
        future.alias(TARGET_PRICE),
        (future / pl.col(PRICE)).log().alias(TARGET_LOGRET),
    )


def _target_features(prefix: str) -> list[pl.Expr]:
    price = pl.col(PRICE)
    log_price = price.log()
    ret1 = log_price - log_price.shift(1)
    ret5 = log_price - log_price.shift(5)
    annualise = math.sqrt(TRADING_DAYS_PER_YEAR)
    exprs = [(log_price - log_price.shift(k)).alias(f"{prefix}ret{k}") for k in (1, 5, 21, 63)]
    exprs += [
        ret1.shift(1).alias(f"{prefix}ret1_lag1"),
        ret1.shift(2).alias(f"{prefix}ret1_lag2"),
        ret5.shift(5).alias(f"{prefix}ret5_lag5"),
    ]
    exprs += [(ret1.rolling_std(w) * annualise).alias(f"{prefix}vol{w}") for w in (5, 21, 63)]
    exprs += [
        (log_price - price.rolling_mean(k).log()).alias(f"{prefix}mom{k}") for k in (21, 63, 126)
    ]
    exprs += [
        (log_price - price.rolling_max(252).log()).alias(f"{prefix}dist_high252"),
        (log_price - price.rolling_min(252).log()).alias(f"{prefix}dist_low252"),
        ((log_price - log_price.rolling_mean(252)) / log_price.rolling_std(252)).alias(
            f"{prefix}z252"
        ),
    ]
    return exprs


def _calendar_features() -> list[pl.Expr]:
    angle = (pl.col(DATE).dt.month().cast(pl.Float64) - 1.0) * (2.0 * math.pi / 12.0)
    return [
        angle.sin().alias("f_month_sin"),
        angle.cos().alias("f_month_cos"),
        pl.col(DATE).dt.weekday().cast(pl.Float64).alias("f_dow"),
    ]


def _level(symbol: str, target: str) -> pl.Expr:
    return pl.col(PRICE) if symbol == target else pl.col(f"_level_{symbol}")


def _composite_features(target: str) -> list[tuple[tuple[str, ...], list[pl.Expr]]]:
    """Cross-series drivers on the target's calendar: (symbols needed, expressions)."""
    zl, zs, zm = _level("ZL", target), _level("ZS", target), _level("ZM", target)
    palm, wti = _level("PALM", target), _level("WTI", target)
    spread = zl * CENTS_PER_LB_TO_USD_PER_TONNE - palm
    oil = zl * 0.11
    meal = zm * 0.022

    def daily(level: pl.Expr) -> pl.Expr:
        return safe_logret(level, 1)

    def corr(other: pl.Expr, name: str) -> pl.Expr:
        return pl.rolling_corr(daily(zl), daily(other), window_size=63).alias(name)

    return [
        (
            ("ZL", "PALM"),
            [
                spread.alias("f_soy_palm_spread"),
                ((spread - spread.rolling_mean(63)) / spread.rolling_std(63)).alias(
                    "f_soy_palm_spread_z63"
                ),
            ],
        ),
        (
            ("ZL", "ZS", "ZM"),
            [
                (meal + oil - zs / 100.0).alias("f_crush_usd_bu"),
                (oil / (oil + meal)).alias("f_oil_share"),
            ],
        ),
        (("ZL", "WTI"), [(zl / wti.clip(lower_bound=WTI_RATIO_FLOOR)).alias("f_zl_wti_ratio")]),
        (("ZL", "PALM"), [corr(palm, "f_corr63_zl_palm")]),
        (("ZL", "WTI"), [corr(wti, "f_corr63_zl_wti")]),
        (("ZL", "ZS"), [corr(zs, "f_corr63_zl_zs")]),
    ]


def _series_expr(spec: SeriesFeature) -> pl.Expr:
    value = pl.col("value")
    if spec.kind == "level":
        expr = value
    elif spec.kind == "diff":
        expr = value - value.shift(spec.lag)
    elif spec.kind == "logret":
        expr = safe_logret(value, spec.lag)
    else:
        raise ValueError(f"unknown series feature kind {spec.kind!r}")
    return expr.alias(spec.column)


def _absent_notice(symbol: str, columns: Sequence[str]) -> str:
    where = (
        "news_sentiment (no scored articles)"
        if symbol == NEWS_SERIES
        else "market_prices (no usable rows)"
    )
    return f"{symbol} absent from {where}: dropped {', '.join(columns)}"


def sentiment_rows(news_sentiment: pl.DataFrame) -> pl.DataFrame:
    """The daily sentiment frame (`sentiment.features.daily_sentiment`) as a joinable series:
    date, published_at and the sentiment features as floats (nulls kept: they mean no news)."""
    wanted = (DATE, "published_at", *SENTIMENT_FEATURES)
    missing = [c for c in wanted if c not in news_sentiment.columns]
    if missing:
        raise ValueError(
            f"news_sentiment is missing column(s) {missing}; build it with "
            "cbi_platform.sentiment.features.daily_sentiment"
        )
    return news_sentiment.select(
        pl.col(DATE).cast(pl.Date),
        pl.col("published_at").cast(pl.Date),
        *[pl.col(c).cast(pl.Float64) for c in SENTIMENT_FEATURES],
    ).filter(pl.col(DATE).is_not_null() & pl.col("published_at").is_not_null())


def build_features(
    prices: pl.DataFrame,
    horizon: str,
    target: str = TARGET_SYMBOL,
    *,
    news_sentiment: pl.DataFrame | None = None,
) -> FeatureResult:
    """The feature frame for one horizon (contract.py); absent drivers drop out with a notice.

    `news_sentiment` (daily sentiment with `published_at`) adds the f_news_* features, joined
    as of publication like every other series; None (the default) leaves them out entirely.
    Whether a horizon passes it is sentiment.yaml's decision, taken by the caller.
    """
    h = horizon_days(horizon)
    data = _prepare(prices)
    target_rows = data.filter(pl.col("symbol") == target)
    if target_rows.height == 0:
        raise MarketDataError(
            f"market_prices has no usable rows for the target symbol {target!r}: "
            "load a source that provides it"
        )
    frame = _target_frame(target_rows, target, h, horizon)
    frame = frame.with_columns(_target_features(f"f_{target.lower()}_") + _calendar_features())

    present = set(data["symbol"].unique().to_list())
    by_symbol = {s: data.filter(pl.col("symbol") == s) for s in present if s != target}
    missing_features: dict[str, list[str]] = {}

    specs_by_symbol: dict[str, list[SeriesFeature]] = {}
    for spec in series_feature_specs(target):
        specs_by_symbol.setdefault(spec.symbol, []).append(spec)
    joined_columns: list[pl.Series] = []
    for symbol, specs in specs_by_symbol.items():
        if symbol not in by_symbol:
            missing_features.setdefault(symbol, []).extend(s.column for s in specs)
            continue
        rows = point_in_time_rows(by_symbol[symbol]).with_columns(_series_expr(s) for s in specs)
        joined = asof_join(
            frame[DATE],
            rows,
            [s.column for s in specs],
            max_staleness_days=staleness_days(symbol),
        )
        joined_columns += joined.drop(DATE).get_columns()

    composites = _composite_features(target)
    needed_levels = sorted({s for symbols, _ in composites for s in symbols} - {target})
    level_columns: list[pl.Series] = []
    for symbol in needed_levels:
        if symbol in by_symbol:
            joined = asof_join(
                frame[DATE], by_symbol[symbol], max_staleness_days=staleness_days(symbol)
            )
            level_columns.append(joined["value"].alias(f"_level_{symbol}"))
    frame = frame.hstack(joined_columns + level_columns)

    composite_exprs: list[pl.Expr] = []
    for symbols, exprs in composites:
        absent = [s for s in symbols if s != target and s not in by_symbol]
        if absent:
            for symbol in absent:
                missing_features.setdefault(symbol, []).extend(e.meta.output_name() for e in exprs)
            continue
        composite_exprs += exprs
    frame = frame.with_columns(composite_exprs)

    if news_sentiment is not None:
        news = sentiment_rows(news_sentiment)
        if news.height:
            joined = asof_join(
                frame[DATE],
                news,
                SENTIMENT_FEATURES,
                max_staleness_days=staleness_days(NEWS_SERIES),
            )
            frame = frame.hstack(joined.drop(DATE).get_columns())
        else:
            missing_features[NEWS_SERIES] = list(SENTIMENT_FEATURES)

    features = [c for c in frame.columns if c.startswith(FEATURE_PREFIX)]
    finite_only = [
        pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c) for c in features
    ]
    frame = frame.select(*META_COLUMNS, *finite_only)

    notices = tuple(_absent_notice(symbol, columns) for symbol, columns in missing_features.items())
    dropped = tuple(dict.fromkeys(c for columns in missing_features.values() for c in columns))
    return FeatureResult(frame=frame, notices=notices, dropped=dropped)
