"""Accuracy benchmark: the frozen protocol on any manifest, development and scored windows side
by side, every member with the spread of its refit phases, the ensemble and its zones.

Usage:
  .venv/bin/python benchmarks/accuracy.py [--manifest manifests/shared_data.yaml]
      [--horizons 1w 1m 3m 6m 12m] [--workers 2] [--tail-rows N] [--no-phases]
      [--protocol FILE] [--anchor DATE] [--span N] [--n-scored N] [--n-development N]
      [--n-calibration N] [--end-offset N] [--min-first-origin-row N]

The protocol is cbi_platform/protocol.yaml unless flags override it; its hash is in every
result. `--tail-rows N` cuts the data to the target's last N trading days (the short-history
rule then scales the windows, with a notice). It runs the platform's own steps (the ones the
Dagster assets call), so the numbers are the pipeline's numbers. Results go to
benchmarks/results/accuracy_<source>[_tail<N>].{md,json} with the machine and date.

Noise: tree members refit every k origins (specs.yaml). Their relative MAE depends on which
origins the refits land on, so the benchmark re-runs every member with refit_every k > 1 at
each refit phase 1..k-1 and reports min / median / max. A comparison between members is a
finding only where the gap exceeds both members' phase spread and a DM test agrees.
Networks (refit_every 80: 79 phases) are left out of the phase spread; their noise is measured
over seeds by benchmarks/neural.py.
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
import polars.selectors as cs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402
from coverage_intervals import with_intervals  # noqa: E402

from cbi_platform.ensemble.zone_methods import target_zones  # noqa: E402
from cbi_platform.evaluation import horizon_run  # noqa: E402
from cbi_platform.evaluation.metrics import (  # noqa: E402
    REPORTED_METRICS,
    diebold_mariano,
    dm_lags,
    leaderboard,
)
from cbi_platform.evaluation.origins import DEVELOPMENT, SCORED  # noqa: E402
from cbi_platform.evaluation.volatility_eval import (  # noqa: E402
    best_volatility_model,
    score_volatility,
    volatility_walk_forward,
)
from cbi_platform.features.build import build_features  # noqa: E402
from cbi_platform.features.contract import HORIZONS  # noqa: E402
from cbi_platform.market.files import load_files_source  # noqa: E402
from cbi_platform.market.manifest import load_manifest  # noqa: E402
from cbi_platform.models.registry import GROUPS  # noqa: E402
from cbi_platform.regimes.detected import (  # noqa: E402
    label_regimes,
    walk_forward_regime_scores,
)
from cbi_platform.reporting import markdown_table  # noqa: E402
from cbi_platform.settings import load_protocol  # noqa: E402

# Peer methods on the real ZL series (issue 3): random-walk MAPE per horizon.
PEER_RW_MAPE = {"1w": 2.63, "1m": 5.81, "3m": 11.43, "6m": 14.69, "12m": 21.40}
TARGET_REL_MAE = {"1w": 0.97, "1m": 0.99, "3m": 1.00, "6m": 1.00, "12m": 1.00}
WINDOWS = {"development": (DEVELOPMENT,), "scored": (SCORED,)}
# Member comparisons the README makes: (challenger, baseline, what it asks)
COMPARISONS = (
    ("lgbm_dart_a_w", "lgbm_dart_a", "regime-calendar weights vs none"),
    ("lgbm_dart_a_bull", "lgbm_dart_a", "bull specialist vs generalist"),
    ("lgbm_dart_a_bear", "lgbm_dart_a", "bear specialist vs generalist"),
)
PROTOCOL_FLAGS = (
    "anchor",
    "span",
    "n_scored",
    "n_development",
    "n_calibration",
    "end_offset",
    "min_first_origin_row",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "manifests" / "shared_data.yaml"))
    parser.add_argument("--horizons", nargs="+", default=list(HORIZONS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--tail-rows", type=int, help="keep the target's last N trading days")
    parser.add_argument("--no-phases", action="store_true", help="skip the refit-phase spread")
    parser.add_argument("--protocol", help="protocol YAML (default: cbi_platform/protocol.yaml)")
    parser.add_argument("--anchor")
    for flag in PROTOCOL_FLAGS[1:]:
        parser.add_argument(f"--{flag.replace('_', '-')}", type=int)
    return parser.parse_args()


def member_windows(oof: pl.DataFrame, spacing: float) -> pl.DataFrame:
    """Leaderboard rows for both windows, with a `window` column."""
    return pl.concat(
        [
            leaderboard(oof, spacing_days=spacing, roles=roles).with_columns(window=pl.lit(name))
            for name, roles in WINDOWS.items()
        ],
        how="vertical_relaxed",
    )


def phase_spread(
    frame: pl.DataFrame,
    regimes: pl.DataFrame,
    horizon: str,
    cfg: horizon_run.ProtocolConfig,
    base: pl.DataFrame,
    spacing: float,
) -> pl.DataFrame:
    """Relative MAE of each member at every refit phase (phase 0 = the pipeline's run)."""
    rows = base.select("window", "model", "rel_mae").with_columns(phase=pl.lit(0))
    parts = [rows]
    specs = [s for s in horizon_run.zoo_specs(horizon) if s.kind not in GROUPS["neural"]]
    k_max = max(s.refit_every for s in specs)
    for phase in range(1, k_max):
        shifted = [s for s in specs if s.refit_every > phase]
        if not shifted:
            continue
        run_cfg = horizon_run.ProtocolConfig(cfg.protocol, cfg.n_workers, refit_phase=phase)
        oof, _, _ = horizon_run.member_predictions(frame, regimes, horizon, run_cfg, specs=shifted)
        board = member_windows(oof, spacing).filter(pl.col("model") != "random_walk")
        parts.append(board.select("window", "model", "rel_mae").with_columns(phase=pl.lit(phase)))
    everything = pl.concat(parts, how="vertical_relaxed")
    return (
        everything.group_by("window", "model")
        .agg(
            phases=pl.len(),
            rel_mae_min=pl.col("rel_mae").min(),
            rel_mae_median=pl.col("rel_mae").median(),
            rel_mae_max=pl.col("rel_mae").max(),
        )
        .with_columns(horizon=pl.lit(horizon), spread=pl.col("rel_mae_max") - pl.col("rel_mae_min"))
    )


def comparisons(
    oof: pl.DataFrame, spread: pl.DataFrame, horizon: str, spacing: float
) -> list[dict]:
    """Each README comparison: the gap, both spreads, the DM test, and whether it is a finding."""
    out = []
    for window, roles in WINDOWS.items():
        rows = oof.filter(pl.col("role").is_in(list(roles)) & pl.col("actual").is_not_null())
        for challenger, baseline, question in COMPARISONS:
            a = rows.filter(pl.col("model") == challenger).sort("origin")
            b = rows.filter(pl.col("model") == baseline).sort("origin")
            if a.height == 0 or b.height == 0:
                continue
            joined = a.join(b, on="origin", suffix="_b").drop_nulls(["forecast", "forecast_b"])
            err_a = (joined["forecast"] - joined["actual"]).abs().to_numpy()
            err_b = (joined["forecast_b"] - joined["actual"]).abs().to_numpy()
            rw = (joined["price"] - joined["actual"]).abs().to_numpy().mean()
            dm = diebold_mariano(err_a, err_b, dm_lags(HORIZONS[horizon], spacing))
            sp = spread.filter(pl.col("window") == window)
            spread_of = {
                m: float(sp.filter(pl.col("model") == m)["spread"][0])
                if sp.filter(pl.col("model") == m).height
                else 0.0
                for m in (challenger, baseline)
            }
            gap = float((err_a.mean() - err_b.mean()) / rw)
            noise = max(spread_of.values())
            finding = abs(gap) > noise and np.isfinite(dm.pvalue) and dm.pvalue < 0.10
            out.append(
                {
                    "horizon": horizon,
                    "window": window,
                    "question": question,
                    "challenger": challenger,
                    "baseline": baseline,
                    "rel_mae_gap": gap,
                    "phase_spread": noise,
                    "dm_pvalue": float(dm.pvalue),
                    "finding": bool(finding),
                    "verdict": (
                        ("challenger better" if gap < 0 else "challenger worse")
                        if finding
                        else "no finding (gap within noise or DM p >= 0.10)"
                    ),
                }
            )
    return out


def main() -> int:
    warnings.filterwarnings("ignore")
    args = parse_args()
    overrides = {f: getattr(args, f) for f in PROTOCOL_FLAGS}
    protocol = load_protocol(args.protocol, **overrides)
    manifest = load_manifest(args.manifest)
    bundle = load_files_source(args.manifest)
    prices = bundle.prices
    target = prices.filter(pl.col("symbol") == manifest.target).sort("date")
    if args.tail_rows:
        first = target["date"][-args.tail_rows]
        prices = prices.filter(pl.col("date") >= first)
        target = target.filter(pl.col("date") >= first)
    regimes = label_regimes(target["date"], target["value"].to_numpy())
    regime_scores, _ = walk_forward_regime_scores(
        target["date"], target["value"].to_numpy(), regimes["regime"]
    )
    cfg = horizon_run.ProtocolConfig(protocol, n_workers=args.workers)
    started = time.perf_counter()
    plan = horizon_run.origin_plan(target["date"], "1w", cfg)
    if plan.notice:
        print(f"notice: {plan.notice}", flush=True)
    vol = volatility_walk_forward(target["value"].to_numpy(), plan, dict(HORIZONS))
    vol_scores = score_volatility(vol)
    print(
        f"protocol {protocol.hash()}; volatility: {time.perf_counter() - started:.0f}s", flush=True
    )
    boards, coverages, spreads, compared, timings, vol_models = [], [], [], [], {}, {}
    for h in args.horizons:
        t0 = time.perf_counter()
        frame = build_features(prices, h, target=manifest.target).frame
        oof, _, plan_h = horizon_run.member_predictions(frame, regimes, h, cfg, progress=None)
        vol_models[h] = best_volatility_model(score_volatility(vol, role=DEVELOPMENT), h)
        ctx = horizon_run.context_frame(regimes, vol, h, vol_models[h])
        ens = horizon_run.ensemble_step(oof, ctx, cfg)
        history = target.select("date", price="value")
        zones = horizon_run.zones_step(
            oof, ens.forecasts, ctx, protocol.zone_method, history=history, features=frame
        )
        # The anchor: the random walk's plain normal band (sigma of past daily returns x sqrt h)
        anchor = target_zones(
            oof.filter(pl.col("model") == "random_walk"), ctx, "rw_normal", history=history
        ).with_columns(model=pl.lit("rw_normal_band"))
        ens_oof = horizon_run.ensemble_as_oof(ens.forecasts, oof)
        board = member_windows(
            pl.concat([oof, ens_oof], how="diagonal_relaxed"), plan_h.spacing_days
        )
        boards.append(board)
        coverages.append(
            horizon_run.window_coverage(pl.concat([zones, anchor], how="diagonal_relaxed"), WINDOWS)
        )
        if not args.no_phases:
            spread = phase_spread(frame, regimes, h, cfg, board, plan_h.spacing_days)
            spreads.append(spread)
            compared += comparisons(oof, spread, h, plan_h.spacing_days)
        timings[h] = round(time.perf_counter() - t0, 1)
        line = [f"{h}: {timings[h]}s"]
        for window in WINDOWS:
            e = board.filter((pl.col("model") == "ensemble") & (pl.col("window") == window))
            r = board.filter((pl.col("model") == "random_walk") & (pl.col("window") == window))
            if e.height and r.height:
                line.append(
                    f"{window}: RW MAPE {r['mape'][0]:.2f}% ens rel MAE {e['rel_mae'][0]:.3f}"
                )
        print("  ".join(line), flush=True)
    write_results(
        args,
        protocol,
        plan,
        boards,
        coverages,
        spreads,
        compared,
        timings,
        vol_scores,
        vol_models,
        pl.DataFrame([s.__dict__ for s in regime_scores]),
    )
    return 0


def write_results(
    args,
    protocol,
    plan,
    boards,
    coverages,
    spreads,
    compared,
    timings,
    vol_scores,
    vol_models,
    regime_scores,
) -> None:
    board = pl.concat(boards, how="vertical_relaxed")
    coverage = pl.concat(coverages, how="vertical_relaxed")
    spread = pl.concat(spreads, how="vertical_relaxed") if spreads else pl.DataFrame()
    stamp = machine_stamp()
    source = Path(args.manifest).stem + (f"_tail{args.tail_rows}" if args.tail_rows else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["horizon", "window", "model", *REPORTED_METRICS, "n_fallback"]
    headline = headline_table(board, coverage)
    md = [
        f"# Accuracy benchmark: {source}",
        "",
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['platform']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB); python {stamp['python']}",
        f"- **protocol hash `{protocol.hash()}`**: {json.dumps(protocol.as_dict())}",
        f"- command: `.venv/bin/python benchmarks/accuracy.py {' '.join(sys.argv[1:])}`",
        f"- origins: {plan.role.count('calibration')} calibration, "
        f"{plan.role.count('development')} development, {plan.role.count('scored')} scored "
        f"(every {plan.spacing_days:.2f} trading days on the grid anchored at {protocol.anchor}),"
        f" plus the live origin; development {_span(plan, 'development')}, scored "
        f"{_span(plan, 'scored')}",
        f"- notice: {plan.notice}" if plan.notice else "- full history: no scaling",
        f"- zone method `{protocol.zone_method}`; volatility model per horizon, chosen on the "
        f"development window: {vol_models}",
        f"- seconds per horizon (phase spread included): {timings}",
        "",
        "Choices are made on the development window; the scored window is reported, never "
        "tuned on.",
        "",
        "## Ensemble vs random walk, development and scored windows",
        "",
        markdown_table(headline),
        "",
        "## Target zones: coverage, width, interval score and pinball loss (ensemble zones and "
        "the random walk's own band)",
        "",
        "`coverage<L> [95%]`: the Wilson interval of the coverage on `n_effective` "
        "(non-overlapping target windows).",
        "",
        markdown_table(with_intervals(coverage).drop(cs.matches(r"^coverage\d+_(lo|hi)$"))),
        "",
    ]
    if spread.height:
        md += [
            "## Member relative MAE across refit phases (min / median / max)",
            "",
            markdown_table(
                spread.select(
                    "horizon",
                    "window",
                    "model",
                    "phases",
                    "rel_mae_min",
                    "rel_mae_median",
                    "rel_mae_max",
                    "spread",
                ).sort("window", "horizon", "rel_mae_median")
            ),
            "",
            "## Member comparisons: a finding only where the gap exceeds the phase spread and "
            "DM p < 0.10",
            "",
            markdown_table(pl.DataFrame(compared)),
            "",
        ]
    md += [
        "## Every model, both windows (relative MAE < 1 beats the random walk)",
        "",
        markdown_table(board.select([c for c in cols if c in board.columns])),
        "",
        "## Volatility forecasts vs realised (scored origins)",
        "",
        markdown_table(vol_scores),
        "",
        "## Detected-regime classifier, walk-forward (current regime and next month's)",
        "",
        markdown_table(regime_scores),
    ]
    (out / f"accuracy_{source}.md").write_text("\n".join(md) + "\n")
    (out / f"accuracy_{source}.json").write_text(
        json.dumps(
            {
                "machine": stamp,
                "protocol": protocol.as_dict(),
                "protocol_hash": protocol.hash(),
                "notice": plan.notice,
                "manifest": args.manifest,
                "tail_rows": args.tail_rows,
                "seconds": timings,
                "headline": headline.to_dicts(),
                "models": board.to_dicts(),
                "coverage": coverage.to_dicts(),
                "phase_spread": spread.to_dicts() if spread.height else [],
                "comparisons": compared,
                "volatility": vol_scores.to_dicts(),
                "volatility_model": vol_models,
                "regime_classifier": regime_scores.to_dicts(),
            },
            default=str,
            indent=1,
        )
    )
    record_run(out / f"accuracy_{source}.md", protocol.hash())
    print(f"wrote {out / f'accuracy_{source}.md'}")


def _span(plan, role: str) -> str:
    dates = [d for d, r in zip(plan.dates, plan.role, strict=True) if r == role]
    return f"{dates[0]}…{dates[-1]}" if dates else "-"


def headline_table(board: pl.DataFrame, coverage: pl.DataFrame) -> pl.DataFrame:
    ens = board.filter(pl.col("model") == "ensemble")
    rw = board.filter(pl.col("model") == "random_walk").select("horizon", "window", rw_mape="mape")
    cov = with_intervals(
        coverage.filter(pl.col("model") == "ensemble").select(
            "horizon", "window", "coverage80", "coverage90", "width90_pct", "n_effective"
        )
    )
    return (
        ens.join(rw, on=["horizon", "window"], how="left")
        .join(cov, on=["horizon", "window"], how="left")
        .with_columns(
            target=pl.col("horizon").replace_strict(TARGET_REL_MAE, default=None),
            peer_rw_mape=pl.col("horizon").replace_strict(PEER_RW_MAPE, default=None),
        )
        .select(
            "window",
            "horizon",
            "n",
            "rw_mape",
            "peer_rw_mape",
            "mape",
            "mase",
            "rel_mae",
            "target",
            "coverage80",
            "coverage80 [95%]",
            "coverage90",
            "coverage90 [95%]",
            "width90_pct",
            "n_effective",
        )
        .sort("window", pl.col("horizon").replace_strict({h: i for i, h in enumerate(HORIZONS)}))
    )


if __name__ == "__main__":
    sys.exit(main())
