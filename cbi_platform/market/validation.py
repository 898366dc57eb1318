"""Quality rules for the canonical `market_prices` table.

Each rule returns a `Finding` with evidence (symbols, dates, rows) so that the same rules serve
the asset (which refuses to write bad data), the asset checks (which report on what was
written) and `cbi validate` (which prints a report).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from cbi_platform.market.schema import (
    MARKET_PRICES_SCHEMA,
    REQUIRED_PRICE_COLUMNS,
    MarketDataError,
)

ERROR = "ERROR"
WARN = "WARN"
# Symbols whose values are positions or indices, not prices: non-positive values are legitimate.
NON_PRICE_SYMBOLS = ("COT_ZL", "COT_ZS", "COT_ZM")
MAX_EVIDENCE = 10


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # ERROR blocks; WARN informs
    passed: bool
    message: str
    evidence: dict = field(default_factory=dict)


def _dates(values) -> list[str]:
    return [str(v) for v in list(values)[:MAX_EVIDENCE]]


def check_schema(prices: pl.DataFrame) -> Finding:
    missing = [c for c in REQUIRED_PRICE_COLUMNS if c not in prices.columns]
    wrong = {
        c: str(prices.schema[c])
        for c, t in MARKET_PRICES_SCHEMA.items()
        if c in prices.columns and prices.schema[c] != t
    }
    nulls = {
        c: int(prices[c].null_count())
        for c in REQUIRED_PRICE_COLUMNS
        if c in prices.columns and prices[c].null_count() > 0
    }
    passed = not missing and not wrong and not nulls and prices.height > 0
    parts = []
    if missing:
        parts.append(f"missing columns {missing}")
    if wrong:
        parts.append(f"wrong types {wrong}")
    if nulls:
        parts.append(f"nulls in required columns {nulls}")
    if prices.height == 0:
        parts.append("no rows")
    msg = "schema ok" if passed else "market_prices schema: " + "; ".join(parts)
    evidence = {"missing": missing, "wrong_types": wrong, "nulls": nulls, "rows": prices.height}
    return Finding("schema", ERROR, passed, msg, evidence)


def check_duplicates(prices: pl.DataFrame) -> Finding:
    dup = (
        prices.group_by(["symbol", "date"]).len().filter(pl.col("len") > 1).sort(["symbol", "date"])
    )
    if dup.height == 0:
        return Finding("duplicate_dates", ERROR, True, "no duplicate (symbol, date) rows")
    by_symbol = {s: _dates(g["date"]) for (s,), g in dup.group_by(["symbol"], maintain_order=True)}
    msg = f"{dup.height} duplicate (symbol, date) pairs: " + "; ".join(
        f"{s} on {', '.join(d)}" for s, d in by_symbol.items()
    )
    return Finding("duplicate_dates", ERROR, False, msg, {"duplicates": by_symbol})


def check_target_positive(prices: pl.DataFrame, target: str) -> Finding:
    rows = prices.filter((pl.col("symbol") == target) & (pl.col("value") <= 0))
    if prices.filter(pl.col("symbol") == target).height == 0:
        return Finding(
            "target_present",
            ERROR,
            False,
            f"target symbol {target} has no rows",
            {"target": target},
        )
    if rows.height == 0:
        return Finding("target_positive", ERROR, True, f"all {target} prices > 0")
    msg = f"{rows.height} non-positive {target} prices on {', '.join(_dates(rows['date']))}"
    evidence = {"dates": _dates(rows["date"]), "values": rows["value"].head(MAX_EVIDENCE).to_list()}
    return Finding("target_positive", ERROR, False, msg, evidence)


def check_driver_positive(prices: pl.DataFrame, target: str) -> Finding:
    rows = prices.filter(
        (pl.col("symbol") != target)
        & ~pl.col("symbol").is_in(NON_PRICE_SYMBOLS)
        & (pl.col("value") <= 0)
    )
    if rows.height == 0:
        return Finding("driver_positive", WARN, True, "all driver prices > 0")
    listed = [
        f"{r['symbol']} {r['date']} = {r['value']}" for r in rows.head(MAX_EVIDENCE).to_dicts()
    ]
    msg = f"{rows.height} non-positive driver prices (log features clip them): " + "; ".join(listed)
    return Finding("driver_positive", WARN, False, msg, {"rows": listed})


def _daily_symbols(prices: pl.DataFrame) -> list[str]:
    """Symbols whose median spacing between dates is under 4 calendar days."""
    spacing = (
        prices.sort(["symbol", "date"])
        .with_columns(gap=pl.col("date").diff().dt.total_days().over("symbol"))
        .group_by("symbol")
        .agg(pl.col("gap").median())
    )
    return sorted(spacing.filter(pl.col("gap") < 4)["symbol"].to_list())


def check_gaps(prices: pl.DataFrame, max_business_days: int = 5) -> Finding:
    """Daily series with more than `max_business_days` missing business days in a row."""
    offenders: dict[str, list[str]] = {}
    for sym in _daily_symbols(prices):
        d = prices.filter(pl.col("symbol") == sym).sort("date")["date"].to_numpy()
        if len(d) < 2:
            continue
        gaps = np.busday_count(d[:-1].astype("datetime64[D]"), d[1:].astype("datetime64[D]")) - 1
        idx = np.flatnonzero(gaps > max_business_days)
        if len(idx):
            offenders[sym] = [f"{d[i]}..{d[i + 1]} ({gaps[i]} bdays)" for i in idx[:MAX_EVIDENCE]]
    if not offenders:
        return Finding("gaps", WARN, True, f"no daily gaps over {max_business_days} business days")
    msg = "gaps in daily series: " + "; ".join(f"{s}: {', '.join(g)}" for s, g in offenders.items())
    return Finding("gaps", WARN, False, msg, {"gaps": offenders})


def check_staleness(
    prices: pl.DataFrame, reference: dt.date, max_business_days: int = 5
) -> Finding:
    """Series whose last date lags the reference (a snapshot's as_of, or today) too much."""
    last = prices.group_by("symbol").agg(pl.col("date").max().alias("last")).sort("symbol")
    daily = set(_daily_symbols(prices))
    stale = {}
    for sym, last_date in last.iter_rows():
        lag = int(np.busday_count(np.datetime64(last_date, "D"), np.datetime64(reference, "D")))
        allowed = max_business_days if sym in daily else 30 if not sym.endswith("_M") else 70
        if lag > allowed:
            stale[sym] = {"last_date": str(last_date), "business_days_behind": lag}
    if not stale:
        return Finding("staleness", WARN, True, f"every series is current as of {reference}")
    msg = f"stale against {reference}: " + ", ".join(
        f"{s} (last {v['last_date']}, {v['business_days_behind']} bdays)" for s, v in stale.items()
    )
    return Finding("staleness", WARN, False, msg, {"reference": str(reference), "stale": stale})


def check_return_outliers(prices: pl.DataFrame, z_threshold: float = 12.0) -> Finding:
    """Daily log returns whose robust z-score (median/MAD) exceeds the threshold."""
    rets = (
        prices.filter(~pl.col("symbol").is_in(NON_PRICE_SYMBOLS) & (pl.col("value") > 0))
        .sort(["symbol", "date"])
        .with_columns(ret=pl.col("value").log().diff().over("symbol"))
        .drop_nulls("ret")
    )
    stats = rets.group_by("symbol").agg(
        med=pl.col("ret").median(), mad=(pl.col("ret") - pl.col("ret").median()).abs().median()
    )
    scored = rets.join(stats, on="symbol").with_columns(
        z=(pl.col("ret") - pl.col("med")) / (1.4826 * pl.col("mad") + 1e-12)
    )
    out = scored.filter(pl.col("z").abs() > z_threshold).sort("z", descending=True)
    if out.height == 0:
        return Finding("return_outliers", WARN, True, f"no |robust z| > {z_threshold}")
    listed = [
        f"{r['symbol']} {r['date']} ({r['ret']:+.3f}, z={r['z']:.1f})"
        for r in out.head(MAX_EVIDENCE).to_dicts()
    ]
    msg = f"{out.height} return outliers: " + "; ".join(listed)
    return Finding("return_outliers", WARN, False, msg, {"outliers": listed, "count": out.height})


def validate_market_prices(
    prices: pl.DataFrame, target: str, reference_date: dt.date | None = None
) -> list[Finding]:
    """All rules; blocking ones first. A schema failure stops the rest (they would mislead)."""
    schema = check_schema(prices)
    if not schema.passed:
        return [schema]
    findings = [
        schema,
        check_duplicates(prices),
        check_target_positive(prices, target),
        check_driver_positive(prices, target),
        check_gaps(prices),
        check_return_outliers(prices),
    ]
    if reference_date is not None:
        findings.append(check_staleness(prices, reference_date))
    return findings


def raise_on_errors(findings: list[Finding], where: str) -> None:
    """Refuse bad data before anything is written: the last good tables stay intact."""
    errors = [f for f in findings if f.severity == ERROR and not f.passed]
    if errors:
        lines = "\n".join(f"  - {f.rule}: {f.message}" for f in errors)
        raise MarketDataError(
            f"{where}: {len(errors)} blocking problem(s); nothing was written:\n{lines}\n"
            "Fix the source data (or the manifest) and run again."
        )


def format_report(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        mark = "ok  " if f.passed else ("FAIL" if f.severity == ERROR else "warn")
        lines.append(f"[{mark}] {f.rule}: {f.message}")
    return "\n".join(lines)
