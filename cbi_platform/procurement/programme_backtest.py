"""The backtest of one buyer's programme: the frozen policies through his buying windows, and
the range of his average cost, for the record and for the coming window.

What his programme changes, and what it does not:
- the policies and their parameters stay as procurement.yaml froze them on the development
  period; his programme changes the quantities (lb per window: dollars scale with it, c/lb do
  not), the windows' length (window_days: the backtest's windows and how the coming window is
  priced) and the carry he pays for buying early (c/lb/month);
- his risk tolerance (the worst-window shortfall he accepts, in c/lb) feeds only the
  pre-registered rule that picks the policy shown to the buyer, applied to the frozen
  *development-period* record (development_record.yaml): among the searched policies
  (expected_cost, cvar, value_trigger) those whose worst development window was at most his
  tolerance dearer than even buying, the one with the highest mean development savings, if any
  saved on average; otherwise even buying. On the real ZL record no searched policy saved on
  average, so every tolerance gives even buying (as procurement.yaml's `recommend`). The scored
  windows never move the choice: the backtest only reports, for his programme, the worst
  window of the policy shown and whether it stayed within his tolerance.

For the record: every window of his length starting every `window_step` trading days from the
first decision forecast (as the `procurement_backtest` asset lays them out); per window the
effective cost (lb-weighted price + carry, c/lb) of the recommended policy and of even buying;
their mean and P10 / P50 / P90 across windows, in c/lb and in dollars (c/lb × his lb per window
/ 100).

For the coming window (the next `window_days` trading days after the served forecasts' as-of
date), priced from the served zones: for each zone level q (P10, P50, P90) and each day k of the
window, the day's q-quantile of the price is the served zones' log-ratio to today's close
interpolated linearly in sqrt(trading days) between the served horizons (0 at day 0, 1w = 5,
1m = 21, 3m = 63 ...; beyond the longest served horizon, scaled by sqrt(k / h)). Even buying's
average cost at level q is the mean over the window's days of those quantiles, plus the mean
carry. This is exact if the price moves comonotonically (a day at its P10 means every day at
its P10: a persistent move), and wider than the true range of an average otherwise: a
conservative range. Only even buying is priced this way; a forecast-driven policy's coming
window needs the paths, which the zones do not give, so its coming-window range is not stated.

Measured (benchmarks/programme_backtest.py; vm, 2 cpus, 2026-12-07; real ZL closes and the
scored period's 1,512 days of decision forecasts, 72 windows): 0.13 s for the default programme
(even shown), 0.25 s with a forecast-driven policy shown, 0.4 s through the sensor and the job
in process (benchmarks/results/programme_backtest.md).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from cbi_platform.procurement import backtest as bt
from cbi_platform.procurement.contract import ZONE_LEVELS
from cbi_platform.procurement.programme import ProcurementConfig, Programme
from cbi_platform.settings import horizon_days
from cbi_platform.storage import read_connection

DEVELOPMENT_RECORD = Path(__file__).with_name("development_record.yaml")
SEARCHED = ("expected_cost", "cvar", "value_trigger")
RANGE_LEVELS = ("p10", "p50", "p90")
COMING_WINDOW_METHOD = (
    "Even buying over the next {days} trading days after {as_of}, each day priced at the "
    "served zones' quantile (log price interpolated in the square root of trading days between "
    "the served horizons), plus carry; the average of the days' quantiles, exact for a "
    "persistent move and otherwise wider than the true range."
)


def load_development_record(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """Per policy: mean savings and worst shortfall vs even on the development period."""
    raw = yaml.safe_load(Path(path or DEVELOPMENT_RECORD).read_text()) or {}
    return {str(k): dict(v) for k, v in (raw.get("policies") or {}).items()}


def recommended_policy(
    tolerance_cents: float, config: ProcurementConfig, record: Mapping[str, Mapping[str, float]]
) -> str:
    """The pre-registered rule on the development record (see the module docstring)."""
    eligible = []
    for entry in config.policies:
        row = record.get(entry["name"])
        if entry["kind"] not in SEARCHED or row is None:
            continue
        if row["worst_shortfall_cents"] <= tolerance_cents and row["mean_savings_cents"] > 0:
            eligible.append((row["mean_savings_cents"], entry["name"]))
    if not eligible:
        return "even"
    return max(eligible, key=lambda pair: pair[0])[1]


def read_warehouse_inputs(database: str | Path, target: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """decision_forecasts and the target's closes (date, price) from the local warehouse, read
    under its lock (a short read-only connection, as `storage.read_connection` says)."""
    database = Path(database)
    if not database.exists():
        raise ValueError(f"no warehouse at {database}: run `make run` (or `cbi run`) first")
    with read_connection(database) as con:
        tables = {
            r[0]
            for r in con.execute(
                "select table_name from information_schema.tables where table_schema = 'cbi'"
            ).fetchall()
        }
        missing = [t for t in ("decision_forecasts", "market_prices") if t not in tables]
        if missing:
            raise ValueError(
                f"the warehouse {database} has no {' and no '.join(missing)}: materialize "
                "decision_forecasts (make run builds it) before a programme backtest"
            )
        forecasts = con.sql("select * from cbi.decision_forecasts").pl()
        prices = con.execute(
            "select date, value as price from cbi.market_prices where symbol = ? order by date",
            [target],
        ).pl()
    return forecasts, prices


def _range(costs: np.ndarray, lb: float) -> dict[str, float]:
    p10, p50, p90 = (float(v) for v in np.quantile(costs, [0.1, 0.5, 0.9]))
    out = {"mean_cents": float(costs.mean()), "p10_cents": p10, "p50_cents": p50}
    out["p90_cents"] = p90
    out.update({k.replace("_cents", "_dollars"): v * lb / 100.0 for k, v in list(out.items())})
    return out


def served_rows(latest: pl.DataFrame | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The served forecasts' rows (horizon, as_of, price, zones) with complete zones."""
    rows = latest.to_dicts() if isinstance(latest, pl.DataFrame) else [dict(r) for r in latest]
    ok = []
    for r in rows:
        levels = [r.get(c) for c in ZONE_LEVELS]
        price = r.get("price")
        if price is None or price <= 0 or any(v is None or not v > 0 for v in levels):
            continue
        ok.append(r)
    return ok


