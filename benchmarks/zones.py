"""Target-zone benchmark: every zone method on the real ZL walk-forward forecasts.

Usage: .venv/bin/python benchmarks/zones.py [--manifest manifests/shared_data.yaml]
                                            [--horizons 1w 1m 3m 6m 12m] [--workers 2]
                                            [--cache /tmp/cbi_zones_cache] [--refresh]

Steps, in this order (the order is the protocol):
1. The platform's own walk-forward (build_features, label_regimes, member_predictions over the
   full model zoo, volatility_walk_forward, context_frame, ensemble_step) gives the ensemble's
   and the random walk's out-of-fold forecasts per horizon; they are cached as parquet under
   --cache so later runs skip the ~40 s per horizon (--refresh recomputes).
2. Every zone method of `cbi_platform.ensemble.zone_methods` builds walk-forward zones for the
   ensemble; `rw_normal` and `split` also for the random walk.
3. The DEVELOPMENT-window table is computed and `choose_zone_method` (pre-registered rule, see
   its docstring) picks the method; the choice is printed.
4. Only then is the SCORED-window table computed. It is reported, never used to choose.

Development window: origins with role "development" when the protocol has that role; until
then the last 60 "burn_in" origins by date (the first 40 burn-in origins only calibrate).
Results: benchmarks/results/zones_<source>.{md,json} with the machine and date.
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

from cbi_platform.settings import load_protocol  # noqa: E402

PROTOCOL = load_protocol()

from cbi_platform.ensemble import zone_methods  # noqa: E402
from cbi_platform.ensemble.combiners import OOF_COLUMNS  # noqa: E402
from cbi_platform.ensemble.zone_methods import (  # noqa: E402
    METHODS,
    choose_zone_method,
    target_zones,
    zone_scores,
)
from cbi_platform.features.contract import HORIZONS  # noqa: E402
from cbi_platform.reporting import markdown_table  # noqa: E402

N_DEVELOPMENT = 60  # the last burn-in origins, until the protocol names them "development"
GOAL90, GOAL80 = (0.85, 0.95), (0.75, 0.85)
CONTEXT_COLUMNS = ("horizon", "origin", "regime", "vol_forecast")


def walk_forward_frames(args, cache: Path) -> dict[str, dict[str, pl.DataFrame]]:
    """Per horizon: forecasts (ensemble + random walk, OOF schema), context, features, history.
    Read from the cache when present, else computed with the platform's own steps."""
    horizons = list(args.horizons)
    names = ("forecasts", "context", "features", "history")
    paths = {h: {n: cache / f"{h}_{n}.parquet" for n in names} for h in horizons}
    todo = [h for h in horizons if args.refresh or not all(p.exists() for p in paths[h].values())]
    if todo:
        from cbi_platform.evaluation import horizon_run
        from cbi_platform.evaluation.volatility_eval import (
            best_volatility_model,
            score_volatility,
            volatility_walk_forward,
        )
        from cbi_platform.features.build import build_features
        from cbi_platform.market.files import load_files_source
        from cbi_platform.market.manifest import load_manifest
        from cbi_platform.regimes.detected import label_regimes

        manifest = load_manifest(args.manifest)
        bundle = load_files_source(args.manifest)
        target = bundle.prices.filter(pl.col("symbol") == manifest.target).sort("date")
        regimes = label_regimes(target["date"], target["value"].to_numpy())
        cfg = horizon_run.ProtocolConfig(n_workers=args.workers)
        plan = horizon_run.origin_plan(target["date"], "1w", cfg)
        vol = volatility_walk_forward(target["value"].to_numpy(), plan, dict(HORIZONS))
        cache.mkdir(parents=True, exist_ok=True)
        history = target.select(pl.col("date").cast(pl.Date), price=pl.col("value"))
        for h in todo:
            t0 = time.perf_counter()
            frame = build_features(bundle.prices, h, target=manifest.target).frame
            oof, _, _ = horizon_run.member_predictions(frame, regimes, h, cfg, progress=None)
            vol_model = best_volatility_model(score_volatility(vol, role="burn_in"), h)
            ctx = horizon_run.context_frame(regimes, vol, h, vol_model)
            ens = horizon_run.ensemble_step(oof, ctx, cfg)
            forecasts = pl.concat(
                [
                    ens.forecasts.select(OOF_COLUMNS),
                    oof.filter(pl.col("model") == "random_walk").select(OOF_COLUMNS),
                ],
                how="vertical_relaxed",
            )
            forecasts.write_parquet(paths[h]["forecasts"])
            ctx.with_columns(horizon=pl.lit(h)).write_parquet(paths[h]["context"])
            frame.write_parquet(paths[h]["features"])
            history.write_parquet(paths[h]["history"])
            print(f"{h}: walk-forward {time.perf_counter() - t0:.0f}s (vol model {vol_model})")
    return {h: {n: pl.read_parquet(p) for n, p in paths[h].items()} for h in horizons}


