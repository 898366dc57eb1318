"""The coverage interval every report and the promotion gate use: Wilson on independent
outcomes."""

import math

import numpy as np
import pytest

from cbi_platform.ensemble.conformal import coverage_interval


def test_known_wilson_values():
    lo, hi = coverage_interval(1.0, 5)  # 5 of 5: the textbook 95% Wilson interval
    assert lo == pytest.approx(0.5655, abs=1e-4) and hi == 1.0
    lo, hi = coverage_interval(0.5, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_fewer_independent_outcomes_give_a_wider_interval():
    widths = [np.subtract(*coverage_interval(0.8, n)[::-1]) for n in (5, 11, 19, 60)]
    assert widths == sorted(widths, reverse=True)


def test_no_evidence_gives_no_interval():
    assert all(math.isnan(v) for v in coverage_interval(0.9, 0))
    assert all(math.isnan(v) for v in coverage_interval(float("nan"), 10))


def test_the_interval_covers_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    n, p = 20, 0.9
    hits = rng.binomial(n, p, size=4000) / n
    inside = [lo <= p <= hi for lo, hi in (coverage_interval(h, n) for h in hits)]
    assert 0.93 <= np.mean(inside) <= 0.99
