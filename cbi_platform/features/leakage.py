"""Leakage gates for feature frames: each returns a GateResult with JSON-ready evidence.

Four independent angles on "a feature at origin t uses only what was published by t":
recomputation on truncated data, equality with forward-shifted inputs, correlation with the
future return, and a direct recomputation of every as-of joined value from `market_prices`.
When the frame carries news-sentiment features, the daily `news_sentiment` frame is an input
like `market_prices`: truncation cuts it by `published_at` too, and the as-of gate recomputes
the f_news_* columns from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.features.build import (
    PRICE_FLOOR,
    FeatureResult,
    SeriesFeature,
    build_features,
    return_clip,
    sentiment_rows,
    series_feature_specs,
    staleness_days,
)
from cbi_platform.features.contract import (
    DATE,
    HORIZON_DAYS,
    TARGET_LOGRET,
    TARGET_PRICE,
    feature_columns,
)
from cbi_platform.market.schema import TARGET_SYMBOL
from cbi_platform.sentiment.features import NEWS_SERIES, SENTIMENT_FEATURES

MAX_EVIDENCE_ROWS = 20

# target_correlation_gate: |corr| limit = clip(CORRELATION_K / sqrt(n / h), FLOOR, CAP).
CORRELATION_K = 4.0
CORRELATION_FLOOR = 0.5
CORRELATION_CAP = 0.95


@dataclass(frozen=True)
class GateResult:
    passed: bool
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[pl.DataFrame, str], "FeatureResult | pl.DataFrame"]


def _frame_of(built: FeatureResult | pl.DataFrame) -> pl.DataFrame:
    return built.frame if isinstance(built, FeatureResult) else built


def _as_float_matrix(frame: pl.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Columns as float64 with nulls as NaN: NaN marks 'no value' everywhere below."""
    if not columns:
        return np.empty((frame.height, 0))
    return np.column_stack(
        [frame[c].cast(pl.Float64).fill_null(float("nan")).to_numpy() for c in columns]
    )


def _default_cuts(dates: pl.Series, n_cuts: int) -> list:
    """Evenly spread cuts, staggered by one row each so they fall on different weekdays:
    a weekly series read too early leaks only between its as-of day and its release."""
    n = dates.len()
    positions = sorted({int(n * i / (n_cuts + 1)) + i - 1 for i in range(1, n_cuts + 1)})
    return [dates[p] for p in positions if 0 <= p < n - 1]


def truncation_gate(
    prices: pl.DataFrame,
    horizon: str,
    build: Builder = build_features,
    cut_dates: Sequence | None = None,
    n_cuts: int = 4,
    tolerance: float = 1e-9,
    frame: pl.DataFrame | None = None,
    news_sentiment: pl.DataFrame | None = None,
) -> GateResult:
    """Features rebuilt from data published by a cut equal the full frame on every row <= cut.

    A feature that reads the future (a centred window, shift(-1), a join on `date`) changes
    when the future is removed. `frame` is the frame under test (the materialized `features`
    table); without it, the full build. Compares all its f_ columns; nulls must match nulls. A
    column the rebuilds lack (a series with no rows yet, or a column the builder never makes)
    must be null on every row <= cut. With `news_sentiment`, it is cut by `published_at` too
    and passed to `build` as the keyword `news_sentiment`.
    """

    def inputs(cut=None) -> dict[str, pl.DataFrame]:
        if news_sentiment is None:
            return {}
        if cut is None:
            return {"news_sentiment": news_sentiment}
        return {"news_sentiment": news_sentiment.filter(pl.col("published_at") <= cut)}

    full = (_frame_of(build(prices, horizon, **inputs())) if frame is None else frame).sort(DATE)
    features = feature_columns(full)
    cuts = list(cut_dates) if cut_dates is not None else _default_cuts(full[DATE], n_cuts)
    offenders: list[dict[str, Any]] = []
    for cut in cuts:
        cut_prices = prices.filter(pl.col("published_at") <= cut)
        truncated = _frame_of(build(cut_prices, horizon, **inputs(cut)))
        head = full.filter(pl.col(DATE) <= cut)
        compared = head.select(DATE, *features).join(
            truncated.select(DATE, *[c for c in features if c in truncated.columns]),
            on=DATE,
            how="left",
            suffix="__cut",
        )
        if truncated.filter(pl.col(DATE) <= cut).height != head.height:
            offenders.append(
                {
                    "cut": str(cut),
                    "column": DATE,
                    "rows": f"{head.height} rows in the full build, "
                    f"{truncated.filter(pl.col(DATE) <= cut).height} after the cut",
                }
            )
        dates = compared[DATE]
        for column in features:
            full_values = _as_float_matrix(compared, [column])[:, 0]
            if column in truncated.columns:
                cut_values = _as_float_matrix(compared, [f"{column}__cut"])[:, 0]
            else:  # not rebuilt after the cut: must be null before it
                cut_values = np.full(compared.height, np.nan)
            both_nan = np.isnan(full_values) & np.isnan(cut_values)
            close = np.abs(full_values - cut_values) <= tolerance * (1.0 + np.abs(full_values))
            bad = np.flatnonzero(~(both_nan | close))
            if bad.size:
                offenders.append(
                    {
                        "cut": str(cut),
                        "column": column,
                        "n_rows": int(bad.size),
                        "dates": [str(dates[int(i)]) for i in bad[-5:]],
                        "full": [_json_float(full_values[i]) for i in bad[-5:]],
                        "truncated": [_json_float(cut_values[i]) for i in bad[-5:]],
                    }
                )
    columns = sorted({o["column"] for o in offenders})
    summary = (
        f"features equal on rows up to each of {len(cuts)} cuts"
        if not offenders
        else f"{len(columns)} column(s) change when data after the cut is removed: {columns}"
    )
    return GateResult(
        passed=not offenders,
        summary=summary,
        evidence={
            "cuts": [str(c) for c in cuts],
            "columns_checked": len(features),
            "offending_columns": columns,
            "offenders": offenders[:MAX_EVIDENCE_ROWS],
        },
    )


