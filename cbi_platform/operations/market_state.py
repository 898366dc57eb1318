"""The market's state for the buyer's intelligence card (issue 22 §4), published by the daily
run for the API, which never opens a DuckDB file.

Each item carries its own as-of date, so the page can say how fresh each one is:
- the detected regime (`regimes.detected.label_regimes`, trailing data only) and how long it has
  lasted: trading days since the first day of the current unbroken run of that label;
- the soy–crude and soy–palm return correlations against their own point-in-time band
  (`operations.correlation`, the correlation-break monitor's numbers), or why a pair is skipped;
- COT positioning: the managed-money net position in the target (`COT_<target>`, % of open
  interest) as known on the day (weekly, usable from its release), its 4-week change and where it
  sits in its own history; None when the data has no COT series;
- news sentiment (`news_state`), published by the `news_sentiment` asset when sentiment.yaml
  puts news in some horizon's features (the asset does not run otherwise).

`publish_market_state` and `publish_news_state` write the JSON atomically (temporary file,
then `os.replace`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.operations.correlation import PairResult

PATH = ("published", "market_state.json")
NEWS_PATH = ("published", "news_sentiment.json")
PAIR_NAMES = {"soy_crude": "Soy–crude", "soy_palm": "Soy–palm"}


def market_state_path(home: str | Path) -> Path:
    return Path(home).joinpath(*PATH)


def _finite(value: Any, digits: int = 4) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def regime_spell(labels: pl.DataFrame) -> dict[str, Any] | None:
    """The latest detected regime, the first day of its current run and the run's length in
    trading days (the label dates), with the trailing volatility behind it. None without a
    label."""
    frame = labels.filter(pl.col("regime").is_not_null()).sort("date")
    if frame.height == 0:
        return None
    regimes = frame["regime"].to_list()
    current = regimes[-1]
    start = len(regimes) - 1
    while start > 0 and regimes[start - 1] == current:
        start -= 1
    last = frame.row(frame.height - 1, named=True)
    return {
        "as_of": frame["date"][-1].isoformat(),
        "regime": current,
        "since": frame["date"][start].isoformat(),
        "trading_days": len(regimes) - start,
        "trailing_vol": _finite(last.get("trailing_vol")),
        "crisis_threshold": _finite(last.get("crisis_threshold")),
    }


def correlation_state(results: Mapping[str, PairResult]) -> list[dict[str, Any]]:
    """Each monitored pair's latest correlation and band, or the reason it was skipped."""
    out = []
    for pair, result in results.items():
        row = result.latest()
        base = {"pair": pair, "name": PAIR_NAMES.get(pair, pair), "partner": result.partner}
        if result.skipped or row is None:
            out.append({**base, "as_of": None, "skipped": result.reason or "no data"})
            continue
        corr, lo, hi = _finite(row["corr"]), _finite(row["band_lo"]), _finite(row["band_hi"])
        if corr is None:
            state = "unknown"
        elif lo is None or hi is None:
            state = "no_band"
        elif corr < lo:
            state = "below"
        elif corr > hi:
            state = "above"
        else:
            state = "inside"
        out.append(
            {
                **base,
                "as_of": row["date"].isoformat(),
                "skipped": None,
                "corr": corr,
                "band_lo": lo,
                "band_hi": hi,
                "state": state,
                "run_length": int(row["run_length"] or 0),
                "breaking": bool(row["breaking"]),
            }
        )
    return out