def coming_window_range(
    served: pl.DataFrame | Sequence[Mapping[str, Any]], programme: Programme
) -> dict[str, Any] | None:
    """Even buying's P10 / P50 / P90 average cost over the next window from the served zones
    (method: module docstring); None without served zones."""
    rows = served_rows(served)
    if not rows:
        return None
    as_of = max(r["as_of"] for r in rows)
    rows = [r for r in rows if r["as_of"] == as_of]
    rows.sort(key=lambda r: horizon_days(r["horizon"]))
    price = float(rows[0]["price"])
    knots = np.sqrt([0.0] + [float(horizon_days(r["horizon"])) for r in rows])
    days = np.arange(1, programme.window_days + 1, dtype=float)
    roots = np.sqrt(days)
    last = knots[-1]
    carry = float(np.mean(programme.carry(np.arange(programme.window_days - 1, -1, -1))))
    out: dict[str, Any] = {}
    for level in RANGE_LEVELS:
        ratios = np.array([0.0] + [math.log(float(r[level]) / price) for r in rows])
        inside = np.interp(roots, knots, ratios)
        beyond = ratios[-1] * roots / last
        x = np.where(roots <= last, inside, beyond)
        cents = float(np.mean(price * np.exp(x))) + carry
        out[f"{level}_cents"] = cents
        out[f"{level}_dollars"] = programme.dollars(cents)
    return {
        "as_of": str(as_of),
        "days": programme.window_days,
        "price_cents": price,
        "carry_cents": carry,
        "horizons": [r["horizon"] for r in rows],
        "even": out,
        "method": COMING_WINDOW_METHOD.format(days=programme.window_days, as_of=as_of),
    }


