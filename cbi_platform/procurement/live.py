"""Today's recommendation from the served forecasts, the log of every recommendation, and the
decision-quality monitor that compares what the recommendations cost with even buying.

The live window is the current calendar month's business days (delivery at its last one). The
log assumes the buyer followed each day's recommendation (the purchases it implies are what
`bought_lb` sums; an operator who bought differently overrides it with `cbi recommend
--bought-lb`). When a window has ended, its realised cost — the logged purchases at that day's
close plus carry to the window's end — is compared with buying evenly over the same business
days; `decision_quality` turns the rolling comparison into a condition for the alert book.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.conditions import DECISION_QUALITY, Condition
from cbi_platform.procurement.backtest import context_for_day, decision_quality
from cbi_platform.procurement.contract import DECISION_SCHEMA, ZONE_LEVELS
from cbi_platform.procurement.policies import Decision, build_policy
from cbi_platform.procurement.programme import ProcurementConfig, Programme
from cbi_platform.results_sink import NullSink, ResultsSink
from cbi_platform.settings import horizon_days
from cbi_platform.storage import publish_snapshot, read_snapshot, write_connection

TABLE = "ops.recommendations"
DDL = f"""
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS {TABLE} (
    as_of DATE, policy VARCHAR, window_start DATE, window_end DATE, action VARCHAR,
    buy_lb DOUBLE, price DOUBLE, remaining_lb DOUBLE, total_lb DOUBLE, days_left INTEGER,
    reason VARCHAR, record VARCHAR, text VARCHAR, forecast_versions VARCHAR,
    logged_at TIMESTAMP, PRIMARY KEY (as_of, policy)
);
"""
QUANTILE_PROBS = (0.1, 0.3, 0.5, 0.7, 0.9)
LOG_SCHEMA = {
    "as_of": pl.Date,
    "policy": pl.Utf8,
    "window_start": pl.Date,
    "window_end": pl.Date,
    "action": pl.Utf8,
    "buy_lb": pl.Float64,
    "price": pl.Float64,
    "remaining_lb": pl.Float64,
    "total_lb": pl.Float64,
    "days_left": pl.Int32,
    "reason": pl.Utf8,
    "record": pl.Utf8,
    "text": pl.Utf8,
    "forecast_versions": pl.Utf8,
    "logged_at": pl.Datetime,
}


def month_window(day: dt.date) -> tuple[dt.date, dt.date]:
    """The business days (Mon-Fri) of `day`'s calendar month: first and last."""
    first = day.replace(day=1)
    nxt = (first + dt.timedelta(days=32)).replace(day=1)
    last = nxt - dt.timedelta(days=1)
    while first.weekday() >= 5:
        first += dt.timedelta(days=1)
    while last.weekday() >= 5:
        last -= dt.timedelta(days=1)
    return first, last


def business_days(start: dt.date, end: dt.date) -> int:
    """Business days in [start, end] (Mon-Fri)."""
    return int(np.busday_count(start, end + dt.timedelta(days=1)))


def prob_up_from_zones(row: Mapping[str, Any]) -> float | None:
    """P(price higher at the horizon) from the P10..P90 zones, linear in log price between
    them (beyond P10 / P90: reported as 0.9+ / 0.1-, clipped there)."""
    price = row.get("price")
    levels = [row.get(c) for c in ZONE_LEVELS]
    if price is None or any(v is None or not np.isfinite(v) or v <= 0 for v in levels):
        return None
    x = np.log(np.asarray(levels, dtype=float) / float(price))
    if np.any(np.diff(x) < 0):
        return None
    cdf = float(np.interp(0.0, x, QUANTILE_PROBS, left=0.1, right=0.9))
    return 1.0 - cdf


