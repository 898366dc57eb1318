"""Proper scoring rules for intervals and quantiles, in price units or % of the price.

They sit in the ensemble layer because the zone methods choose among themselves by them;
`cbi_platform.evaluation.metrics` reports the same functions.
"""

from __future__ import annotations

import math

import numpy as np


def interval_score(actual, lo, hi, alpha: float, price=None) -> float:
    """Mean interval (Winkler) score of central (1 - alpha) intervals: width plus 2/alpha times
    the distance by which the outcome falls outside. Lower is better; it rewards narrow bands
    only while they keep their coverage. With `price`, each term is in % of that price."""
    a = np.asarray(actual, dtype=np.float64)
    low, high = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if not a.size:
        return math.nan
    score = (high - low) + (2.0 / alpha) * (np.maximum(low - a, 0.0) + np.maximum(a - high, 0.0))
    if price is not None:
        score = score / np.asarray(price, dtype=np.float64) * 100.0
    return float(np.mean(score))


def pinball_loss(actual, quantiles, taus, price=None) -> float:
    """Mean pinball (quantile) loss over rows and levels: max(tau (y - q), (tau - 1) (y - q)).
    `quantiles` is (n, k) with one column per tau. With `price`, in % of that price."""
    a = np.asarray(actual, dtype=np.float64)
    q = np.asarray(quantiles, dtype=np.float64).reshape(a.size, -1)
    t = np.asarray(taus, dtype=np.float64).reshape(1, -1)
    if not a.size:
        return math.nan
    diff = a[:, None] - q
    loss = np.maximum(t * diff, (t - 1.0) * diff)
    if price is not None:
        loss = loss / np.asarray(price, dtype=np.float64)[:, None] * 100.0
    return float(np.mean(loss))
