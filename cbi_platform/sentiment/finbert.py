"""FinBERT (ProsusAI/finbert) article scores on CPU, and the choice between it and the lexicon.

Weights are never downloaded: they come from a configured folder (`CBI_FINBERT_PATH`) or the
Hugging Face cache, always with `local_files_only=True`. Without them `load_scorer` returns the
VADER lexicon with a notice that says why. Score = P(positive) - P(negative), read through the
model's own `id2label`, so a checkpoint with another label order scores the same way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from cbi_platform.sentiment.lexicon import LEXICON_NAME, LexiconScorer, score_frame

FINBERT_MODEL_ID = "ProsusAI/finbert"
FINBERT_KIND = "finbert"
MAX_BATCH_SIZE = 16
MAX_SEQUENCE_LENGTH = 128
REQUIRED_LABELS = ("positive", "negative", "neutral")


class Scorer(Protocol):
    name: str
    kind: str

    def score_texts(self, texts: Sequence[str]) -> pl.DataFrame: ...


@dataclass(frozen=True)
class ScorerInfo:
    """What goes into metadata: which scorer ran, from where, and why (for the fallback)."""

    name: str
    kind: str
    model_path: str | None = None
    notice: str | None = None
    load_seconds: float | None = None
    fingerprint: str | None = None  # which weights (or lexicon version) produced the scores

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FinBertScorer:
    """A BERT sequence classifier with positive/negative/neutral labels, scored in batches of
    at most 16 texts truncated to 128 tokens, on one CPU thread."""

    kind = FINBERT_KIND

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = f"FinBERT ({FINBERT_MODEL_ID})",
        batch_size: int = MAX_BATCH_SIZE,
        max_length: int = MAX_SEQUENCE_LENGTH,
    ) -> None:
        import torch  # heavy: delayed

        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH_SIZE}, got {batch_size}")
        if not 1 <= max_length <= MAX_SEQUENCE_LENGTH:
            raise ValueError(f"max_length must be 1..{MAX_SEQUENCE_LENGTH}, got {max_length}")
        torch.set_num_threads(1)
        self.model = model.to("cpu").eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.max_length = max_length
        self.label_index = label_indices(model.config.id2label)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> FinBertScorer:
        """From a folder written by `save_pretrained`, or a cached hub id; never downloads."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer  # heavy: delayed
        from transformers.utils import logging as hf_logging  # heavy: delayed

        hf_logging.disable_progress_bar()
        source = str(path)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(source, local_files_only=True)
        return cls(model, tokenizer, **{"name": f"FinBERT ({source})", **kwargs})

    def score_texts(self, texts: Sequence[str]) -> pl.DataFrame:
        """Per text: P(positive) - P(negative) and the three label probabilities, in order."""
        import torch  # heavy: delayed

        texts = [t or "" for t in texts]
        # Similar lengths batched together pad less; results go back to the input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        probs: dict[int, list[float]] = {}
        pos, neg, neu = (self.label_index[k] for k in REQUIRED_LABELS)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in batch],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.inference_mode():
                logits = self.model(**encoded).logits
            p = torch.softmax(logits.float(), dim=-1).numpy()
            for row, i in enumerate(batch):
                probs[i] = [float(p[row, pos]), float(p[row, neg]), float(p[row, neu])]
        rows = [(probs[i][0] - probs[i][1], *probs[i]) for i in range(len(texts))]
        return score_frame(rows)


def label_indices(id2label: dict) -> dict[str, int]:
    """{positive|negative|neutral: output index} from a model's id2label (any case)."""
    by_name = {str(label).strip().lower(): int(index) for index, label in id2label.items()}
    missing = [label for label in REQUIRED_LABELS if label not in by_name]
    if missing:
        raise ValueError(
            f"model labels {sorted(by_name)} lack {missing}: a FinBERT-style classifier needs "
            f"{list(REQUIRED_LABELS)} in its id2label"
        )
    return {label: by_name[label] for label in REQUIRED_LABELS}


def _cached_hub_config(model_id: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache  # heavy: delayed

    found = try_to_load_from_cache(model_id, "config.json")
    return Path(found) if isinstance(found, str) else None


def weights_fingerprint(folder: Path) -> str:
    """config.json's bytes and each weights file's name, size and mtime: changes with the
    checkpoint, costs no read of the weights themselves."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for file in sorted(folder.iterdir()):
        if file.suffix in (".safetensors", ".bin", ".pt", ".h5"):
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"finbert:{digest.hexdigest()[:16]}"


def lexicon_fingerprint() -> str:
    from importlib.metadata import version

    return f"vaderSentiment=={version('vaderSentiment')}"


def load_scorer(model_path: str | Path | None = None) -> tuple[Scorer, ScorerInfo]:
    """FinBERT from `model_path` (or, when None, the Hugging Face cache) if its weights load;
    otherwise the VADER lexicon, with a notice that says why."""
    started = time.perf_counter()
    if model_path is not None:
        where = str(Path(model_path).expanduser())
        found = Path(where).is_dir() and (Path(where) / "config.json").is_file()
        folder = Path(where)
        missing = f"FinBERT weights not found at {where}"
    else:
        from huggingface_hub.constants import HF_HUB_CACHE  # heavy: delayed

        where = FINBERT_MODEL_ID
        config = _cached_hub_config(FINBERT_MODEL_ID)
        found, folder = config is not None, config.parent if config is not None else None
        missing = (
            f"FinBERT weights not found at the Hugging Face cache ({FINBERT_MODEL_ID} in "
            f"{HF_HUB_CACHE}; set CBI_FINBERT_PATH to a local copy)"
        )
    if found:
        try:
            scorer = FinBertScorer.load(where)
        except Exception as error:  # a broken or partial copy: say so, then fall back
            missing = f"FinBERT weights at {where} could not be loaded ({type(error).__name__}: "
            missing += f"{str(error)[:300]})"
        else:
            seconds = round(time.perf_counter() - started, 3)
            info = ScorerInfo(
                scorer.name, scorer.kind, where, None, seconds, weights_fingerprint(folder)
            )
            return scorer, info
    notice = f"{missing}; using the VADER lexicon fallback"
    lexicon = LexiconScorer(reason=notice)
    seconds = round(time.perf_counter() - started, 3)
    info = ScorerInfo(LEXICON_NAME, lexicon.kind, where, notice, seconds, lexicon_fingerprint())
    return lexicon, info
