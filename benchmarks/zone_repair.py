"""history_vol vs its repair history_vol_mr (issue 18 §6): the rule in zone_methods' docstring,
applied on the development window first, the scored window reported after the decision.

Usage: .venv/bin/python benchmarks/zone_repair.py [--manifest manifests/shared_data.yaml]
                                                  [--tail-rows 3000]

Zones are built around the random walk's walk-forward forecasts on the protocol's grid (windows
scaled by the short-history rule, as accuracy.py --tail-rows). On the real ZL the ensemble is
the random walk at every origin (benchmarks/results/accuracy_shared_data_tail3000.md: relative
MAE 1 in both windows at every horizon), so these are the served zones' methods on the served
centre; only the random-walk member is walked forward, which keeps the run to about a minute.
Results: benchmarks/results/zone_repair_<source>[_tail<N>].{md,json}.
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

from cbi_platform.ensemble.zone_methods import (  # noqa: E402
    HISTORY_VOL,
    HISTORY_VOL_MR,
    RW_NORMAL,
    target_zones,
    zone_scores,
)
from cbi_platform.ensemble.zone_sanity import live_band_sanity  # noqa: E402
from cbi_platform.evaluation import horizon_run  # noqa: E402
from cbi_platform.evaluation.origins import DEVELOPMENT, SCORED  # noqa: E402
from cbi_platform.features.build import build_features  # noqa: E402
from cbi_platform.features.contract import HORIZONS  # noqa: E402
from cbi_platform.market.files import load_files_source  # noqa: E402
from cbi_platform.market.manifest import load_manifest  # noqa: E402
from cbi_platform.regimes.detected import label_regimes  # noqa: E402
from cbi_platform.reporting import markdown_table  # noqa: E402
from cbi_platform.settings import RANDOM_WALK, load_protocol  # noqa: E402

METHODS = (HISTORY_VOL, HISTORY_VOL_MR, RW_NORMAL)
LONG, SHORT = ("3m", "6m", "12m"), ("1w", "1m")
TOLERANCE = 0.01
SHOW = (
    "horizon",
    "method",
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


def decide(dev: pl.DataFrame) -> tuple[bool, str]:
    """The rule of zone_methods' docstring, on the development table only."""
    score = {(r["horizon"], r["method"]): r["interval_mean_pct"] for r in dev.iter_rows(named=True)}
    old = float(np.mean([score[(h, HISTORY_VOL)] for h in LONG]))
    new = float(np.mean([score[(h, HISTORY_VOL_MR)] for h in LONG]))
    long_ok = new < old * (1 - TOLERANCE)
    short = {h: score[(h, HISTORY_VOL_MR)] / score[(h, HISTORY_VOL)] for h in SHORT}
    short_ok = all(ratio <= 1 + TOLERANCE for ratio in short.values())
    replace = long_ok and short_ok
    reason = (
        f"development, mean interval score over 80/90% and 3m/6m/12m: history_vol {old:.2f}, "
        f"history_vol_mr {new:.2f} ({(new / old - 1) * 100:+.1f}%; needs < -1%: "
        f"{'met' if long_ok else 'not met'}); 1w/1m ratio mr / history_vol "
        + ", ".join(f"{h} {r:.3f}" for h, r in short.items())
        + f" (needs <= 1.01: {'met' if short_ok else 'not met'}). Decision: "
        + ("history_vol_mr replaces history_vol" if replace else "history_vol stays")
    )
    return replace, reason


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "manifests" / "shared_data.yaml"))
    parser.add_argument("--tail-rows", type=int, default=3000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    if not (ROOT / ".." / "shared" / "data").exists():
        print("skipped: ../shared/data is absent")
        return 0
    started = time.perf_counter()
    protocol = load_protocol()
    manifest = load_manifest(args.manifest)
    prices = load_files_source(args.manifest).prices
    target = prices.filter(pl.col("symbol") == manifest.target).sort("date")
    if args.tail_rows:
        first = target["date"][-args.tail_rows]
        prices, target = (
            prices.filter(pl.col("date") >= first),
            target.filter(pl.col("date") >= first),
        )
    history = target.select(pl.col("date").cast(pl.Date), price=pl.col("value"))
    regimes = label_regimes(target["date"], target["value"].to_numpy())
    cfg = horizon_run.ProtocolConfig(protocol, n_workers=1)
    zones = []
    notice = None
    for h in HORIZONS:
        frame = build_features(prices, h, target=manifest.target).frame
        rw = [s for s in horizon_run.zoo_specs(h) if s.name == RANDOM_WALK]
        oof, _, plan = horizon_run.member_predictions(frame, regimes, h, cfg, specs=rw)
        notice = notice or plan.notice
        for method in METHODS:
            z = target_zones(oof, None, method, history=history)
            zones.append(z.with_columns(method=pl.lit(method)))
    zones = pl.concat(zones, how="diagonal_relaxed").drop("model").rename({"method": "model"})
    order = {h: i for i, h in enumerate(HORIZONS)}

    def table(role: str) -> pl.DataFrame:
        t = with_intervals(zone_scores(zones, roles=(role,)).rename({"model": "method"}))
        return t.sort(pl.col("horizon").replace_strict(order), "method").select(*SHOW)

    dev = table(DEVELOPMENT)  # the decision is made here, before the scored table exists
    replace, reason = decide(dev)
    print(markdown_table(dev))
    print(reason, flush=True)
    scored = table(SCORED)  # reported only
    print(markdown_table(scored))
    sanity = pl.DataFrame(
        [
            {"method": m, **v.as_dict(), "reasons": " / ".join(v.reasons)}
            for m in (HISTORY_VOL, HISTORY_VOL_MR)
            for v in live_band_sanity(zones, history, model=m)
        ]
    ).select(
        "horizon",
        "method",
        "origin",
        "width90_pct",
        "normal_width_pct",
        "ratio_to_normal",
        "log_width90",
        "largest_move",
        "independent_windows",
        "verdict",
    )
    print(markdown_table(sanity))

    stamp = machine_stamp()
    source = Path(args.manifest).stem + (f"_tail{args.tail_rows}" if args.tail_rows else "")
    command = f".venv/bin/python benchmarks/zone_repair.py {' '.join(sys.argv[1:])}".strip()
    out = Path(args.out)
    md = [
        f"# history_vol and its repair history_vol_mr: {source}",
        "",
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['platform']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB); python {stamp['python']}; "
        f"commit `{stamp['commit']}`",
        f"- command: `{command}`",
        f"- protocol hash `{protocol.hash()}`; notice: {notice or 'none'}",
        f"- seconds: {time.perf_counter() - started:.1f}",
        "- zones around the random walk's walk-forward forecasts (the ensemble on this data); "
        "rule: cbi_platform/ensemble/zone_methods.py docstring, written before this file's "
        "first run; the decision reads the development table only.",
        "",
        f"## Decision: {'replace' if replace else 'keep history_vol'}",
        "",
        reason,
        "",
        "## Development window",
        "",
        markdown_table(dev),
        "",
        "## Scored window (reported after the decision, never used for it)",
        "",
        markdown_table(scored),
        "",
        "## The live 90% band against the sanity check (cbi_platform/ensemble/zone_sanity.py)",
        "",
        "`ratio_to_normal`: log width over the normal band's (warn above 3 or below 1/3); "
        "`largest_move`: largest |h-day log move| in the history (warn when half the log width "
        "exceeds it, with at least 10 independent windows).",
        "",
        markdown_table(sanity),
        "",
    ]
    (out / f"zone_repair_{source}.md").write_text("\n".join(md) + "\n")
    (out / f"zone_repair_{source}.json").write_text(
        json.dumps(
            {
                "machine": stamp,
                "command": command,
                "protocol_hash": protocol.hash(),
                "notice": notice,
                "replace": replace,
                "reason": reason,
                "development": dev.to_dicts(),
                "scored": scored.to_dicts(),
                "live_band_sanity": sanity.to_dicts(),
            },
            default=str,
            indent=1,
        )
    )
    record_run(out / f"zone_repair_{source}.md", protocol.hash())
    print(f"wrote {out / f'zone_repair_{source}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
