"""What a buyer reads: backtest tables in markdown, the cumulative-savings plot and today's
recommendation in one paragraph. Savings are against even buying (positive = cheaper);
perfect foresight is shown only as the unattainable bound it is."""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Mapping
from typing import Any

import polars as pl

from cbi_platform.procurement.backtest import (
    PERFECT_FORESIGHT,
    BacktestResult,
    LookAheadAlarm,
    bound_statistics,
    savings_by_regime,
    savings_statistics,
)
from cbi_platform.procurement.policies import Decision
from cbi_platform.reporting import markdown_table, png_markdown


def _num(v: float | None, digits: int = 2, sign: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _usd(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{'-' if v < 0 else '+'}${abs(v):,.0f}"


def _p(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def policy_table(stats: pl.DataFrame, bound: Mapping[str, Any] | None = None) -> str:
    """Per policy: mean savings vs even (c/lb and $ per window) with the bootstrap interval,
    both p-values, share of windows better than even, the worst window and its shortfall."""
    if stats.height == 0:
        return "_no windows_"
    conf = stats["confidence"][0]
    rows = [
        {
            "policy": r["policy"],
            "windows": r["n_windows"],
            "mean c/lb": _num(r["mean_savings_cents"], 3),
            f"{conf:.0%} CI c/lb": f"[{_num(r['ci_low_cents'], 3)}, {_num(r['ci_high_cents'], 3)}]",
            "mean $/window": _usd(r["mean_savings_dollars"]),
            f"{conf:.0%} CI $": f"[{_usd(r['ci_low_dollars'])}, {_usd(r['ci_high_dollars'])}]",
            "p (block bootstrap)": _p(r["p_bootstrap"]),
            "p (Newey-West)": _p(r["p_newey_west"]),
            "better than even": f"{r['share_better']:.0%}",
            "worst window": str(r["worst_window_start"]),
            "worst shortfall c/lb": _num(r["worst_shortfall_cents"], 3),
            "worst shortfall $": _usd(r["worst_shortfall_dollars"]),
            "share of bound": _num(r["capture"] * 100, 0, sign=False) + "%"
            if r["capture"] == r["capture"]
            else "n/a",
        }
        for r in stats.iter_rows(named=True)
    ]
    if bound is not None:
        rows.append(
            {
                "policy": PERFECT_FORESIGHT,
                "windows": bound["n_windows"],
                "mean c/lb": _num(bound["mean_savings_cents"], 3),
                "mean $/window": _usd(bound["mean_savings_dollars"]),
                "share of bound": "100%",
            }
        )
    columns = list(rows[0])
    frame = pl.DataFrame([{c: str(r.get(c, "")) for c in columns} for r in rows])
    return markdown_table(frame)


def regime_table(result: BacktestResult) -> str:
    """Savings vs even by the detected regime at each window's start."""
    frame = savings_by_regime(result).select(
        "policy",
        "regime",
        pl.col("n_windows").alias("windows"),
        pl.col("mean_savings_cents").round(3).alias("mean c/lb"),
        pl.col("mean_savings_dollars").round(0).alias("mean $/window"),
        (pl.col("share_better") * 100).round(0).alias("better than even %"),
        pl.col("worst_shortfall_cents").round(3).alias("worst shortfall c/lb"),
    )
    return markdown_table(frame, float_digits=6)


def cumulative_savings_plot(result: BacktestResult) -> bytes:
    """PNG: cumulative savings vs even ($) per policy over windows in date order, with the
    perfect-foresight bound drawn dashed and labelled unattainable."""
    # matplotlib (~0.4 s to import) only where a plot is drawn, not in every run process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name in result.policies:
        w = result.policy_windows(name)
        ax.plot(w["window_start"].to_list(), w["savings_dollars"].cum_sum().to_list(), label=name)
    even = result.policy_windows(result.benchmark)
    bound = (even["pf_savings_cents"] * result.programme.total_lb / 100.0).cum_sum()
    ax.plot(
        even["window_start"].to_list(),
        bound.to_list(),
        "k--",
        linewidth=1,
        label="perfect foresight (unattainable)",
    )
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.set_ylabel("cumulative savings vs even buying ($)")
    ax.set_title(f"Procurement backtest: {result.programme.window_days}-day windows")
    ax.legend(fontsize=8, loc="upper left")
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def backtest_report(
    result: BacktestResult,
    stats: pl.DataFrame | None = None,
    alarm: LookAheadAlarm | None = None,
    include_plot: bool = True,
) -> str:
    """The backtest as one markdown document (asset metadata, the CLI)."""
    stats = savings_statistics(result) if stats is None else stats
    bound = bound_statistics(result)
    p = result.programme
    parts = [
        f"**Programme**: {p.railcars_per_window} railcars × {p.railcar_lb:,.0f} lb = "
        f"{p.total_lb:,.0f} lb per {p.window_days}-trading-day window, carry "
        f"{p.carry_cents_per_lb_month:.2f} c/lb/month; windows every {result.step} trading days. "
        f"Savings are against even buying (positive = cheaper); $ per window. Intervals: "
        f"moving-block bootstrap over windows in date order; p-values: the same bootstrap and a "
        f"t test with a Newey-West variance.",
        policy_table(stats, bound),
        f"Perfect foresight (everything on the window's cheapest day, known only afterwards) is "
        f"an **unattainable bound**: {_num(bound['mean_savings_cents'], 3)} c/lb a window.",
        "**By regime at window start**",
        regime_table(result),
    ]
    if alarm is not None:
        parts.append(f"**Look-ahead alarm**: {alarm.message}")
    if include_plot:
        parts.append(png_markdown(cumulative_savings_plot(result), "cumulative savings vs even"))
    return "\n\n".join(parts)


def recommendation_text(
    decision: Decision,
    policy_name: str,
    record: Mapping[str, Any] | None,
    day: dt.date | None = None,
) -> str:
    """Today's decision, its reason and the policy's backtested record in one paragraph.
    `record`: the policy's row of `savings_statistics` (None: not backtested)."""
    when = f"Today ({day})" if day else "Today"
    head = (
        f"{when} the {policy_name} policy says {decision.action.upper()} "
        f"{decision.buy_lb:,.0f} lb. {decision.reason}"
    )
    if policy_name == "even":
        return (
            f"{head} Even buying is shown because no forecast-driven policy saved money on "
            "average over the development period's windows (pre-registered rule); their "
            "backtest is in procurement/backtest.md."
        )
    if not record:
        return f"{head} It has no backtested record yet."
    conf = record.get("confidence", 0.9)
    mean, dollars = record["mean_savings_cents"], record["mean_savings_dollars"]
    verb = "saved" if mean >= 0 else "cost"
    than = "against" if mean >= 0 else "more than"
    return (
        f"{head} Backtested over {record['n_windows']} windows, it {verb} {abs(mean):.2f} c/lb "
        f"(${abs(dollars):,.0f} per window) {than} even buying on average ({conf:.0%} interval "
        f"{_num(record['ci_low_cents'], 2)} to {_num(record['ci_high_cents'], 2)} c/lb of "
        f"savings; p = {_p(record['p_bootstrap'])} by block bootstrap, "
        f"{_p(record['p_newey_west'])} by Newey-West) and beat even buying in "
        f"{record['share_better']:.0%} of windows; {_worst(record)}"
    )


def _worst(record: Mapping[str, Any]) -> str:
    short = record["worst_shortfall_cents"]
    start = record["worst_window_start"]
    if short is not None and short > 0:
        return (
            f"its worst window (from {start}) cost {short:.2f} c/lb "
            f"(${record['worst_shortfall_dollars']:,.0f}) more than even buying."
        )
    return f"even its worst window (from {start}) was {-short:.2f} c/lb cheaper than even buying."
