"""Zones on daily origins: coverage and interval score of the served zones on every trading day,
beside the 60-origin tables, with intervals that count only independent outcomes.

Usage: .venv/bin/python benchmarks/daily_coverage.py [--manifest manifests/shared_data.yaml]
           [--horizons 1w 1m 3m 6m 12m] [--zoo no_networks|core] [--workers 2]
           [--tail-rows N] [--label NAME]

Without --manifest it runs on the embedded simulator (the default data of `make run`).

What runs, per horizon, in this order (the platform's own steps, as in accuracy.py):
1. The walk-forward on the protocol's grid: members (`--zoo`), the ensemble, the protocol's zone
   method for the ensemble (the served zones) and the random walk's normal band (`rw_normal`,
   sigma of past daily returns x sqrt(h)) as the anchor. Scored on the grid's development and
   scored origins: the 60-origin tables.
2. The daily decision series (`procurement.decision_series.build_decision_series`) from the
   first development origin to the last date, for every horizon asked (6m and 12m included,
   which `make run` does not build): each trading day's forecast is the version the platform
   would have served that day (the walk-forward state at the latest origin <= day, its
   calibration laid around that day's forecast). The 90% band is read from the served CDF
   knots at 5% / 95% (they pass through the zone quantiles; the benchmark asserts that P10 and
   P90 read the same way equal the stored ones).
3. The random walk's normal band on every trading day (same method, same history rule).
4. Coverage 80/90, widths and interval scores on the days whose state origin is a development
   or scored origin and whose target has resolved; `n_effective` = non-overlapping target
   windows (blocks of h trading days: daily outcomes overlap, so ~days / h independent
   outcomes, never the row count), and the 95% Wilson interval of each coverage on it
   (`cbi_platform.ensemble.conformal.coverage_interval`).

Nothing here chooses anything: the zone method and every parameter are the protocol's.
`--zoo no_networks` (the default) leaves the network members out of the walk-forward to keep the
run within ~15 minutes of CPU on 2 cores; it is said in the results. Runtime on the simulator,
five horizons: 1246.8 s of wall time on 2 shared (busy) cores (daily_coverage_simulated.md);
the 1w daily series is the slow part (40 states with members). The real ZL is about as long:
`--manifest manifests/shared_data.yaml` (make results-coverage). Results:
benchmarks/results/daily_coverage_<label>.{md,json}, label `simulated` or the manifest's stem
(+ `_tail<N>`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402
from coverage_intervals import with_intervals  # noqa: E402

from cbi_platform.ensemble.conformal import ZONE_COLUMNS  # noqa: E402
from cbi_platform.ensemble.zone_methods import target_zones, zone_scores  # noqa: E402
from cbi_platform.evaluation import horizon_run  # noqa: E402
from cbi_platform.evaluation.origins import DEVELOPMENT, SCORED  # noqa: E402
from cbi_platform.evaluation.volatility_eval import (  # noqa: E402
    best_volatility_model,
    score_volatility,
    volatility_walk_forward,
)
from cbi_platform.features.build import build_features  # noqa: E402
from cbi_platform.features.contract import HORIZONS  # noqa: E402
from cbi_platform.models.registry import GROUPS  # noqa: E402
from cbi_platform.procurement.decision_series import build_decision_series  # noqa: E402
from cbi_platform.regimes.detected import label_regimes  # noqa: E402
from cbi_platform.reporting import markdown_table  # noqa: E402
from cbi_platform.settings import load_protocol  # noqa: E402

WINDOWS = {"development": (DEVELOPMENT,), "scored": (SCORED,)}
SHOW = (
    "window",
    "horizon",
    "origins",
    "band",
    "n",
    "n_effective",
    "coverage80",
    "coverage80 [95%]",
    "coverage90",
    "coverage90 [95%]",
    "width90_pct",
    "interval80_pct",
    "interval90_pct",
    "interval_mean_pct",
)


def load_target(args) -> tuple[pl.DataFrame, str, str]:
    """(prices, target symbol, label) of the data asked for."""
    if args.manifest:
        from cbi_platform.market.files import load_files_source
        from cbi_platform.market.manifest import load_manifest

        manifest = load_manifest(args.manifest)
        prices, target, label = (
            load_files_source(args.manifest).prices,
            manifest.target,
            Path(args.manifest).stem,
        )
    else:
        from cbi_platform.market.simulator import simulate_market

        bundle = simulate_market()
        prices, target, label = bundle.prices, bundle.target, "simulated"
    if args.tail_rows:
        first = prices.filter(pl.col("symbol") == target).sort("date")["date"][-args.tail_rows]
        prices = prices.filter(pl.col("date") >= first)
        label += f"_tail{args.tail_rows}"
    return prices, target, args.label or label


def specs_for(horizon: str, zoo: str):
    specs = horizon_run.zoo_specs(horizon)
    if zoo == "no_networks":
        specs = [s for s in specs if s.kind not in GROUPS["neural"]]
    return specs


def band_90_from_cdf(series: pl.DataFrame) -> pl.DataFrame:
    """lo90 / hi90 (and P10 / P90 as a check) read from each day's served CDF knots."""
    out = {c: [] for c in ("lo90", "p10_check", "p90_check", "hi90")}
    probs = np.array([0.05, 0.10, 0.90, 0.95])
    for x, p, price in zip(
        series["cdf_logret"].to_list(),
        series["cdf_prob"].to_list(),
        series["price"].to_list(),
        strict=True,
    ):
        if x is None or p is None:
            for c in out:
                out[c].append(None)
            continue
        x, p = np.asarray(x, dtype=float), np.asarray(p, dtype=float)
        keep = np.concatenate([[True], np.diff(p) > 0])
        q = price * np.exp(np.interp(probs, p[keep], x[keep]))
        for c, v in zip(out, q, strict=True):
            out[c].append(float(v))
    return series.with_columns(pl.Series(c, v, dtype=pl.Float64) for c, v in out.items())


