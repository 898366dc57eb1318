"""Sentiment ablation: do the daily news-sentiment features help the walk-forward?

Usage: .venv/bin/python benchmarks/sentiment_ablation.py [--end 2025-12-31] [--horizons 1w 1m]
           [--members lgbm_gbdt ridge] [--workers 2] [--finbert PATH] [--write-config]

On the simulator (its news tone leads ZL weakly; the scorer must read the tone from the
wording), the platform's own walk-forward (`horizon_run.member_predictions`, frozen protocol)
runs each member twice per horizon: features without and with f_news_* (articles scored by the
pipeline's scoring process: FinBERT where weights exist, else the VADER lexicon). Reported per
member, horizon and window (development / scored): relative MAE vs the random walk, the DM p
vs the random walk, and the paired DM p of "with" vs "without".

Decision rule, PRE-REGISTERED (written before the first run, not changed after):
    Sentiment enters a horizon's features only if, on the DEVELOPMENT window,
    (a) the members' relative MAE with sentiment is lower than without, on average over the
        members (mean of rel_mae_with - rel_mae_without < 0), and
    (b) for at least one member, a Diebold-Mariano test of its absolute errors with vs
        without sentiment (overlap-aware Newey-West lags, HLN correction) has p < 0.10 with
        the "with" errors lower.
    The scored window is reported beside the decision and never changes it. Horizons not run
    stay off. `--write-config` writes the decision into cbi_platform/sentiment/sentiment.yaml.

Results: benchmarks/results/sentiment_ablation_simulated.{md,json}, with machine, date,
command, protocol hash and the scorer used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

from cbi_platform.evaluation import horizon_run  # noqa: E402
from cbi_platform.evaluation.metrics import diebold_mariano, dm_lags, leaderboard  # noqa: E402
from cbi_platform.evaluation.origins import DEVELOPMENT, SCORED  # noqa: E402
from cbi_platform.features.build import build_features  # noqa: E402
from cbi_platform.features.contract import HORIZONS  # noqa: E402
from cbi_platform.features.leakage import run_leakage_gates  # noqa: E402
from cbi_platform.market.simulator import SimulatorConfig, simulate_market_with_truth  # noqa: E402
from cbi_platform.models.registry import load_specs  # noqa: E402
from cbi_platform.regimes.detected import label_regimes  # noqa: E402
from cbi_platform.reporting import markdown_table  # noqa: E402
from cbi_platform.sentiment.config import SENTIMENT_CONFIG_PATH  # noqa: E402
from cbi_platform.sentiment.features import SENTIMENT_FEATURES, daily_sentiment  # noqa: E402
from cbi_platform.sentiment.score import score_articles_subprocess  # noqa: E402
from cbi_platform.settings import load_protocol  # noqa: E402

WINDOWS = (DEVELOPMENT, SCORED)
DM_ALPHA = 0.10
RESULT_STEM = "sentiment_ablation_simulated"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_end = os.environ.get("CBI_SIM_END") or SimulatorConfig().end.isoformat()
    parser.add_argument("--end", default=default_end, help="simulator end (CBI_SIM_END)")
    parser.add_argument("--horizons", nargs="+", default=["1w", "1m"])
    parser.add_argument("--members", nargs="+", default=["lgbm_gbdt", "ridge"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--finbert", help="FinBERT folder (default: CBI_FINBERT_PATH / HF cache)")
    parser.add_argument("--write-config", action="store_true", help="write sentiment.yaml")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return parser.parse_args()


def member_specs(horizon: str, members: list[str]):
    specs = [s for s in load_specs(horizon=horizon) if s.name in members]
    missing = sorted(set(members) - {s.name for s in specs})
    if missing:
        raise SystemExit(f"members {missing} do not run at {horizon} (specs.yaml)")
    return specs


def window_rows(oof: pl.DataFrame, window: str, members: list[str]) -> pl.DataFrame:
    board = leaderboard(oof, roles=(window,))
    return board.filter(pl.col("model").is_in(members)).select(
        "model", "n", "rel_mae", "dm_pvalue", "dm_stat"
    )


def paired_dm(
    on: pl.DataFrame, off: pl.DataFrame, member: str, window: str, horizon: str
) -> tuple[float, float, int]:
    """DM test of |error| with sentiment vs without, same member, same origins."""
    keep = ["origin", "origin_row", "actual", "forecast"]

    def rows(oof: pl.DataFrame) -> pl.DataFrame:
        return oof.filter(
            (pl.col("model") == member)
            & (pl.col("role") == window)
            & pl.col("actual").is_not_null()
            & pl.col("forecast").is_not_null()
        ).select(keep)

    joined = rows(on).join(rows(off), on=["origin", "origin_row", "actual"], suffix="_off")
    joined = joined.sort("origin")
    if joined.height < 2:
        return float("nan"), float("nan"), joined.height
    origin_rows = np.unique(joined["origin_row"].to_numpy())
    spacing = float((origin_rows[-1] - origin_rows[0]) / max(origin_rows.size - 1, 1))
    err_on = (joined["forecast"] - joined["actual"]).abs().to_numpy()
    err_off = (joined["forecast_off"] - joined["actual"]).abs().to_numpy()
    dm = diebold_mariano(err_on, err_off, dm_lags(HORIZONS[horizon], max(spacing, 1.0)))
    return float(dm.stat), float(dm.pvalue), joined.height


def decide(table: pl.DataFrame, horizon: str) -> dict:
    """The pre-registered rule on the development window."""
    dev = table.filter((pl.col("horizon") == horizon) & (pl.col("window") == DEVELOPMENT))
    mean_change = float(dev["rel_mae_change"].mean())
    agreeing = dev.filter(
        (pl.col("dm_with_vs_without_p") < DM_ALPHA) & (pl.col("dm_with_vs_without_stat") < 0)
    )["model"].to_list()
    use = bool(mean_change < 0 and agreeing)
    reason = (
        f"development: mean rel MAE change {mean_change:+.4f} "
        f"({'lower' if mean_change < 0 else 'not lower'} with sentiment); members with DM "
        f"p < {DM_ALPHA} in favour of sentiment: {agreeing or 'none'}"
    )
    return {"use": use, "mean_rel_mae_change": mean_change, "dm_agreeing": agreeing, "why": reason}


def tone_agreement(scored: pl.DataFrame, truth: pl.DataFrame) -> dict:
    """How well the scorer reads the simulator's hidden tone (diagnostic only; never a feature)."""
    score = scored["sentiment_score"].to_numpy()
    tone = truth["tone"].cast(pl.Float64).to_numpy()
    corr = float(np.corrcoef(score, tone)[0, 1]) if score.size > 2 else float("nan")
    polar = tone != 0
    sign_hit = float(np.mean(np.sign(score[polar]) == tone[polar])) if polar.any() else float("nan")
    return {"corr_score_tone": round(corr, 4), "sign_agreement_on_polar": round(sign_hit, 4)}


