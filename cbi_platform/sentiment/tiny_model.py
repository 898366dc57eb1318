"""A tiny BERT sequence classifier with FinBERT's labels, written to a folder like a checkpoint.

Tests and the throughput benchmark save it with `save_pretrained` and load it back through
`FinBertScorer.load` (`from_pretrained(path, local_files_only=True)`), the path real FinBERT
weights take. Its weights are random: its scores mean nothing, only the plumbing is real.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
FINBERT_ID2LABEL = {0: "positive", 1: "negative", 2: "neutral"}
DEFAULT_WORDS = (
    "soybean oil prices rise fall surge slump crude palm biofuel demand supply export levy "
    "china brazil harvest drought rains tariff trade mandate record crop stocks weak strong "
    "higher lower cut raise output demand the a of on to in as and by for with at"
)


def vocabulary(words: Iterable[str] = (), size: int | None = None) -> list[str]:
    """Special tokens, then the distinct lower-cased words (and digits, punctuation); padded
    with [unusedN] entries up to `size` when given (BERT-base has 30,522)."""
    tokens = list(SPECIAL_TOKENS)
    seen = set(tokens)
    pieces = list(words) or DEFAULT_WORDS.split()
    extra = [*"0123456789", *".,;:%$!?'\"()-+/"]
    for word in [w for p in pieces for w in re.findall(r"\w+|[^\w\s]", p.lower())] + extra:
        if word not in seen:
            seen.add(word)
            tokens.append(word)
    if size is not None:
        tokens += [f"[unused{i}]" for i in range(max(0, size - len(tokens)))]
    return tokens


def build_tokenizer(folder: Path, tokens: list[str]):
    """A BertTokenizer from a vocab file written into `folder`."""
    from transformers import BertTokenizer  # heavy: delayed

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return BertTokenizer(str(vocab_file), do_lower_case=True)


def build_classifier(
    vocab_size: int,
    *,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int | None = None,
    seed: int = 0,
    id2label: dict[int, str] | None = None,
):
    """A randomly initialised BertForSequenceClassification (FinBERT's id2label by default)."""
    import torch  # heavy: delayed
    from transformers import BertConfig, BertForSequenceClassification  # heavy: delayed

    id2label = dict(id2label or FINBERT_ID2LABEL)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=512,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={label: index for index, label in id2label.items()},
    )
    return BertForSequenceClassification(config).eval()


def save_tiny_finbert(
    folder: str | Path,
    words: Iterable[str] = (),
    seed: int = 0,
    id2label: dict[int, str] | None = None,
    favour: str | None = None,
) -> Path:
    """Write a tiny classifier (hidden 32, 2 layers, 2 heads) and its tokenizer to `folder`.

    `favour` names a label whose output gets a large bias, so every text lands on it: a test
    can then see that labels are read through id2label, not by position.
    """
    import torch  # heavy: delayed
    from transformers.utils import logging as hf_logging  # heavy: delayed

    hf_logging.disable_progress_bar()
    folder = Path(folder)
    tokens = vocabulary(words)
    tokenizer = build_tokenizer(folder, tokens)
    model = build_classifier(len(tokens), seed=seed, id2label=id2label)
    if favour is not None:
        with torch.no_grad():
            model.classifier.bias.zero_()
            model.classifier.bias[model.config.label2id[favour]] = 8.0
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
