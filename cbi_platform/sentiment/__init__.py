"""News sentiment: FinBERT (or a lexicon fallback) per article, point-in-time daily features.

Importing this package loads neither torch nor transformers: `finbert.py` imports them when a
scorer is built, and the pipeline builds scorers only in a separate process (`score.py`).
"""