def write_config(decisions: dict[str, dict], stamp: dict, command: str) -> None:
    flags = {h: bool(decisions.get(h, {}).get("use", False)) for h in HORIZONS}
    text = [
        "Whether the daily news-sentiment features (f_news_sent_mean, f_news_sent_disp, "
        "f_news_count, f_news_sent_surprise) enter each horizon's feature frame. Read when the "
        "Dagster definitions load (cbi_platform/defs/sentiment/assets.py): with every flag false "
        "the pipeline never scores news and the `features` tables are exactly what they were "
        "without this file.",
        f"Decision: the pre-registered rule of benchmarks/sentiment_ablation.py on the "
        f"development window ({stamp['date']}; `{command}`; "
        f"benchmarks/results/{RESULT_STEM}.md; scored window reported there, not used). "
        "Horizons the ablation did not run stay off.",
        *[f"{h}: {'ON' if d['use'] else 'off'} - {d['why']}" for h, d in decisions.items()],
    ]
    lines = []
    for paragraph in text:
        wrapped = textwrap.wrap(paragraph, width=96, break_on_hyphens=False)
        lines += [f"# {line}" for line in wrapped] + ["#"]
    lines[-1:] = ["use_in_features:"]
    lines += [f"  {h}: {'true' if v else 'false'}" for h, v in flags.items()]
    SENTIMENT_CONFIG_PATH.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    warnings.filterwarnings("ignore")
    args = parse_args()
    started = time.perf_counter()
    config = SimulatorConfig(end=dt.date.fromisoformat(args.end))
    bundle, truth = simulate_market_with_truth(config)
    prices, news = bundle.prices, bundle.news
    model_path = args.finbert or os.environ.get("CBI_FINBERT_PATH")
    with tempfile.TemporaryDirectory(prefix="cbi-ablation-") as workdir:
        scored, scorer = score_articles_subprocess(news, model_path, workdir)
    daily = daily_sentiment(scored)
    agreement = tone_agreement(scored, truth)
    print(f"scored {scored.height} articles with {scorer['name']}: {agreement}", flush=True)
    if scorer.get("notice"):
        print(f"notice: {scorer['notice']}", flush=True)

    target = prices.filter(pl.col("symbol") == bundle.target).sort("date")
    regimes = label_regimes(target["date"], target["value"].to_numpy())
    protocol = load_protocol()
    cfg = horizon_run.ProtocolConfig(protocol, n_workers=args.workers)
    rows, gates, timings = [], {}, {}
    for h in args.horizons:
        t0 = time.perf_counter()
        specs = member_specs(h, args.members)
        frame_off = build_features(prices, h, target=bundle.target).frame
        frame_on = build_features(prices, h, target=bundle.target, news_sentiment=daily).frame
        gate_results = run_leakage_gates(frame_on, prices, h, bundle.target, news_sentiment=daily)
        gates[h] = {name: g.passed for name, g in gate_results.items()}
        oof_off, _, _ = horizon_run.member_predictions(frame_off, regimes, h, cfg, specs=specs)
        oof_on, _, _ = horizon_run.member_predictions(frame_on, regimes, h, cfg, specs=specs)
        for window in WINDOWS:
            off = window_rows(oof_off, window, args.members)
            on = window_rows(oof_on, window, args.members)
            both = off.join(on, on="model", suffix="_with")
            for r in both.iter_rows(named=True):
                stat, p, n = paired_dm(oof_on, oof_off, r["model"], window, h)
                rows.append(
                    {
                        "horizon": h,
                        "window": window,
                        "model": r["model"],
                        "n": r["n"],
                        "rel_mae_without": r["rel_mae"],
                        "rel_mae_with": r["rel_mae_with"],
                        "rel_mae_change": r["rel_mae_with"] - r["rel_mae"],
                        "dm_vs_rw_p_without": r["dm_pvalue"],
                        "dm_vs_rw_p_with": r["dm_pvalue_with"],
                        "dm_with_vs_without_stat": stat,
                        "dm_with_vs_without_p": p,
                    }
                )
        timings[h] = round(time.perf_counter() - t0, 1)
        print(f"{h}: {timings[h]}s, gates {gates[h]}", flush=True)
    table = pl.DataFrame(rows)
    decisions = {h: decide(table, h) for h in args.horizons}
    for h, d in decisions.items():
        print(f"{h}: {'USE' if d['use'] else 'do not use'} sentiment - {d['why']}", flush=True)

    stamp = machine_stamp()
    command = f".venv/bin/python benchmarks/sentiment_ablation.py {' '.join(sys.argv[1:])}".strip()
    total = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": stamp,
        "command": command,
        "protocol_hash": protocol.hash(),
        "simulator_end": args.end,
        "scorer": scorer,
        "tone_agreement": agreement,
        "features": list(SENTIMENT_FEATURES),
        "members": args.members,
        "leakage_gates_with_sentiment": gates,
        "seconds": {"total": total, **timings},
        "rows": table.to_dicts(),
        "decisions": decisions,
    }
    (out / f"{RESULT_STEM}.json").write_text(json.dumps(result, indent=1, default=str))
    shown = table.with_columns(pl.col(pl.Float64).round(4))
    md = [
        "# Sentiment ablation: simulator, walk-forward with and without f_news_*",
        "",
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['cpus']} CPUs, "
        f"{stamp['memory_gib']} GiB); python {stamp['python']}",
        f"- command: `{command}`",
        f"- protocol hash `{protocol.hash()}`; simulator 2000-01-03..{args.end}; members "
        f"{args.members}; {args.workers} worker(s); {total}s in all ({timings})",
        f"- scorer: **{scorer['name']}** ({scorer['kind']}); "
        f"{scorer.get('notice') or 'FinBERT weights loaded'}",
        f"- scorer vs the simulator's hidden tone (diagnostic): {agreement}",
        f"- leakage gates on the frames with sentiment: {gates}",
        "",
        "Rule (pre-registered in the script's docstring): sentiment enters a horizon only if, on "
        "the development window, the members' relative MAE is lower with it on average AND a DM "
        f"test of with vs without has p < {DM_ALPHA} in its favour for at least one member. "
        "The scored window is reported, never used for the decision.",
        "",
        "## Decision",
        "",
        *[f"- **{h}: {'ON' if d['use'] else 'off'}** - {d['why']}" for h, d in decisions.items()],
        "",
        "## Per member (rel MAE vs the random walk; DM p vs the random walk; paired DM with vs "
        "without)",
        "",
        markdown_table(shown),
        "",
    ]
    (out / f"{RESULT_STEM}.md").write_text("\n".join(md))
    record_run(out / f"{RESULT_STEM}.md", protocol.hash())
    if args.write_config:
        write_config(decisions, stamp, command)
        print(f"wrote {SENTIMENT_CONFIG_PATH}", flush=True)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
