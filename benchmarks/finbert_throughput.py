"""Sentiment scoring throughput on CPU: articles per second, one thread, batch 16, 128 tokens.

Usage: .venv/bin/python benchmarks/finbert_throughput.py [--articles 64] [--day 50]
           [--finbert PATH]

Models, each through `FinBertScorer` (the pipeline's scorer):
  (a) the tiny test checkpoint (hidden 32, 2 layers), saved and loaded with from_pretrained;
  (b) "random weights, FinBERT's shape, throughput only": a randomly initialised BERT-base
      classifier (12 layers, hidden 768, 12 heads, vocab 30,522): FinBERT's cost, not its scores;
  (c) real FinBERT where its weights exist (CBI_FINBERT_PATH or the HF cache), else skipped;
and the VADER lexicon. Texts are the simulator's headline + body, padded to the longest in each
batch as the pipeline does (mean_tokens: with the benchmark's word-level vocabulary; FinBERT's
WordPiece splits numbers and rare words, so its sequences run somewhat longer), and the same
texts repeated to fill 128 tokens (the worst case). "Day" is one business day's batch of
`--day` articles, scored after a warm-up.
Results: benchmarks/results/finbert_throughput.{md,json}, with machine, date and command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

from cbi_platform.market.simulator import simulate_market  # noqa: E402
from cbi_platform.reporting import markdown_table  # noqa: E402
from cbi_platform.sentiment.finbert import (  # noqa: E402
    MAX_BATCH_SIZE,
    MAX_SEQUENCE_LENGTH,
    FinBertScorer,
    load_scorer,
)
from cbi_platform.sentiment.lexicon import LexiconScorer, article_text  # noqa: E402
from cbi_platform.sentiment.tiny_model import (  # noqa: E402
    build_classifier,
    build_tokenizer,
    save_tiny_finbert,
    vocabulary,
)

RANDOM_LABEL = "random weights, FinBERT's shape, throughput only"
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12}
BERT_BASE_VOCAB = 30522


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=64, help="texts per measurement")
    parser.add_argument("--day", type=int, default=50, help="articles in a day's batch")
    parser.add_argument("--finbert", help="FinBERT folder (default: CBI_FINBERT_PATH / HF cache)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return parser.parse_args()


def simulator_texts(n: int) -> list[str]:
    news = simulate_market().news.head(max(n, 1))
    return [article_text(h, b) for h, b in zip(news["headline"], news["body"], strict=True)]


def timed(scorer, texts: list[str]) -> float:
    started = time.perf_counter()
    scorer.score_texts(texts)
    return time.perf_counter() - started


def measure(label: str, scorer, texts: list[str], long_texts: list[str], day: list[str], load_s):
    timed(scorer, texts[:MAX_BATCH_SIZE])  # warm-up: first-call allocations, lazy imports
    short_s, long_s, day_s = timed(scorer, texts), timed(scorer, long_texts), timed(scorer, day)
    tokens = getattr(scorer, "tokenizer", None)
    mean_tokens = (
        sum(
            len(tokens(t, truncation=True, max_length=MAX_SEQUENCE_LENGTH)["input_ids"])
            for t in texts
        )
        / len(texts)
        if tokens is not None
        else None
    )
    model = getattr(scorer, "model", None)
    row = {
        "model": label,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
        if model
        else None,
        "load_s": round(load_s, 2) if load_s is not None else None,
        "mean_tokens": round(mean_tokens, 1) if mean_tokens else None,
        "articles_per_s": round(len(texts) / short_s, 1),
        "articles_per_s_128_tokens": round(len(long_texts) / long_s, 1),
        "day_batch_s": round(day_s, 2),
    }
    print(row, flush=True)
    return row


def main() -> int:
    args = parse_args()
    import torch

    torch.set_num_threads(1)
    texts = simulator_texts(max(args.articles, args.day))
    sample, day = texts[: args.articles], texts[: args.day]
    long_texts = [" ".join([t] * 6) for t in sample]  # truncated at 128 tokens
    rows, notices = [], []
    with tempfile.TemporaryDirectory(prefix="cbi-throughput-") as folder:
        started = time.perf_counter()
        tiny_path = save_tiny_finbert(Path(folder) / "tiny", words=texts)
        tiny = FinBertScorer.load(tiny_path)
        rows.append(
            measure("tiny (hidden 32, 2 layers)", tiny, sample, long_texts, day,
                    time.perf_counter() - started)
        )  # fmt: skip

        started = time.perf_counter()
        tokenizer = build_tokenizer(Path(folder) / "base", vocabulary(texts, BERT_BASE_VOCAB))
        base = build_classifier(BERT_BASE_VOCAB, **BERT_BASE)
        scorer = FinBertScorer(base, tokenizer, name=RANDOM_LABEL)
        rows.append(
            measure(RANDOM_LABEL, scorer, sample, long_texts, day, time.perf_counter() - started)
        )
        del scorer, base

    path = args.finbert or os.environ.get("CBI_FINBERT_PATH")
    real, info = load_scorer(path)
    if info.kind == "finbert":
        rows.append(measure(info.name, real, sample, long_texts, day, info.load_seconds))
    else:
        notices.append(f"real FinBERT skipped: {info.notice}")
        print(notices[-1], flush=True)

    started = time.perf_counter()
    lexicon = LexiconScorer()
    many = texts * max(1, 2000 // len(texts))
    lex_row = measure("lexicon fallback (VADER)", lexicon, many, long_texts, day,
                      time.perf_counter() - started)  # fmt: skip
    rows.append(lex_row)

    stamp = machine_stamp()
    command = f".venv/bin/python benchmarks/finbert_throughput.py {' '.join(sys.argv[1:])}".strip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "batch_size": MAX_BATCH_SIZE,
        "max_length": MAX_SEQUENCE_LENGTH,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "articles": args.articles,
        "day_batch": args.day,
    }
    result = {"machine": stamp, "command": command, "settings": settings, "rows": rows,
              "notices": notices}  # fmt: skip
    (out / "finbert_throughput.json").write_text(json.dumps(result, indent=1))
    import polars as pl

    md = [
        "# Sentiment scoring throughput (CPU, one thread)",
        "",
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['processor']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB); python {stamp['python']}",
        f"- command: `{command}`",
        f"- settings: {settings}",
        "- articles_per_s: simulator headline + body, padded to the longest in each batch of 16 "
        "(the pipeline's setting); articles_per_s_128_tokens: every text filling 128 tokens; "
        f"day_batch_s: {args.day} articles after a warm-up (load_s: building/loading the model)",
        *[f"- {n}" for n in notices],
        "",
        markdown_table(pl.DataFrame(rows)),
        "",
    ]
    (out / "finbert_throughput.md").write_text("\n".join(md))
    record_run(out / "finbert_throughput.md")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
