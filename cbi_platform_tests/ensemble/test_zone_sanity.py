"""The live-band sanity check: a sane band passes, an absurd or a collapsed one is named."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from cbi_platform.ensemble.zone_sanity import Z90, check_band, live_band_sanity

SIGMA = 0.015  # daily log-return volatility of the simulated history


def _history(days: int, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    logp = np.log(40.0) + np.concatenate([[0.0], np.cumsum(rng.normal(0, SIGMA, days - 1))])
    dates = pl.date_range(dt.date(2000, 1, 3), dt.date(2060, 1, 1), "1d", eager=True)[:days]
    return pl.DataFrame({"date": dates, "price": np.exp(logp)})


def _band(price: float, h: int, k: float = 1.0) -> tuple[float, float]:
    """k times the normal 90% band (log-symmetric around the price)."""
    half = k * Z90 * SIGMA * math.sqrt(h)
    return price * math.exp(-half), price * math.exp(half)


def test_a_band_like_the_normal_band_passes():
    history = _history(3300)
    last = history.row(-1, named=True)
    for horizon, h in (("1w", 5), ("1m", 21), ("3m", 63), ("12m", 252)):
        lo, hi = _band(last["price"], h)
        result = check_band(horizon, last["date"], last["price"], lo, hi, history)
        assert result.verdict == "ok", result.reasons
        assert result.sane
        assert result.ratio_to_normal == pytest.approx(1.0, abs=0.1)


def test_a_12m_band_241_percent_of_the_price_warns_and_names_its_references():
    history = _history(3300)  # ~13 years: 12 independent 12-month windows
    last = history.row(-1, named=True)
    price = last["price"]
    half = math.asinh(2.41 / 2)  # log-symmetric band whose width is 241% of the price
    lo, hi = price * math.exp(-half), price * math.exp(half)
    result = check_band("12m", last["date"], price, lo, hi, history)
    assert result.width90_pct == pytest.approx(241.0)
    assert result.verdict == "too wide" and not result.sane
    assert result.independent_windows >= 10
    assert result.log_width90 / 2 > result.largest_move
    text = " ".join(result.reasons)
    assert "12m" in text and "241.0% of the price" in text and "largest 12m" in text


def test_a_band_wider_than_three_normal_bands_warns_at_short_horizons():
    history = _history(3300)
    last = history.row(-1, named=True)
    lo, hi = _band(last["price"], 21, k=3.5)
    result = check_band("1m", last["date"], last["price"], lo, hi, history)
    assert result.verdict == "too wide"
    assert any("normal band" in r for r in result.reasons)
    lo, hi = _band(last["price"], 21, k=2.5)  # within the factor of three
    within = check_band("1m", last["date"], last["price"], lo, hi, history)
    assert not any("normal band" in r for r in within.reasons)


def test_a_collapsed_band_is_too_narrow():
    history = _history(3300)
    last = history.row(-1, named=True)
    lo, hi = _band(last["price"], 5, k=0.2)
    result = check_band("1w", last["date"], last["price"], lo, hi, history)
    assert result.verdict == "too narrow" and not result.sane
    assert "below the floor" in result.reasons[0]


def test_a_short_history_does_not_use_the_largest_move():
    history = _history(1500)  # ~5 independent 12-month windows
    last = history.row(-1, named=True)
    lo, hi = _band(last["price"], 252, k=2.5)
    result = check_band("12m", last["date"], last["price"], lo, hi, history)
    assert result.independent_windows < 10
    assert result.verdict == "ok"
    assert any("largest-move reference not used" in r for r in result.reasons)


def test_only_history_up_to_the_origin_is_read():
    """A crash after the live origin must not change the reference (point in time)."""
    history = _history(3300)
    origin = history["date"][2999]
    crashed = history.with_columns(
        pl.when(pl.col("date") > origin).then(pl.col("price") * 0.2).otherwise(pl.col("price"))
    )
    price = float(history["price"][2999])
    lo, hi = _band(price, 21)
    a = check_band("1m", origin, price, lo, hi, history)
    b = check_band("1m", origin, price, lo, hi, crashed)
    assert a.largest_move == b.largest_move and a.normal_log_width == b.normal_log_width


def test_live_band_sanity_reads_the_ensembles_latest_origin_per_horizon():
    history = _history(3300)
    dates = history["date"].to_list()
    price = float(history["price"][-1])
    ok_lo, ok_hi = _band(price, 252)
    wide_lo, wide_hi = _band(price, 252, k=6.0)
    zones = pl.DataFrame(
        {
            "horizon": ["12m"] * 3 + ["1w"],
            "model": ["ensemble", "ensemble", "random_walk", "ensemble"],
            "origin": [dates[-30], dates[-1], dates[-1], dates[-1]],
            "price": [price] * 4,
            "lo90": [ok_lo, wide_lo, ok_lo, None],
            "hi90": [ok_hi, wide_hi, ok_hi, None],
        }
    )
    verdicts = {v.horizon: v for v in live_band_sanity(zones, history)}
    assert verdicts["12m"].verdict == "too wide"  # the live (latest) row, not the earlier one
    assert verdicts["1w"].verdict == "no band" and verdicts["1w"].sane