def run_programme_backtest(
    decision_forecasts: pl.DataFrame,
    prices: pl.DataFrame,
    programme: Programme,
    config: ProcurementConfig,
    served: pl.DataFrame | Sequence[Mapping[str, Any]] | None = None,
    development_record: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """The frozen policies through his windows (as the `procurement_backtest` asset runs them),
    the recommended policy for his tolerance, and the cost ranges (JSON-ready)."""
    started = time.perf_counter()
    record = development_record if development_record is not None else load_development_record()
    horizons = list(config.pipeline.horizons)
    usable = decision_forecasts.filter(pl.col("horizon").is_in(horizons))
    if usable.height == 0:
        raise ValueError(
            f"no decision forecasts for the horizons {horizons}: materialize decision_forecasts "
            "(make run builds it) before a programme backtest"
        )
    start = usable["date"].min()
    windows = bt.default_windows(prices, programme, config.backtest, start=start)
    if not windows:
        raise ValueError(
            f"no buying window of {programme.window_days} trading days fits between the first "
            f"decision forecast ({start}) and the last close ({prices['date'].max()})"
        )
    policy = recommended_policy(programme.max_worst_shortfall_cents, config, record)
    entries = [config.policy("even")]
    if policy != "even":
        entries.append(config.policy(policy))
    result = bt.run_backtest(usable, prices, programme, entries, windows, keep_reasons=False)
    lb = programme.total_lb
    mine = result.policy_windows(policy)
    even = result.policy_windows("even")
    shortfall = (mine["cost_cents"] - mine["even_cost_cents"]).to_numpy().astype(float)
    worst = float(shortfall.max()) if shortfall.size else 0.0
    ran_through = max(w.last for w in windows)
    return {
        "programme": asdict(programme),
        "total_lb": lb,
        "recommended_policy": policy,
        "choice": {
            "rule": "the searched policy with the highest mean development savings whose worst "
            "development window is within the tolerance, if any saves on average; else even",
            "tolerance_cents": programme.max_worst_shortfall_cents,
            "development_record": {k: dict(v) for k, v in record.items()},
        },
        "windows": len(windows),
        "window_step": config.backtest.window_step,
        "first_window": str(windows[0].first),
        "last_window_end": str(ran_through),
        "record": {
            "recommended": {"policy": policy, **_range(mine["cost_cents"].to_numpy(), lb)},
            "even": {"policy": "even", **_range(even["cost_cents"].to_numpy(), lb)},
        },
        "worst_shortfall_cents": worst,
        "worst_shortfall_dollars": worst * lb / 100.0,
        "within_tolerance": worst <= programme.max_worst_shortfall_cents + 1e-12,
        "coming_window": coming_window_range(served, programme) if served is not None else None,
        "computed_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "seconds": round(time.perf_counter() - started, 3),
    }


def data_as_of(served: pl.DataFrame, prices: pl.DataFrame | None = None) -> str:
    """The data a backtest ran on, by date: the served forecasts' as_of (what the API shows),
    else the last close."""
    if served.height:
        return str(served["as_of"].max())
    if prices is not None and prices.height:
        return str(prices["date"].max())
    raise ValueError("no served forecasts and no closes: nothing to date the backtest by")


def backtest_on_home(
    warehouse: str | Path,
    target: str,
    served: pl.DataFrame,
    programme: Programme,
    config: ProcurementConfig,
) -> tuple[dict[str, Any], str]:
    """A programme's backtest on a home's warehouse and served forecasts, and its as-of date."""
    forecasts, prices = read_warehouse_inputs(warehouse, target)
    result = run_programme_backtest(forecasts, prices, programme, config, served=served)
    return result, data_as_of(served, prices)
