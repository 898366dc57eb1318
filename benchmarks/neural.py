"""Neural members on the frozen protocol: each network's walk-forward accuracy next to the
random walk (relative MAE, MASE, DM p) on the development and scored windows, per horizon, and
what each family costs to fit (seconds per fit, epochs, fits, peak memory).

Usage:
  .venv/bin/python benchmarks/neural.py [--manifest manifests/shared_data.yaml | --simulated]
      [--horizons 1w 1m 3m 6m 12m] [--workers 2] [--seeds 0 1] [--seed-horizons 1w 1m]

It runs the platform's own step (`horizon_run.member_walk_forward`, what the members_neural
asset calls) with the networks of models/specs.yaml (kinds neural and neural_specialist; the
extended zoo: make run's members plus the ones cut from its time budget) and the random
walk, on the recorded cheap schedule (<= 4 full fits per network and horizon).

Noise: a network's accuracy depends on its seed. `--seeds 0 1` re-runs the networks of
`--seed-horizons` with seed 1 and reports both; a gap between two networks (or a network and
the random walk) smaller than the seed spread is not a finding.
Results: benchmarks/results/neural_<source>.{md,json} with the machine and date.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402
from accuracy import member_windows  # noqa: E402

from cbi_platform.evaluation import horizon_run  # noqa: E402
from cbi_platform.features.build import build_features  # noqa: E402
from cbi_platform.features.contract import HORIZONS  # noqa: E402
from cbi_platform.market.files import load_files_source  # noqa: E402
from cbi_platform.market.manifest import load_manifest  # noqa: E402
from cbi_platform.regimes.detected import label_regimes  # noqa: E402
from cbi_platform.reporting import markdown_table  # noqa: E402
from cbi_platform.settings import load_protocol  # noqa: E402

KINDS = ("benchmark", "neural", "neural_specialist")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "manifests" / "shared_data.yaml"))
    parser.add_argument("--simulated", action="store_true", help="the default simulated market")
    parser.add_argument("--horizons", nargs="+", default=list(HORIZONS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--seed-horizons", nargs="+", default=["1w", "1m"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return parser.parse_args()


def load_market(args) -> tuple[pl.DataFrame, str, str]:
    if args.simulated:
        from cbi_platform.market.simulator import simulate_market

        market = simulate_market()
        prices = market.prices if hasattr(market, "prices") else market
        return prices, "ZL", "simulated"
    manifest = load_manifest(args.manifest)
    return load_files_source(args.manifest).prices, manifest.target, "shared_data"


def with_seed(specs, seed: int):
    return [
        dataclasses.replace(s, params={**s.params, "seed": seed})
        if s.kind in ("neural", "neural_specialist")
        else s
        for s in specs
    ]


def main() -> int:
    warnings.filterwarnings("ignore")
    args = parse_args()
    prices, target_symbol, source = load_market(args)
    target = prices.filter(pl.col("symbol") == target_symbol).sort("date")
    regimes = label_regimes(target["date"], target["value"].to_numpy())
    protocol = load_protocol()
    cfg = horizon_run.ProtocolConfig(protocol, n_workers=args.workers)
    boards, fits, timings = [], [], {}
    for h in args.horizons:
        frame = build_features(prices, h, target=target_symbol).frame
        for seed in args.seeds:
            if seed != args.seeds[0] and h not in args.seed_horizons:
                continue
            specs = with_seed(horizon_run.zoo_specs(h, KINDS, zoo="extended"), seed)
            t0 = time.perf_counter()
            run = horizon_run.member_walk_forward(frame, regimes, h, cfg, specs)
            seconds = time.perf_counter() - t0
            timings[f"{h} seed {seed}"] = round(seconds, 1)
            board = member_windows(run.oof, run.plan.spacing_days).with_columns(seed=pl.lit(seed))
            boards.append(board)
            fits.append(run.fits.with_columns(seed=pl.lit(seed)))
            nets = board.filter(pl.col("model").str.starts_with("nn_"))
            summary = ", ".join(
                f"{r['model']} {r['window'][:3]} {r['rel_mae']:.3f}"
                for r in nets.filter(pl.col("window") == "scored").iter_rows(named=True)
            )
            print(f"{h} seed {seed}: {seconds:.0f}s  scored rel MAE: {summary}", flush=True)
    write_results(args, source, protocol, pl.concat(boards), pl.concat(fits), timings)
    return 0


def family_costs(fits: pl.DataFrame) -> pl.DataFrame:
    """Per family (from the model's spec): fits, mean seconds per fit, epochs, peak memory."""
    from cbi_platform.models.registry import load_specs

    family = {s.name: s.family for s in load_specs()}
    nets = fits.filter(pl.col("device").is_not_null()).with_columns(
        family=pl.col("model").replace_strict(family, default=None)
    )
    return (
        nets.group_by("family")
        .agg(
            networks=pl.len(),
            fits=pl.col("n_fits").sum(),
            seconds_per_fit=pl.col("fit_seconds_mean").mean(),
            epochs_mean=pl.col("epochs_mean").mean(),
            walk_seconds=pl.col("seconds").sum(),
            peak_memory_mb=pl.col("peak_memory_mb").max(),
        )
        .sort("seconds_per_fit", descending=True)
    )


def write_results(args, source, protocol, boards, fits, timings) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = machine_stamp()
    cols = ["horizon", "model", "window", "seed", "n", "rel_mae", "mase", "dm_pvalue", "mape"]
    table = boards.select([c for c in cols if c in boards.columns]).sort(
        "window", "horizon", "model", "seed"
    )
    costs = family_costs(fits)
    total = float(fits.filter(pl.col("device").is_not_null())["seconds"].sum())
    devices = sorted(set(fits["device"].drop_nulls().to_list()))
    lines = [
        f"# Neural members, {source}",
        "",
        f"Written by `benchmarks/neural.py` on {stamp['date']} ({stamp['machine']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB; Python {stamp['python']}); "
        f"protocol {protocol.hash()}; workers {args.workers}; device {', '.join(devices)}.",
        "",
        "Relative MAE is the network's MAE over the random walk's on the same origins (< 1 "
        "beats it); DM p is the Diebold-Mariano p-value (HAC) against the random walk. "
        "Development: where choices are made; scored: reported, never tuned on.",
        "",
        "## Accuracy by window, horizon and seed",
        "",
        markdown_table(table, max_rows=1000),
        "",
        "## Cost per family (walk-forward, one thread per process)",
        "",
        markdown_table(costs),
        "",
        f"Total network walk-forward time: {total:.0f} s (process seconds, summed over "
        "networks and horizons); wall time per horizon and seed:",
        "",
        "\n".join(f"- {k}: {v} s" for k, v in timings.items()),
        "",
    ]
    name = f"neural_{source}"
    (out / f"{name}.md").write_text("\n".join(lines))
    (out / f"{name}.json").write_text(
        json.dumps(
            {
                **stamp,
                "protocol": protocol.hash(),
                "source": source,
                "timings": timings,
                "accuracy": table.to_dicts(),
                "costs": costs.to_dicts(),
                "fits": fits.to_dicts(),
            },
            indent=2,
            default=str,
        )
    )
    record_run(out / f"{name}.md", protocol.hash())
    print(f"wrote {out / name}.md")


if __name__ == "__main__":
    sys.exit(main())