def development_roles(forecasts: pl.DataFrame) -> tuple[pl.DataFrame, set[str]]:
    """Label the development window: role "development" if the protocol has it, else the last
    N_DEVELOPMENT burn-in origins (by date) become "development" here."""
    if (forecasts["role"] == "development").any():
        return forecasts, {"development"}
    burn = forecasts.filter(pl.col("role") == "burn_in")["origin"].unique().sort()
    dev = set(burn[-N_DEVELOPMENT:].to_list())
    relabelled = forecasts.with_columns(
        role=pl.when(pl.col("origin").is_in(list(dev)))
        .then(pl.lit("development"))
        .otherwise(pl.col("role"))
    )
    return relabelled, {"development"}


def all_zones(data: dict[str, dict[str, pl.DataFrame]], methods: tuple[str, ...]):
    """Zones of every method for the ensemble (and rw_normal/split for the random walk), with
    the seconds each method took per horizon."""
    frames, cost = [], {}
    for h, parts in data.items():
        forecasts, _ = development_roles(parts["forecasts"])
        for method in methods:
            models = (
                ["ensemble", "random_walk"] if method in ("rw_normal", "split") else ["ensemble"]
            )
            subset = forecasts.filter(pl.col("model").is_in(models))
            t0 = time.perf_counter()
            zones = target_zones(
                subset,
                parts["context"],
                method,
                history=parts["history"],
                features=parts["features"],
            )
            cost[(h, method)] = time.perf_counter() - t0
            frames.append(zones.with_columns(method=pl.lit(method)))
            print(f"{h} {method}: {cost[(h, method)]:.1f}s", flush=True)
    keep = [
        "horizon",
        "model",
        "method",
        "origin",
        "target_date",
        "role",
        "price",
        "actual",
        "lo90",
        "p10",
        "p30",
        "p50",
        "p70",
        "p90",
        "hi90",
    ]
    return pl.concat([f.select(keep) for f in frames], how="vertical_relaxed"), cost


def label(zones: pl.DataFrame) -> pl.DataFrame:
    """`candidate`: method name for the ensemble, `rw:<method>` for the random walk's zones."""
    return zones.with_columns(
        candidate=pl.when(pl.col("model") == "ensemble")
        .then(pl.col("method"))
        .otherwise(pl.lit("rw:") + pl.col("method"))
    )


def common_support(zones: pl.DataFrame) -> pl.DataFrame:
    """Origins where every candidate has a zone, so all are scored on the same outcomes (early
    development origins at long horizons lack enough resolved residuals for split/cqr)."""
    labelled = label(zones)
    per_horizon = labelled.group_by("horizon").agg(pl.col("candidate").n_unique().alias("k"))
    complete = (
        labelled.filter(pl.col("p10").is_not_null())
        .group_by("horizon", "origin")
        .agg(pl.col("candidate").n_unique().alias("m"))
        .join(per_horizon, on="horizon")
        .filter(pl.col("m") == pl.col("k"))
        .select("horizon", "origin")
    )
    return labelled.join(complete, on=["horizon", "origin"], how="semi")


def window_table(zones: pl.DataFrame, roles: set[str]) -> pl.DataFrame:
    table = with_intervals(
        zone_scores(
            common_support(zones).drop("method").rename({"candidate": "method"}), roles=roles
        )
    )
    order = {h: k for k, h in enumerate(HORIZONS)}
    return table.sort(pl.col("horizon").replace_strict(order), "method")