def forecast_context(served: pl.DataFrame) -> str:
    """What the served forecasts say about buying later, in words, per horizon."""
    parts = []
    for r in served.sort("horizon_days").iter_rows(named=True):
        up = r.get("prob_up")
        if up is None or r.get("p10") is None:
            continue
        share = f"{up:.0%}" if 0.1 < up < 0.9 else ("over 90%" if up >= 0.9 else "under 10%")
        parts.append(
            f"{r['horizon']}: {share} probability ZL is higher in {r['horizon_days']} trading "
            f"days (P10-P90 {r['p10']:.2f}-{r['p90']:.2f}, P50 {r['p50']:.2f} c/lb)"
        )
    return ("What the forecasts say: " + "; ".join(parts) + ".") if parts else ""


def served_decision_rows(latest: pl.DataFrame) -> pl.DataFrame:
    """The forecast store's latest served rows as decision forecasts (known_at = as_of)."""
    rows = []
    for r in latest.iter_rows(named=True):
        rows.append(
            {
                "date": r["as_of"],
                "known_at": r["as_of"],
                "horizon": r["horizon"],
                "horizon_days": horizon_days(r["horizon"]),
                "price": r["price"],
                "forecast": r["forecast"],
                **{c: r.get(c) for c in ZONE_LEVELS},
                "cdf_logret": None,
                "cdf_prob": None,
                "prob_up": prob_up_from_zones(r),
                "regime": r.get("regime"),
                "state_origin": r["as_of"],
                "window": "live",
            }
        )
    return pl.DataFrame(rows, schema=DECISION_SCHEMA)


class RecommendationLog:
    """Every day's recommendation, append-only per (as_of, policy), in operations.duckdb."""

    def __init__(self, database: str | Path, sink: ResultsSink | None = None):
        self.database = Path(database)
        self.sink = sink or NullSink()  # mirrors the logged row (after the local write)

    def append(self, row: Mapping[str, Any]) -> int:
        with write_connection(self.database) as con:
            con.execute(DDL)
            before = con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
            con.execute(
                f"INSERT INTO {TABLE} VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?, now()) "
                "ON CONFLICT DO NOTHING",
                [
                    row["as_of"],
                    row["policy"],
                    row["window_start"],
                    row["window_end"],
                    row["action"],
                    row["buy_lb"],
                    row["price"],
                    row["remaining_lb"],
                    row["total_lb"],
                    row["days_left"],
                    row["reason"],
                    json.dumps(row.get("record"), default=str),
                    row["text"],
                    json.dumps(row.get("forecast_versions") or {}),
                ],
            )
            after = con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
            publish_snapshot(con, self.database, TABLE)
            stored = con.execute(
                f"SELECT * FROM {TABLE} WHERE as_of = CAST(? AS DATE) AND policy = ?",
                [row["as_of"], row["policy"]],
            ).pl()
        self.sink.write("recommendations", stored, ["as_of", "policy"])
        return int(after - before)

    def frame(self) -> pl.DataFrame:
        """Every logged recommendation (empty, with the columns, before the first)."""
        frame = read_snapshot(self.database, TABLE)
        return frame if frame is not None else pl.DataFrame(schema=LOG_SCHEMA)


def policy_record(folder: Path, policy: str) -> dict[str, Any] | None:
    """The policy's backtested record (`policy_record.json`, written by the backtest), or None
    when no backtest has run in this home."""
    path = folder / "policy_record.json"
    if not path.exists():
        return None
    rows = [r for r in json.loads(path.read_text()) if r.get("policy") == policy]
    return rows[0] if rows else None


def bought_in_window(log: pl.DataFrame, policy: str, start: dt.date, day: dt.date) -> float:
    """What the logged recommendations of this window bought before `day`."""
    if log.height == 0:
        return 0.0
    done = log.filter(
        (pl.col("policy") == policy) & (pl.col("window_start") == start) & (pl.col("as_of") < day)
    )
    return float(done["buy_lb"].sum()) if done.height else 0.0