def cot_positioning(
    prices: pl.DataFrame, target: str, as_of: dt.date, history_weeks: int = 156
) -> dict[str, Any] | None:
    """The latest `COT_<target>` value known on `as_of` (dated and published by then), its change
    over 4 reports, and its percentile among the previous `history_weeks` reports (point in
    time). None when the data has no such series."""
    symbol = f"COT_{target}"
    keep = (pl.col("symbol") == symbol) & (pl.col("date") <= as_of)
    if "published_at" in prices.columns:
        keep = keep & (pl.col("published_at").cast(pl.Date) <= as_of)
    series = (
        prices.filter(keep)
        .select("date", pl.col("value").cast(pl.Float64), *_published(prices))
        .filter(pl.col("value").is_finite())
        .unique("date", keep="last")
        .sort("date")
    )
    if series.height == 0:
        return None
    values = series["value"].to_numpy()
    latest = float(values[-1])
    past = values[-(history_weeks + 1) : -1]
    percentile = float(np.mean(past <= latest) * 100) if past.size else None
    change4 = float(latest - values[-5]) if values.size >= 5 else None
    last = series.row(series.height - 1, named=True)
    published = last.get("published_at")
    return {
        "symbol": symbol,
        "as_of": last["date"].isoformat(),
        "published_at": _iso(published),
        "net_pct_oi": _finite(latest, 2),
        "change_4w": _finite(change4, 2),
        "percentile": _finite(percentile, 1),
        "history_reports": int(past.size),
    }


def _published(prices: pl.DataFrame) -> list[pl.Expr]:
    return [pl.col("published_at")] if "published_at" in prices.columns else []


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return None


def market_state(
    prices: pl.DataFrame,
    target: str,
    as_of: dt.date,
    correlations: Mapping[str, PairResult],
    regime_labels: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Everything the intelligence card reads that only the market data can tell. `regime_labels`
    defaults to `label_regimes` on the target's closes up to `as_of`."""
    if regime_labels is None:
        from cbi_platform.regimes.detected import label_regimes

        closes = (
            prices.filter((pl.col("symbol") == target) & (pl.col("date") <= as_of))
            .select("date", pl.col("value").cast(pl.Float64))
            .filter(pl.col("value") > 0)
            .unique("date", keep="last")
            .sort("date")
        )
        regime_labels = (
            label_regimes(closes["date"], closes["value"].to_numpy()) if closes.height else None
        )
    return {
        "as_of": as_of.isoformat(),
        "target": target,
        "regime": regime_spell(regime_labels) if regime_labels is not None else None,
        "correlations": correlation_state(correlations),
        "cot": cot_positioning(prices, target, as_of),
    }


def publish_market_state(home: str | Path, state: Mapping[str, Any]) -> Path:
    """Write `state` as `published/market_state.json` under `home`, atomically."""
    return _publish_json(market_state_path(home), state)


def news_state(daily: pl.DataFrame, scorer: str | None = None) -> dict[str, Any] | None:
    """The latest daily news sentiment (`sentiment.features.daily_sentiment`'s frame): the
    trailing mean article score, the article count behind it, its surprise against the longer
    window and where the mean sits among its own past values. None without a scored day."""
    if daily.height == 0 or "f_news_sent_mean" not in daily.columns:
        return None
    frame = daily.sort("date")
    last = frame.row(frame.height - 1, named=True)
    means = frame["f_news_sent_mean"].drop_nulls().to_numpy()
    mean = last.get("f_news_sent_mean")
    percentile = (
        float(np.mean(means[:-1] <= mean) * 100) if mean is not None and means.size > 1 else None
    )
    return {
        "as_of": last["date"].isoformat(),
        "mean_score": _finite(mean),
        "articles": int(last.get("f_news_count") or 0),
        "surprise": _finite(last.get("f_news_sent_surprise")),
        "percentile": _finite(percentile, 1),
        "history_days": int(max(means.size - 1, 0)),
        "scorer": scorer,
    }


def news_state_path(home: str | Path) -> Path:
    return Path(home).joinpath(*NEWS_PATH)


def publish_news_state(home: str | Path, state: Mapping[str, Any] | None) -> Path:
    """Write the news state (null when nothing was scored) as `published/news_sentiment.json`."""
    return _publish_json(news_state_path(home), state)


def _publish_json(target: Path, payload: Any) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, allow_nan=False)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