def _json_float(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _log_or_nan(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), np.nan)


def _aligned_by_date(frame_dates: pl.Series, prices: pl.DataFrame) -> dict[str, np.ndarray]:
    """Each series' true level on the frame's dates (latest observation dated <= t)."""
    base = pl.DataFrame({DATE: frame_dates}).with_row_index("_row").sort(DATE)
    levels: dict[str, np.ndarray] = {}
    for symbol in sorted(prices["symbol"].unique().to_list()):
        series = (
            prices.filter((pl.col("symbol") == symbol) & pl.col("value").is_not_null())
            .select(DATE, "value")
            .unique(subset=DATE, keep="last")
            .sort(DATE)
        )
        joined = base.join_asof(series, on=DATE, strategy="backward").sort("_row")
        levels[symbol] = joined["value"].fill_null(float("nan")).to_numpy()
    return levels


def _shift_forward(values: np.ndarray, s: int) -> np.ndarray:
    out = np.full_like(values, np.nan)
    if s < values.size:
        out[: values.size - s] = values[s:]
    return out


def forward_shift_gate(
    frame: pl.DataFrame,
    prices: pl.DataFrame,
    max_shift: int = 5,
    tolerance: float = 1e-9,
    min_overlap: int = 20,
    match_fraction: float = 0.99,
) -> GateResult:
    """No feature equals a forward-shifted input: a level, daily log return or forward return of
    any series shifted by 1..max_shift rows or by the horizon, nor target_price/target_logret.

    'Equals' means within tolerance on >= match_fraction of >= min_overlap rows where both are
    present, against a candidate that varies there (a flat candidate proves nothing).
    """
    frame = frame.sort(DATE)
    features = feature_columns(frame)
    h = int(frame[HORIZON_DAYS][0]) if frame.height else 0
    shifts = sorted(set(range(1, max_shift + 1)) | ({h} if h > 0 else set()))
    candidates: dict[str, np.ndarray] = {
        TARGET_PRICE: _as_float_matrix(frame, [TARGET_PRICE])[:, 0],
        TARGET_LOGRET: _as_float_matrix(frame, [TARGET_LOGRET])[:, 0],
    }
    for symbol, level in _aligned_by_date(frame[DATE], prices).items():
        log_level = _log_or_nan(level)
        daily = log_level - np.concatenate([[np.nan], log_level[:-1]])
        for s in shifts:
            candidates[f"{symbol}.level.shift(-{s})"] = _shift_forward(level, s)
            candidates[f"{symbol}.logret1.shift(-{s})"] = _shift_forward(daily, s)
            candidates[f"{symbol}.forward_logret{s}"] = _shift_forward(log_level, s) - log_level
    values = _as_float_matrix(frame, features)
    present = ~np.isnan(values)
    offenders: list[dict[str, Any]] = []
    for name, candidate in candidates.items():
        mask = present & ~np.isnan(candidate)[:, None]
        overlap = mask.sum(axis=0)
        if not (overlap >= min_overlap).any():
            continue
        with np.errstate(invalid="ignore"):
            equal = mask & (
                np.abs(values - candidate[:, None])
                <= tolerance * (1.0 + np.abs(candidate))[:, None]
            )
        fraction = equal.sum(axis=0) / np.maximum(overlap, 1)
        for j in np.flatnonzero((overlap >= min_overlap) & (fraction >= match_fraction)):
            if np.nanstd(candidate[mask[:, j]]) <= tolerance:
                continue
            offenders.append(
                {
                    "column": features[j],
                    "equals": name,
                    "overlap_rows": int(overlap[j]),
                    "match_fraction": round(float(fraction[j]), 4),
                }
            )
    columns = sorted({o["column"] for o in offenders})
    summary = (
        f"no feature equals any of {len(candidates)} forward-shifted inputs"
        if not offenders
        else f"{len(columns)} feature(s) equal a forward-shifted input: {columns}"
    )
    return GateResult(
        passed=not offenders,
        summary=summary,
        evidence={
            "shifts": shifts,
            "candidates_checked": len(candidates),
            "columns_checked": len(features),
            "offending_columns": columns,
            "offenders": offenders[:MAX_EVIDENCE_ROWS],
        },
    )