def daily_frame(series: pl.DataFrame, frame: pl.DataFrame) -> pl.DataFrame:
    """The decision series in the zone schema: origin = the day, its target date and actual."""
    targets = frame.select(
        pl.col("date"),
        pl.col("target_date"),
        actual=pl.col("price") * pl.col("target_logret").exp(),
    )
    with_band = band_90_from_cdf(series)
    ok = with_band.filter(pl.col("p10").is_not_null())
    gap = (
        ok.select(
            ((pl.col("p10_check") - pl.col("p10")).abs() / pl.col("price")).max().alias("a"),
            ((pl.col("p90_check") - pl.col("p90")).abs() / pl.col("price")).max().alias("b"),
        ).row(0)
        if ok.height
        else (0.0, 0.0)
    )
    if max(gap) > 1e-9:
        raise AssertionError(f"CDF knots do not pass through P10/P90 (relative gap {gap})")
    return (
        with_band.join(targets, on="date", how="left")
        .select(
            "horizon",
            pl.lit("ensemble").alias("model"),
            pl.col("date").alias("origin"),
            "target_date",
            pl.col("window").alias("role"),
            "price",
            "actual",
            *ZONE_COLUMNS,
        )
        .filter(pl.col("role").is_in([DEVELOPMENT, SCORED]))
    )