def recommend(
    config: ProcurementConfig,
    served: pl.DataFrame,
    prices: pl.DataFrame,
    day: dt.date,
    bought_lb: float,
) -> tuple[Decision, dict[str, Any]]:
    """Today's decision of the recommended policy for the current month's window."""
    programme: Programme = config.programme
    start, end = month_window(day)
    days_left = max(business_days(day, end), 1)
    remaining = max(programme.total_lb - bought_lb, 0.0)
    ctx = context_for_day(served, prices, programme, day, remaining, days_left, end)
    name = config.pipeline.recommend
    policy = build_policy(config.policy(name))
    if remaining <= 0:
        decision = Decision(0.0, "wait", "This month's programme is already bought.", {})
    else:
        decision = policy.decide(ctx)
        buy = float(min(max(decision.buy_lb, 0.0), remaining))
        if days_left == 1:
            buy = remaining  # the window's last day buys what remains, as in the backtest
        if buy != decision.buy_lb:
            decision = Decision(
                buy,
                "buy" if buy >= remaining else decision.action,
                decision.reason,
                decision.details,
            )
    info = {
        "as_of": day,
        "policy": name,
        "window_start": start,
        "window_end": end,
        "action": decision.action,
        "buy_lb": float(decision.buy_lb),
        "price": ctx.price,
        "remaining_lb": remaining,
        "total_lb": programme.total_lb,
        "days_left": days_left,
        "reason": decision.reason,
    }
    return decision, info


def window_costs(
    log: pl.DataFrame, prices: pl.DataFrame, programme: Programme, policy: str, today: dt.date
) -> pl.DataFrame:
    """Per completed window of the log: the recommended schedule's realised cost (the logged
    purchases at that day's close, plus carry to the window's end; what remained unbought on
    the last logged day is bought at the window's last close) beside even buying over the
    window's trading days. Windows still open on `today` are left out."""
    if log.height == 0:
        return pl.DataFrame(
            schema={"window_start": pl.Date, "schedule_cents": pl.Float64, "even_cents": pl.Float64}
        )
    closes = prices.sort("date")
    out = []
    mine = log.filter(pl.col("policy") == policy).sort("as_of")
    for (start,), part in mine.group_by(["window_start"], maintain_order=True):
        end = part["window_end"][0]
        if end >= today:
            continue
        days = closes.filter((pl.col("date") >= start) & (pl.col("date") <= end))
        if days.height == 0:
            continue
        dates = days["date"].to_list()
        px = days["price"].to_numpy().astype(float)
        to_end = np.arange(len(dates))[::-1]
        carry = programme.carry(to_end)
        buys = np.zeros(len(dates))
        position = {d: i for i, d in enumerate(dates)}
        for r in part.iter_rows(named=True):
            if r["as_of"] in position:
                buys[position[r["as_of"]]] += r["buy_lb"]
        buys[-1] += max(programme.total_lb - buys.sum(), 0.0)
        even = np.full(len(dates), programme.total_lb / len(dates))
        out.append(
            {
                "window_start": start,
                "schedule_cents": float(buys @ (px + carry) / buys.sum()),
                "even_cents": float(even @ (px + carry) / even.sum()),
            }
        )
    return pl.DataFrame(
        out,
        schema={"window_start": pl.Date, "schedule_cents": pl.Float64, "even_cents": pl.Float64},
    ).sort("window_start")


def quality_condition(
    log: pl.DataFrame,
    prices: pl.DataFrame,
    config: ProcurementConfig,
    today: dt.date,
    link: str | None = None,
) -> tuple[Condition, pl.DataFrame]:
    """The decision-quality condition: fires when the recommended schedules cost more than
    even buying by more than the threshold over the last N completed windows."""
    settings = config.pipeline
    costs = window_costs(log, prices, config.programme, settings.recommend, today)
    judged = decision_quality(
        costs["schedule_cents"].to_list(),
        costs["even_cents"].to_list(),
        settings.quality_windows,
        settings.quality_threshold_cents,
    )
    condition = Condition(
        key=f"decision_quality/{settings.recommend}",
        kind=DECISION_QUALITY,
        firing=bool(judged["firing"]),
        title=f"Procurement: {settings.recommend} — {judged['message']}",
        as_of=today,
        evidence={
            **judged,
            "windows": [
                {k: (str(v) if isinstance(v, dt.date) else v) for k, v in r.items()}
                for r in costs.tail(settings.quality_windows).iter_rows(named=True)
            ],
        },
        link=link,
    )
    return condition, costs