def correlation_threshold(n_rows: int, horizon_days: int, k: float = CORRELATION_K) -> float:
    """|corr| limit for n_rows overlapping h-day targets: k standard errors of a null correlation.

    Overlapping h-day returns leave about n/h independent observations, so a correlation that
    is truly zero has a standard error near sqrt(h/n); persistent features (z-scores, momentum)
    against overlapping targets reach several of those by chance. The floor keeps the gate from
    flagging honest predictors on long samples (no honest daily feature explains a quarter of
    future-return variance); the cap keeps a near-copy of the target failing however short the
    sample is.
    """
    n_eff = max(n_rows / max(horizon_days, 1), 1.0)
    return float(min(CORRELATION_CAP, max(CORRELATION_FLOOR, k / math.sqrt(n_eff))))


def target_correlation_gate(
    frame: pl.DataFrame,
    threshold: float | None = None,
    min_rows: int = 30,
) -> GateResult:
    """No feature's Pearson correlation with target_logret exceeds the threshold in |value|.

    Returns, not levels: lagged levels track future prices honestly. Without an explicit
    threshold, each feature gets `correlation_threshold(n, h)` for its own non-null rows n, i.e.
    max(0.5, 4 / sqrt(n / h)) capped at 0.95. Why k = 4: on the seeded random walks of the tests
    (20 seeds x 1,500 and 6,800 days x five horizons) the largest honest |corr| * sqrt(n / h)
    was 4.2, at 1w where |corr| was only 0.12 (under the floor), and 2.9 wherever the floor did
    not bind; the largest honest |corr| was 0.39 at 1m and 0.89 at 12m on 1,500 days (n / h ~ 4,
    hence the cap). On the real 2004-2024 data the largest is 0.18. A look-ahead of
    target_logret plus noise of half its spread correlates ~0.9 and fails wherever n / h >= 64.
    Short samples at long horizons leave this gate weak by nature; truncation and forward-shift
    gates do not depend on sample size.
    """
    frame = frame.sort(DATE)
    features = feature_columns(frame)
    h = int(frame[HORIZON_DAYS][0]) if frame.height else 1
    target = _as_float_matrix(frame, [TARGET_LOGRET])[:, 0]
    values = _as_float_matrix(frame, features)
    checked: list[dict[str, Any]] = []
    offenders: list[dict[str, Any]] = []
    for j, column in enumerate(features):
        mask = ~np.isnan(values[:, j]) & ~np.isnan(target)
        n = int(mask.sum())
        if n < min_rows:
            continue
        x, y = values[mask, j], target[mask]
        if np.std(x) == 0.0 or np.std(y) == 0.0:
            continue
        corr = float(np.corrcoef(x, y)[0, 1])
        limit = threshold if threshold is not None else correlation_threshold(n, h)
        row = {"column": column, "corr": round(corr, 4), "threshold": round(limit, 4), "n": n}
        checked.append(row)
        if abs(corr) > limit:
            offenders.append(row)
    offenders.sort(key=lambda r: -abs(r["corr"]))
    top = sorted(checked, key=lambda r: -abs(r["corr"]))[:5]
    summary = (
        f"{len(checked)} feature(s) below their correlation limit with {TARGET_LOGRET}"
        if not offenders
        else f"{len(offenders)} feature(s) correlate with {TARGET_LOGRET} above the limit: "
        f"{[o['column'] for o in offenders]}"
    )
    return GateResult(
        passed=not offenders,
        summary=summary,
        evidence={
            "horizon_days": h,
            "columns_checked": len(checked),
            "offenders": offenders[:MAX_EVIDENCE_ROWS],
            "largest": top,
        },
    )