def rw_band_daily(days: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
    """The random walk's normal band on every day (forecast log return 0, as the random walk)."""
    forecasts = days.select(
        "horizon",
        pl.lit("random_walk").alias("model"),
        "origin",
        "target_date",
        "role",
        "price",
        "actual",
        pl.lit(HORIZONS[days["horizon"][0]]).alias("horizon_days"),
        pl.lit(0.0).alias("forecast_logret"),
    )
    return target_zones(forecasts, None, "rw_normal", history=history)


def scores(zones: pl.DataFrame, origins: str, band: str) -> pl.DataFrame:
    parts = []
    for window, roles in WINDOWS.items():
        table = zone_scores(zones, roles=roles)
        if table.height:
            parts.append(table.with_columns(window=pl.lit(window)))
    if not parts:
        return pl.DataFrame()
    return pl.concat(parts, how="diagonal_relaxed").with_columns(
        origins=pl.lit(origins), band=pl.lit(band)
    )


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", help="a data manifest (default: the simulator)")
    parser.add_argument("--horizons", nargs="+", default=list(HORIZONS))
    parser.add_argument("--zoo", choices=("no_networks", "core"), default="no_networks")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tail-rows", type=int)
    parser.add_argument("--label")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    if args.manifest and not (ROOT / ".." / "shared" / "data").exists():
        print("skipped: ../shared/data is absent (the real data lives beside the repository)")
        return 0
    started = time.perf_counter()
    protocol = load_protocol()
    prices, symbol, label = load_target(args)
    target = prices.filter(pl.col("symbol") == symbol).sort("date")
    history = target.select(pl.col("date").cast(pl.Date), price=pl.col("value"))
    regimes = label_regimes(target["date"], target["value"].to_numpy())
    cfg = horizon_run.ProtocolConfig(protocol, n_workers=args.workers)
    plan = horizon_run.origin_plan(target["date"], "1w", cfg)
    if plan.notice:
        print(f"notice: {plan.notice}", flush=True)
    vol = volatility_walk_forward(target["value"].to_numpy(), plan, dict(HORIZONS))
    tables, timings, series_stats = [], {}, {}
    for h in args.horizons:
        t0 = time.perf_counter()
        frame = build_features(prices, h, target=symbol).frame
        specs = specs_for(h, args.zoo)
        oof, _, _ = horizon_run.member_predictions(frame, regimes, h, cfg, specs=specs)
        vol_model = best_volatility_model(score_volatility(vol, role=DEVELOPMENT), h)
        ctx = horizon_run.context_frame(regimes, vol, h, vol_model)
        ens = horizon_run.ensemble_step(oof, ctx, cfg)
        zones = horizon_run.zones_step(
            oof, ens.forecasts, ctx, protocol.zone_method, history=history, features=frame
        ).with_columns(vol_model=pl.lit(vol_model))
        anchor = target_zones(
            oof.filter(pl.col("model") == "random_walk"), ctx, "rw_normal", history=history
        )
        t1 = time.perf_counter()
        series, stats = build_decision_series(
            frame,
            oof,
            ens.forecasts,
            ens.member_weights,
            zones,
            regimes,
            ctx,
            h,
            cfg,
            start_window=DEVELOPMENT,
            specs=specs,
        )
        days = daily_frame(series, frame)
        rw_days = rw_band_daily(days, history)
        tables += [
            scores(zones.filter(pl.col("model") == "ensemble"), "grid", "served zones"),
            scores(anchor, "grid", "rw normal band"),
            scores(days, "daily", "served zones"),
            scores(rw_days, "daily", "rw normal band"),
        ]
        timings[h] = {
            "walk_forward_s": round(t1 - t0, 1),
            "daily_series_s": round(time.perf_counter() - t1, 1),
        }
        series_stats[h] = {
            "days": stats.days,
            "states": stats.states,
            "random_walk_states": stats.random_walk_states,
            "states_with_members": stats.fitted_states,
            "member_fits": stats.member_fits,
        }
        print(f"{h}: {timings[h]} {series_stats[h]}", flush=True)
    table = with_intervals(pl.concat([t for t in tables if t.height], how="diagonal_relaxed"))
    order = {k: i for i, k in enumerate(HORIZONS)}
    table = table.sort("window", pl.col("horizon").replace_strict(order), "origins", "band").select(
        *SHOW
    )
    total = round(time.perf_counter() - started, 1)
    write(args, label, protocol, plan, table, timings, series_stats, total)
    return 0


def write(args, label, protocol, plan, table, timings, series_stats, total) -> None:
    stamp = machine_stamp()
    command = f".venv/bin/python benchmarks/daily_coverage.py {' '.join(sys.argv[1:])}".strip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    zoo_note = (
        "members: the core zoo without the network members (`--zoo no_networks`, to bound the "
        "runtime); the served ensemble is built from these members only"
        if args.zoo == "no_networks"
        else "members: the core zoo (networks included)"
    )
    md = [
        f"# Zones on daily origins: {label}",
        "",
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['platform']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB); python {stamp['python']}; "
        f"commit `{stamp['commit']}`",
        f"- command: `{command}`",
        f"- **protocol hash `{protocol.hash()}`**; zone method `{protocol.zone_method}`; "
        f"{zoo_note}; features without news (as benchmarks/accuracy.py)",
        f"- notice: {plan.notice}" if plan.notice else "- full history: no scaling",
        f"- seconds per horizon: {timings}; total {total} s",
        f"- daily series per horizon: {series_stats}",
        "",
        "`origins = grid`: the protocol's 60 development / 60 scored origins (as "
        "accuracy.py). `origins = daily`: every trading day whose served state comes from a "
        "development (resp. scored) origin, with a resolved target. `served zones`: the "
        "ensemble's zones as the platform serves them; `rw normal band`: the random walk's "
        "normal band (sigma of past daily returns x sqrt(h)). `n_effective`: non-overlapping "
        "target windows (blocks of h trading days), so daily rows add outcomes only where "
        "they add independent windows; `[95%]`: the Wilson interval on `n_effective`. "
        "Interval scores and widths in % of the price. Nothing here is tuned: reported only.",
        "",
        markdown_table(table),
        "",
    ]
    (out / f"daily_coverage_{label}.md").write_text("\n".join(md) + "\n")
    (out / f"daily_coverage_{label}.json").write_text(
        json.dumps(
            {
                "machine": stamp,
                "command": command,
                "protocol": protocol.as_dict(),
                "protocol_hash": protocol.hash(),
                "zoo": args.zoo,
                "notice": plan.notice,
                "seconds": timings,
                "seconds_total": total,
                "daily_series": series_stats,
                "table": table.to_dicts(),
            },
            default=str,
            indent=1,
        )
    )
    record_run(out / f"daily_coverage_{label}.md", protocol.hash())
    print(f"wrote {out / f'daily_coverage_{label}.md'}")


if __name__ == "__main__":
    sys.exit(main())
