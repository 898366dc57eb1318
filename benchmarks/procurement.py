"""Procurement backtest: every policy over every 1-month and 3-month buying window of the scored
period, after its parameters (and the policy shown to the buyer) were chosen on the
development period only.

Usage: .venv/bin/python benchmarks/procurement.py --home DIR --label NAME [--horizons 1w 1m 3m]
`DIR` is a home trained by `cbi run` (e.g. `make run`, or `cbi run --manifest
manifests/shared_data.yaml --horizons 1w 1m 3m` with CBI_HOME=DIR). Results:
benchmarks/results/procurement_<NAME>.{md,json,png}.

What runs, in order (written before the first run; nothing below is changed after seeing the
scored numbers):
1. The daily decision forecasts of each horizon from the first development origin
   (`decision_series.build_decision_series`: the walk-forward state at the latest origin, fed
   each day's features; known_at = date).
2. Development period (forecast rows made by development-window states): every 1-month window
   (21 trading days, a window starting on every trading day). Each policy kind's parameters are
   chosen from the grid in procurement.yaml by `backtest.choose_parameters` (highest mean
   savings vs even buying among candidates whose worst window is at most
   `max_worst_shortfall_cents` dearer than even; ties to the simplest).
3. The policy shown to the buyer (pre-registered rule): among expected_cost, cvar and
   value_trigger with their chosen parameters, the one with the highest mean development
   savings whose worst development window is within the limit; if none saves on average, even
   buying is shown.
4. Scored period: every 1-month window (programme: 10 railcars) and every 3-month window (30
   railcars), a window starting on every trading day; savings vs even in c/lb and dollars with
   a moving-block bootstrap interval and a Newey-West p-value (overlapping windows: the block
   and the lags span one window length), by regime, the worst window, the perfect-foresight
   bound (unattainable), the look-ahead alarm, and the carry each policy paid.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SEARCHED = ("expected_cost", "cvar", "value_trigger")


def load_tables(home: Path, horizons: list[str]) -> dict:
    import duckdb

    tables = {}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        for name in (
            "features",
            "oof_predictions",
            "ensemble_predictions",
            "ensemble_weights",
            "target_zones",
        ):
            sql = (
                f"select * from cbi.{name} where horizon in ({','.join(repr(h) for h in horizons)})"
            )
            tables[name] = con.sql(sql).pl()
        for name in ("detected_regimes", "volatility_forecasts", "market_prices"):
            tables[name] = con.sql(f"select * from cbi.{name}").pl()
    return tables


def decision_series(tables: dict, horizons: list[str], protocol_file: str | None) -> tuple:
    import polars as pl

    from cbi_platform.defs.ensemble.assets import horizon_context
    from cbi_platform.evaluation import horizon_run
    from cbi_platform.procurement.decision_series import build_decision_series
    from cbi_platform.settings import load_protocol

    cfg = horizon_run.ProtocolConfig(protocol=load_protocol(protocol_file), n_workers=1)
    parts, timing = [], {}
    for h in horizons:
        started = time.perf_counter()
        ctx, _ = horizon_context(h, tables["detected_regimes"], tables["volatility_forecasts"])
        series, stats = build_decision_series(
            tables["features"],
            tables["oof_predictions"],
            tables["ensemble_predictions"],
            tables["ensemble_weights"],
            tables["target_zones"],
            tables["detected_regimes"],
            ctx,
            h,
            cfg,
            start_window="development",
            progress=lambda m: print("   ", m, flush=True),
        )
        timing[h] = {
            "seconds": round(time.perf_counter() - started, 1),
            "days": stats.days,
            "states": stats.states,
            "random_walk_states": stats.random_walk_states,
            "states_with_members": stats.fitted_states,
            "member_fits": stats.member_fits,
        }
        print(f"  {h}: {timing[h]}", flush=True)
        parts.append(series)
    return pl.concat(parts), timing


def carry_paid(result) -> dict[str, float]:
    """Mean carry per lb (c/lb) each policy paid: the part of 'savings' that is only timing
    against the delivery date, not price."""
    import polars as pl

    s = result.schedules
    if s.height == 0 or "carry" not in s.columns:
        return {}
    per = (
        s.group_by("policy", "window_start")
        .agg((pl.col("buy_lb") * pl.col("carry")).sum() / pl.col("buy_lb").sum())
        .group_by("policy")
        .agg(pl.col("buy_lb").mean().alias("carry"))
    )
    return {p: float(c) for p, c in per.iter_rows()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--horizons", nargs="+", default=["1w", "1m", "3m"])
    parser.add_argument("--protocol", help="the protocol the home was trained with")
    parser.add_argument("--step", type=int, default=1, help="trading days between window starts")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import polars as pl

    from cbi_platform.market.schema import TARGET_SYMBOL
    from cbi_platform.procurement import backtest as bt
    from cbi_platform.procurement.programme import load_config
    from cbi_platform.procurement.report import (
        cumulative_savings_plot,
        policy_table,
        regime_table,
    )
    from cbi_platform.reporting import markdown_table

    started = time.perf_counter()
    home = Path(args.home)
    config = load_config()
    settings = dataclasses.replace(config.backtest)
    print(f"procurement benchmark on {home} ({args.label})", flush=True)
    tables = load_tables(home, args.horizons)
    prices = (
        tables["market_prices"]
        .filter(pl.col("symbol") == TARGET_SYMBOL)
        .select("date", price="value")
        .sort("date")
    )
    print("decision forecasts (development + scored) ...", flush=True)
    series, timing = decision_series(tables, args.horizons, args.protocol)

    # 2. parameters on development windows only
    month = config.programme
    dev_windows = bt.protocol_windows(series, prices, month.window_days, args.step, "development")
    # A development window must not contain a day whose forecasts came from a scored state.
    scored_start = series.filter(pl.col("window") == "scored")["date"].min()
    dev_windows = [w for w in dev_windows if w.last < scored_start]
    print(f"choosing parameters on {len(dev_windows)} development windows ...", flush=True)
    choice = bt.choose_parameters(config.grid, series, prices, month, dev_windows)
    policies = []
    for entry in config.policies:
        params = choice.chosen.get(entry["kind"])
        policies.append({**entry, "params": params if params is not None else entry["params"]})

    # 3. the policy shown to the buyer, on development windows
    dev_result = bt.run_backtest(series, prices, month, policies, dev_windows, keep_reasons=False)
    dev_stats = bt.savings_statistics(dev_result, settings.bootstrap_resamples, settings.seed)
    eligible = dev_stats.filter(
        pl.col("policy").is_in([p["name"] for p in policies if p["kind"] in SEARCHED])
        & (pl.col("worst_shortfall_cents") <= month.max_worst_shortfall_cents)
        & (pl.col("mean_savings_cents") > 0)
    ).sort("mean_savings_cents", descending=True)
    shown = eligible["policy"][0] if eligible.height else "even"
    print(f"policy shown to the buyer (development rule): {shown}", flush=True)

    # 4. scored windows, 1 month and 3 months
    reports, summary = [], {}
    for label, days, cars in (
        ("1-month", 21, month.railcars_per_window),
        ("3-month", 63, 3 * month.railcars_per_window),
    ):
        programme = dataclasses.replace(month, window_days=days, railcars_per_window=cars)
        windows = bt.protocol_windows(series, prices, days, args.step, "scored")
        t0 = time.perf_counter()
        result = bt.run_backtest(series, prices, programme, policies, windows, keep_reasons=False)
        stats, alarm = bt.judge(result, settings)
        bound = bt.bound_statistics(result)
        png = RESULTS / f"procurement_{args.label}_{label}.png"
        png.write_bytes(cumulative_savings_plot(result))
        carry = carry_paid(result)
        risk = stats.filter(pl.col("policy") == "cvar")
        summary[label] = {
            "programme": dataclasses.asdict(programme),
            "windows": len(windows),
            "first_window": str(windows[0].first) if windows else None,
            "last_window": str(windows[-1].first) if windows else None,
            "seconds": round(time.perf_counter() - t0, 1),
            "stats": stats.with_columns(pl.col(pl.Date).cast(pl.Utf8)).to_dicts(),
            "perfect_foresight": bound,
            "carry_paid_cents": carry,
            "lookahead_alarm": alarm.message,
            "lookahead_firing": alarm.firing,
            "risk_averse_worst_shortfall_cents": float(risk["worst_shortfall_cents"][0])
            if risk.height
            else None,
            "risk_averse_limit_cents": month.max_worst_shortfall_cents,
        }
        reports.append(
            f"### Scored period, {label} windows ({len(windows)} windows, "
            f"{programme.railcars_per_window} railcars = {programme.total_lb:,.0f} lb each, "
            f"first starts {summary[label]['first_window']}, last {summary[label]['last_window']})"
            "\n\n"
            + policy_table(stats, bound)
            + "\n\n**Carry paid** (mean c/lb; part of any saving vs even is only buying later "
            "and paying less carry): "
            + ", ".join(f"{p} {c:.3f}" for p, c in sorted(carry.items()))
            + f"\n\n**Look-ahead alarm**: {alarm.message}\n\n"
            + "**By regime at window start**\n\n"
            + regime_table(result)
            + f"\n\n![cumulative savings]({png.name})\n"
        )
    choice_table = choice.table.with_columns(
        pl.col(pl.Float64).round(3), pl.col(pl.Date).cast(pl.Utf8)
    )
    machine = machine_stamp()
    command = " ".join(["benchmarks/procurement.py", *sys.argv[1:]])
    md = [
        f"# Procurement backtest ({args.label})",
        "",
        f"Command: `.venv/bin/python {command}`. Machine: {machine['machine']} "
        f"({machine['cpus']} cpus), {machine['date']}. Wall time "
        f"{time.perf_counter() - started:.0f} s.",
        "",
        f"Programme (procurement.yaml): {month.railcars_per_window} railcars x "
        f"{month.railcar_lb:,.0f} lb per 1-month window (30 railcars per 3-month window), "
        f"delivery at the window's end, carry {month.carry_cents_per_lb_month} c/lb/month, "
        f"worst-window limit {month.max_worst_shortfall_cents} c/lb. Windows start on every "
        f"{'trading day' if args.step == 1 else f'{args.step}th trading day'}.",
        "",
        "Daily decision forecasts: " + json.dumps(timing),
        "",
        f"## Chosen on the development period ({len(dev_windows)} 1-month windows, "
        f"{dev_windows[0].first} .. {dev_windows[-1].last})",
        "",
        "Parameters per policy kind (grid: procurement.yaml; rule: backtest.choose_parameters):",
        "",
        "```",
        json.dumps(choice.chosen, indent=1),
        "```",
        "",
        markdown_table(choice_table),
        "",
        f"Policy shown to the buyer (pre-registered rule): **{shown}**.",
        "",
        "Development-period record of every policy with its chosen parameters:",
        "",
        policy_table(dev_stats, bt.bound_statistics(dev_result)),
        "",
        "## Scored period (reported, never tuned on)",
        "",
        *reports,
    ]
    out = RESULTS / f"procurement_{args.label}.md"
    out.write_text("\n".join(md))
    (RESULTS / f"procurement_{args.label}.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": machine,
                "label": args.label,
                "timing": timing,
                "chosen": choice.chosen,
                "shown_to_buyer": shown,
                "development": dev_stats.with_columns(pl.col(pl.Date).cast(pl.Utf8)).to_dicts(),
                "scored": summary,
            },
            default=str,
            indent=1,
        )
    )
    from cbi_platform.settings import load_protocol

    record_run(out, load_protocol(args.protocol).hash())
    print(f"wrote {out} in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