def _expected_asof(spec: SeriesFeature, series: pl.DataFrame, dates: np.ndarray) -> np.ndarray:
    """The spec's value at each date, straight from the long table (numpy, not the join)."""
    series = series.sort([DATE, "published_at"]).unique(
        subset=DATE, keep="first", maintain_order=True
    )
    obs_date = series[DATE].cast(pl.Int32).to_numpy()
    published = np.maximum(series["published_at"].cast(pl.Int32).to_numpy(), obs_date)
    value = series["value"].to_numpy()
    order = np.argsort(published, kind="stable")
    # latest observation (by date) among rows published by t
    latest_by_publication = np.maximum.accumulate(order)
    j = np.searchsorted(published[order], dates, side="right") - 1
    expected = np.full(dates.size, np.nan)
    known = j >= 0
    latest = np.where(known, latest_by_publication[np.maximum(j, 0)], 0)
    fresh = known & (dates - published[latest] <= staleness_days(spec.symbol))
    if spec.kind == "level":
        expected[fresh] = value[latest[fresh]]
        return expected
    earlier = latest - spec.lag
    ok = fresh & (earlier >= 0)
    earlier_safe = np.maximum(earlier, 0)
    ok &= published[earlier_safe] <= dates  # the lagged row must be known by t too
    now, then = value[latest[ok]], value[earlier_safe[ok]]
    if spec.kind == "diff":
        expected[ok] = now - then
    elif spec.kind == "logret":
        bound = return_clip(spec.lag)
        change = np.log(np.maximum(now, PRICE_FLOOR)) - np.log(np.maximum(then, PRICE_FLOOR))
        expected[ok] = np.clip(change, -bound, bound)
    return expected


def _sentiment_specs(frame: pl.DataFrame) -> list[SeriesFeature]:
    return [
        SeriesFeature(c, NEWS_SERIES, "level", 0) for c in SENTIMENT_FEATURES if c in frame.columns
    ]