SHOW = [
    "horizon",
    "method",
    "n",
    "n_effective",
    "coverage40",
    "coverage80",
    "coverage80 [95%]",
    "coverage90",
    "coverage90 [95%]",
    "width80_pct",
    "width90_pct",
    "interval80_pct",
    "interval90_pct",
    "pinball_pct",
]


def goal_table(scored: pl.DataFrame, chosen: str) -> pl.DataFrame:
    """The chosen method against the goal and against rw_normal (random walk), per horizon."""
    mine = scored.filter(pl.col("method") == chosen)
    anchor = scored.filter(pl.col("method") == "rw:rw_normal").select(
        "horizon",
        rw_cov80="coverage80",
        rw_cov90="coverage90",
        rw_width90="width90_pct",
        rw_interval="interval_mean_pct",
    )
    return (
        mine.join(anchor, on="horizon", how="left")
        .with_columns(
            goal90=pl.col("coverage90").is_between(*GOAL90),
            goal80=pl.col("coverage80").is_between(*GOAL80),
            better_interval_than_rw=pl.col("interval_mean_pct") <= pl.col("rw_interval"),
            not_wider_than_rw=pl.col("width90_pct") <= pl.col("rw_width90"),
        )
        .select(
            "horizon",
            "n",
            "n_effective",
            "coverage80",
            "coverage80 [95%]",
            "goal80",
            "coverage90",
            "coverage90 [95%]",
            "goal90",
            "rw_cov80",
            "rw_cov90",
            "width90_pct",
            "rw_width90",
            "interval_mean_pct",
            "rw_interval",
            "better_interval_than_rw",
            "not_wider_than_rw",
        )
    )


