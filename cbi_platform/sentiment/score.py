"""Article scoring in a process of its own.

    python -m cbi_platform.sentiment.score --in ARTICLES.parquet --out SCORES.parquet
        [--model PATH] [--info INFO.json] [--cache SCORES_CACHE.parquet]

torch (and, in a later issue, TensorFlow) each bring an OpenMP runtime; two in one process
can deadlock or oversubscribe, so the pipeline never imports torch itself: it writes the
articles to Parquet, runs this module with OMP/MKL threads = 1, and reads the scores back.

With `--cache`, an article (published_at, text) already scored by the same scorer (the same
weights fingerprint, or lexicon version) keeps its stored score and only new articles are
scored: the daily refresh scores a day's news, not the whole history (FinBERT's shape scores
about 12 articles/s on one thread: benchmarks/results/finbert_throughput.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from cbi_platform.lifeline import die_with_parent
from cbi_platform.sentiment.lexicon import SCORE_COLUMNS, article_text

ARTICLE_ID = "article_id"
ARTICLE_COLUMNS = ("published_at", "headline", "source")
SCORED_SCHEMA: dict[str, pl.DataType] = {
    ARTICLE_ID: pl.UInt32(),
    "published_at": pl.Date(),
    "headline": pl.Utf8(),
    "source": pl.Utf8(),
    **{c: pl.Float64() for c in SCORE_COLUMNS},
}
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",  # never download weights, whatever the caller's environment says
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
STDERR_TAIL_CHARS = 3000
CACHE_SCHEMA: dict[str, pl.DataType] = {
    "scorer": pl.Utf8(),
    "published_at": pl.Date(),
    "text": pl.Utf8(),
    **{c: pl.Float64() for c in SCORE_COLUMNS},
}


class SentimentScoringError(RuntimeError):
    """The scoring process failed; the message carries the tail of its stderr."""


def _texts(articles: pl.DataFrame) -> list[str]:
    return [
        article_text(headline, body)
        for headline, body in zip(articles["headline"], articles["body"], strict=True)
    ]


def score_articles(articles: pl.DataFrame, scorer: Any) -> pl.DataFrame:
    """One row per article, in input order: id, published_at, headline, source and the scores."""
    return _with_articles(articles, scorer.score_texts(_texts(articles)))


def score_articles_cached(
    articles: pl.DataFrame, scorer: Any, scorer_key: str, cache: Path
) -> tuple[pl.DataFrame, int]:
    """`score_articles`, reusing the scores `cache` holds for `scorer_key`; the cache gains the
    new ones (written atomically). Returns the scores and how many came from the cache."""
    keyed = pl.DataFrame(
        {"published_at": articles["published_at"].cast(pl.Date), "text": _texts(articles)}
    ).with_row_index("_row")
    stored = pl.read_parquet(cache) if cache.exists() else pl.DataFrame(schema=CACHE_SCHEMA)
    known = (
        stored.filter(pl.col("scorer") == scorer_key)
        .unique(subset=["published_at", "text"], keep="last")
        .drop("scorer")
    )
    joined = keyed.join(known, on=["published_at", "text"], how="left").sort("_row")
    todo = joined.filter(pl.col(SCORE_COLUMNS[0]).is_null()).select("_row", "published_at", "text")
    fresh = todo.hstack(scorer.score_texts(todo["text"].to_list()).get_columns())
    scores = pl.concat([joined.filter(pl.col(SCORE_COLUMNS[0]).is_not_null()), fresh]).sort("_row")
    if fresh.height:
        added = fresh.drop("_row").with_columns(scorer=pl.lit(scorer_key)).select(*CACHE_SCHEMA)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        pl.concat([stored.select(*CACHE_SCHEMA), added]).write_parquet(partial)
        os.replace(partial, cache)
    return _with_articles(articles, scores.select(SCORE_COLUMNS)), joined.height - todo.height


def _with_articles(articles: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    base = articles.select(
        pl.col(c).cast(SCORED_SCHEMA[c]) if c in articles.columns else pl.lit(None).alias(c)
        for c in ARTICLE_COLUMNS
    ).with_row_index(ARTICLE_ID)
    return base.hstack(scores.get_columns()).cast(SCORED_SCHEMA)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbi_platform.sentiment.score")
    parser.add_argument("--in", dest="input", required=True, help="articles (Parquet)")
    parser.add_argument("--out", required=True, help="scores (Parquet)")
    parser.add_argument("--model", help="FinBERT folder; absent: the Hugging Face cache")
    parser.add_argument("--info", help="scorer info JSON (default: OUT with .json)")
    parser.add_argument("--cache", help="scores of earlier runs (Parquet), reused and extended")
    parser.add_argument(
        "--parent-pid", type=int, help="die with this process (the step that started us)"
    )
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    for name, value in SINGLE_THREAD_ENV.items():
        os.environ.setdefault(name, value)
    from cbi_platform.sentiment.finbert import load_scorer

    articles = pl.read_parquet(args.input)
    scorer, info = load_scorer(args.model)
    if info.notice:
        print(info.notice, file=sys.stderr)
    started = time.perf_counter()
    if args.cache:
        key = info.fingerprint or info.name
        scored, from_cache = score_articles_cached(articles, scorer, key, Path(args.cache))
    else:
        scored, from_cache = score_articles(articles, scorer), 0
    seconds = time.perf_counter() - started
    scored.write_parquet(args.out)
    now = scored.height - from_cache
    report = {
        **info.as_dict(),
        "articles": scored.height,
        "articles_from_cache": from_cache,
        "score_seconds": round(seconds, 3),
        "articles_per_second": round(now / seconds, 1) if seconds > 0 and now else None,
    }
    info_path = Path(args.info) if args.info else Path(args.out).with_suffix(".json")
    info_path.write_text(json.dumps(report, indent=1))
    return 0


def score_articles_subprocess(
    articles: pl.DataFrame,
    model_path: str | Path | None,
    workdir: str | Path,
    timeout: float | None = None,
    cache: str | Path | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Score `articles` (published_at, headline, body, source) in a child process.

    Returns the scores (SCORED_SCHEMA, input order) and the scorer info: name, kind, path,
    the fallback notice, load and scoring seconds, articles per second (of those scored now),
    articles taken from `cache`, and the process's wall seconds. A failed child raises
    SentimentScoringError with the tail of its stderr.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source, target, info_path = (
        workdir / "articles.parquet",
        workdir / "scores.parquet",
        workdir / "scores.json",
    )
    articles.write_parquet(source)
    command = [sys.executable, "-m", "cbi_platform.sentiment.score"]
    command += ["--in", str(source), "--out", str(target), "--info", str(info_path)]
    command += ["--parent-pid", str(os.getpid())]
    if model_path is not None:
        command += ["--model", str(model_path)]
    if cache is not None:
        command += ["--cache", str(cache)]
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **SINGLE_THREAD_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        tail = (error.stderr or b"")[-STDERR_TAIL_CHARS:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise SentimentScoringError(
            f"sentiment scoring timed out after {timeout}s on {articles.height} article(s); "
            f"stderr tail:\n{tail}"
        ) from error
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SentimentScoringError(
            f"sentiment scoring process exited with code {proc.returncode} on "
            f"{articles.height} article(s) ({' '.join(command)}); stderr tail:\n"
            f"{proc.stderr[-STDERR_TAIL_CHARS:]}"
        )
    info = json.loads(info_path.read_text())
    info["process_seconds"] = round(wall, 3)
    return pl.read_parquet(target), info


if __name__ == "__main__":
    sys.exit(main())