def asof_gate(
    frame: pl.DataFrame,
    prices: pl.DataFrame,
    target: str = TARGET_SYMBOL,
    tolerance: float = 1e-9,
    news_sentiment: pl.DataFrame | None = None,
) -> GateResult:
    """Every joined series' value in the frame was published by the row's date.

    For each single-series feature (`build.series_feature_specs`) present in the frame, every
    row is recomputed directly from `prices`: the latest observation among rows with
    max(published_at, date) <= t (and within the series' staleness), and the one `lag` rows
    before it. A join on `date` instead of `published_at` shows up as rows that differ. The
    f_news_* columns are recomputed the same way from `news_sentiment` (a null there is "no
    news" and must stay null); present without `news_sentiment`, they cannot be checked and fail.
    """
    frame = frame.sort(DATE)
    dates = frame[DATE].cast(pl.Int32).to_numpy()
    clean = prices.filter(
        pl.col("value").is_not_null()
        & pl.col("value").is_finite()
        & pl.col("published_at").is_not_null()
    )
    offenders: list[dict[str, Any]] = []
    per_column: dict[str, int] = {}
    checked: list[str] = []
    for spec in series_feature_specs(target):
        if spec.column not in frame.columns:
            continue
        series = clean.filter(pl.col("symbol") == spec.symbol).select(
            DATE, "published_at", pl.col("value").cast(pl.Float64)
        )
        expected = _expected_asof(spec, series, dates)
        actual = _as_float_matrix(frame, [spec.column])[:, 0]
        checked.append(spec.column)
        both_nan = np.isnan(expected) & np.isnan(actual)
        close = np.abs(expected - actual) <= tolerance * (1.0 + np.abs(expected))
        bad = np.flatnonzero(~(both_nan | close))
        if bad.size:
            per_column[spec.column] = int(bad.size)
            for i in bad[:MAX_EVIDENCE_ROWS]:
                offenders.append(
                    {
                        "date": str(frame[DATE][int(i)]),
                        "column": spec.column,
                        "symbol": spec.symbol,
                        "expected": _json_float(expected[i]),
                        "actual": _json_float(actual[i]),
                    }
                )
    for spec in _sentiment_specs(frame):
        checked.append(spec.column)
        if news_sentiment is None:
            per_column[spec.column] = frame.height
            offenders.append(
                {"column": spec.column, "reason": "no news_sentiment given to recompute it from"}
            )
            continue
        series = sentiment_rows(news_sentiment).select(
            DATE, "published_at", pl.col(spec.column).alias("value")
        )
        expected = _expected_asof(spec, series, dates)
        actual = _as_float_matrix(frame, [spec.column])[:, 0]
        both_nan = np.isnan(expected) & np.isnan(actual)
        close = np.abs(expected - actual) <= tolerance * (1.0 + np.abs(expected))
        bad = np.flatnonzero(~(both_nan | close))
        if bad.size:
            per_column[spec.column] = int(bad.size)
            offenders += [
                {
                    "date": str(frame[DATE][int(i)]),
                    "column": spec.column,
                    "symbol": spec.symbol,
                    "expected": _json_float(expected[i]),
                    "actual": _json_float(actual[i]),
                }
                for i in bad[:MAX_EVIDENCE_ROWS]
            ]
    summary = (
        f"{len(checked)} joined column(s) match values published by each row's date"
        if not per_column
        else f"{len(per_column)} joined column(s) use values not published by the row's date: "
        f"{sorted(per_column)}"
    )
    return GateResult(
        passed=not per_column,
        summary=summary,
        evidence={
            "columns_checked": checked,
            "rows_checked": frame.height,
            "offending_rows_per_column": per_column,
            "offenders": offenders[:MAX_EVIDENCE_ROWS],
        },
    )


LEAKAGE_GATES = ("asof", "forward_shift", "target_correlation", "truncation")
_NEEDS_PRICES = frozenset({"asof", "forward_shift", "truncation"})
_NEEDS_TARGET = frozenset({"asof", "truncation"})


def run_leakage_gates(
    features_frame: pl.DataFrame,
    prices: pl.DataFrame | None,
    horizon: str,
    target: str | None,
    gates: Iterable[str] = LEAKAGE_GATES,
    build: Callable[..., FeatureResult | pl.DataFrame] = build_features,
    news_sentiment: pl.DataFrame | None = None,
) -> dict[str, GateResult]:
    """Run the leakage gates on one horizon's feature frame: {gate: result}, in `gates` order.

    The one runner behind `cbi validate` and the asset checks, so both judge the same thing:
    the frame under test (the materialized table) against `prices` for the `target` symbol.
    Truncation rebuilds with `build(prices, horizon, target=target)` and compares the rebuilds
    to `features_frame`. `prices` and `target` may be None only for gates that do not read them.
    `news_sentiment` is the daily sentiment the frame was built with (None: built without);
    truncation cuts it and passes it to `build`, the as-of gate recomputes f_news_* from it.
    """
    wanted = list(gates)
    unknown = sorted(set(wanted) - set(LEAKAGE_GATES))
    if unknown:
        raise ValueError(f"unknown leakage gate(s) {unknown}; known {list(LEAKAGE_GATES)}")
    if prices is None and _NEEDS_PRICES.intersection(wanted):
        raise ValueError(f"gates {sorted(_NEEDS_PRICES.intersection(wanted))} need prices")
    if target is None and _NEEDS_TARGET.intersection(wanted):
        raise ValueError(f"gates {sorted(_NEEDS_TARGET.intersection(wanted))} need the target")
    results: dict[str, GateResult] = {}
    for gate in wanted:
        if gate == "asof":
            results[gate] = asof_gate(
                features_frame, prices, target=target, news_sentiment=news_sentiment
            )
        elif gate == "forward_shift":
            results[gate] = forward_shift_gate(features_frame, prices)
        elif gate == "target_correlation":
            results[gate] = target_correlation_gate(features_frame)
        else:
            results[gate] = truncation_gate(
                prices,
                horizon,
                build=lambda p, h, **inputs: build(p, h, target=target, **inputs),
                frame=features_frame,
                news_sentiment=news_sentiment,
            )
    return results