def miss_lines(goal: pl.DataFrame) -> list[str]:
    """Plain sentences: where the chosen method meets or misses the goal and the anchor."""
    lines = []
    for r in goal.iter_rows(named=True):
        parts = [
            f"90% covers {r['coverage90']:.0%} ({'met' if r['goal90'] else 'MISSED'})",
            f"80% covers {r['coverage80']:.0%} ({'met' if r['goal80'] else 'MISSED'})",
            "interval score "
            + ("at least as good as" if r["better_interval_than_rw"] else "WORSE than")
            + f" rw_normal ({r['interval_mean_pct']:.1f} vs {r['rw_interval']:.1f})",
            "90% band "
            + ("no wider than" if r["not_wider_than_rw"] else "WIDER than")
            + f" rw_normal ({r['width90_pct']:.1f}% vs {r['rw_width90']:.1f}%)",
        ]
        lines.append(
            f"- {r['horizon']} (n {r['n']}, effective {r['n_effective']}): " + "; ".join(parts)
        )
    return lines


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", default=str(ROOT / "manifests" / "shared_data.yaml"))
    parser.add_argument("--horizons", nargs="+", default=list(HORIZONS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default="/tmp/cbi_zones_cache")
    parser.add_argument("--refresh", action="store_true")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    data_dir = (ROOT / ".." / "shared" / "data").resolve()
    if not data_dir.exists():
        print(f"skipped: {data_dir} is absent (the real data lives beside the repository)")
        return 0
    data = walk_forward_frames(args, Path(args.cache))
    if args.prepare_only:
        return 0
    zones, cost = all_zones(data, tuple(args.methods))

    # ---- development window: compute, choose, print. The scored window is not touched yet.
    dev = window_table(zones, {"development"})
    candidates = dev.filter(~pl.col("method").str.starts_with("rw:"))
    chosen, reason = choose_zone_method(candidates)
    print(markdown_table(dev.select(SHOW)))
    print(f"chosen on the development window: {chosen} ({reason})", flush=True)

    # ---- scored window: reported only.
    scored = window_table(zones, {"scored"})
    print(markdown_table(scored.select(SHOW)))
    goal = goal_table(scored, chosen)
    goal_dev = goal_table(dev, chosen)
    print(markdown_table(goal))

    stamp = machine_stamp()
    source = Path(args.manifest).stem
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cost_table = pl.DataFrame(
        [{"horizon": h, "method": m, "seconds": round(s, 2)} for (h, m), s in cost.items()]
    ).pivot(on="method", index="horizon", values="seconds")
    moved = {
        h: int(
            d["forecasts"]
            .filter((pl.col("model") == "ensemble") & (pl.col("forecast_logret").abs() > 1e-12))
            .height
        )
        for h, d in data.items()
    }
    roles_seen = sorted(set().union(*(set(d["forecasts"]["role"].unique()) for d in data.values())))
    misses = miss_lines(goal)
    md = [
        f"# Target-zone methods: {source}",
        "",
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['platform']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB); python {stamp['python']}",
        f"- command: `.venv/bin/python benchmarks/zones.py --manifest {args.manifest}`",
        f"- protocol hash `{PROTOCOL.hash()}` (the windows and grid the forecasts were made "
        "on; the zone method it names is the one this benchmark chose)",
        "- forecasts: the platform's walk-forward with the FULL model zoo (no `specs` limit), "
        "the ensemble step and the random walk, cached as parquet under --cache; zones for the "
        "ensemble by every method, for the random walk by `rw_normal` and `split` (`rw:` "
        f"prefix). Ensemble origins whose forecast differs from the random walk: {moved} "
        "(all zero: the ensemble is the random walk at every origin here, so ensemble and "
        "`rw:` rows of the same method coincide).",
        f"- windows (roles in the OOF: {roles_seen}): calibration = the first 40 burn-in "
        f"origins (residuals only); development = the last {N_DEVELOPMENT} burn-in origins; "
        "scored = the last 60 origins. Every candidate is scored on the same origins (those "
        "where all have a zone). The method is chosen on development by the pre-registered "
        "rule (`choose_zone_method`) before the scored table is computed.",
        f"- methods: {zone_methods.METHOD_NOTES}",
        "- scores in % of the origin price: interval (Winkler) score of the 80% and 90% bands, "
        "their mean (`interval_mean_pct`), mean pinball loss over P10/P30/P50/P70/P90; widths "
        "mean % of price; n_effective = non-overlapping target windows.",
        "",
        f"## Choice (development window): **{chosen}**",
        "",
        reason,
        "",
        "## Development window",
        "",
        markdown_table(dev.select(SHOW + ["interval_mean_pct"])),
        "",
        "## Scored window (reported, never tuned on)",
        "",
        markdown_table(scored.select(SHOW + ["interval_mean_pct"])),
        "",
        f"## Goal check, scored window: {chosen} vs the goal and vs rw_normal (random walk)",
        "",
        f"Goal: 90% zones cover {GOAL90[0]:.0%}-{GOAL90[1]:.0%} at 1w-6m, 80% zones "
        f"{GOAL80[0]:.0%}-{GOAL80[1]:.0%}; 12m reported with its effective n.",
        "",
        markdown_table(goal),
        "",
        *misses,
        "",
        f"Same on the development window ({chosen}):",
        "",
        markdown_table(goal_dev),
        "",
        "## Seconds per horizon and method (zones only, one process, 2 shared cores)",
        "",
        markdown_table(cost_table),
        "",
    ]
    (out / f"zones_{source}.md").write_text("\n".join(md) + "\n")
    (out / f"zones_{source}.json").write_text(
        json.dumps(
            {
                "machine": stamp,
                "protocol_hash": PROTOCOL.hash(),
                "protocol": PROTOCOL.as_dict(),
                "manifest": args.manifest,
                "command": f".venv/bin/python benchmarks/zones.py --manifest {args.manifest}",
                "chosen": chosen,
                "reason": reason,
                "development": dev.to_dicts(),
                "scored": scored.to_dicts(),
                "goal_scored": goal.to_dicts(),
                "goal_development": goal_dev.to_dicts(),
                "seconds": cost_table.to_dicts(),
            },
            default=lambda v: None if isinstance(v, float) and np.isnan(v) else str(v),
            indent=1,
        )
    )
    record_run(out / f"zones_{source}.md", PROTOCOL.hash())
    print(f"wrote {out / f'zones_{source}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
