"""The regime truncation gate passes the real rule and catches planted look-aheads."""

import datetime as dt
import time
from functools import partial

import numpy as np
import pandas as pd
import polars as pl
import pytest

from cbi_platform.regimes.detected import (
    RegimeRule,
    crisis_threshold,
    label_regimes,
    regime_inputs,
)
from cbi_platform.regimes.truncation import LABEL_COLUMNS, regime_cuts, regime_truncation_gate


def garch_series(n: int = 1600, seed: int = 7) -> tuple[pl.Series, np.ndarray]:
    """A seeded GARCH(1,1) log-price path on business days: volatility clusters, so the crisis
    rule fires and the threshold moves."""
    rng = np.random.default_rng(seed)
    omega, alpha, beta = 2e-6, 0.08, 0.90
    variance = omega / (1 - alpha - beta)
    returns = np.empty(n)
    for t in range(n):
        returns[t] = np.sqrt(variance) * rng.standard_normal()
        variance = omega + alpha * returns[t] ** 2 + beta * variance
    dates = pl.date_range(dt.date(1998, 1, 1), dt.date(2040, 1, 1), "1d", eager=True)
    dates = dates.filter(dates.dt.weekday() <= 5)[:n]
    return dates, 40 * np.exp(np.cumsum(returns))


def centred_inputs(dates: pl.Series, prices: np.ndarray) -> pd.DataFrame:
    """Plant: the rolling volatilities centred on the date (half the window is future)."""
    out = regime_inputs(dates, prices)
    daily = pd.Series(np.log(prices)).diff()
    for w in (10, 21, 63):
        out[f"vol_{w}"] = daily.rolling(w, center=True).std() * np.sqrt(252)
    return out


def threshold_on_future_vol(vol: pd.Series, rule: RegimeRule) -> pd.Series:
    """Plant: the crisis threshold's expanding quantile includes the vol five days ahead."""
    return vol.shift(-5).expanding(min_periods=rule.min_history).quantile(rule.crisis_quantile)


def centred_drawdown(dates: pl.Series, prices: np.ndarray) -> pd.DataFrame:
    """Plant in a classifier-only column: the 252-day peak is centred on the date."""
    out = regime_inputs(dates, prices)
    logp = pd.Series(np.log(prices))
    out["drawdown_252"] = logp - logp.rolling(252, min_periods=21, center=True).max()
    return out


def _row_of(dates: pl.Series, day: str) -> int:
    return int(np.flatnonzero((dates.cast(pl.Utf8) == day).to_numpy())[0])


def test_gate_passes_on_the_real_rule_with_cuts_spread_over_the_series():
    dates, prices = garch_series()
    labels = label_regimes(dates, prices)
    assert "crisis" in labels["regime"].to_list()  # the series exercises the crisis threshold
    gate = regime_truncation_gate(dates, prices)
    assert gate.passed, gate.evidence["offenders"]
    evidence = gate.evidence
    assert evidence["offenders"] == [] and evidence["offending_columns"] == []
    assert evidence["rows"] == 1600
    assert evidence["label_columns"] == list(LABEL_COLUMNS)
    assert {"vol_21", "ret_63", "drawdown_252", "vol_ratio"} <= set(evidence["input_columns"])
    cut_rows = [_row_of(dates, c) for c in evidence["cuts"]]
    assert len(cut_rows) == 4
    assert [evidence["rows_per_cut"][c] for c in evidence["cuts"]] == [r + 1 for r in cut_rows]
    assert min(cut_rows) < 0.5 * len(dates) < max(cut_rows)  # spread, not all at the end
    assert max(cut_rows) >= 0.75 * len(dates) and max(cut_rows) < len(dates) - 1
    assert min(cut_rows) > RegimeRule().min_history  # every cut has labels to compare
    assert len({dates[r].weekday() for r in cut_rows}) > 1  # staggered weekdays


def test_gate_catches_a_centred_rolling_volatility():
    dates, prices = garch_series()
    gate = regime_truncation_gate(
        dates, prices, label=partial(label_regimes, inputs_fn=centred_inputs), inputs=centred_inputs
    )
    assert not gate.passed
    assert {"trailing_vol", "vol_21", "vol_10", "vol_63"} <= set(gate.evidence["offending_columns"])
    assert "trailing_vol" in gate.summary
    for offender in gate.evidence["offenders"]:
        cut = _row_of(dates, offender["cut"])
        rows = [_row_of(dates, d) for d in offender["dates"]]
        assert rows == offender["rows"]
        # A centred window of w rows reads w // 2 rows ahead: only those rows before a cut move.
        assert all(cut - 31 <= r <= cut for r in rows), offender
    trailing = [o for o in gate.evidence["offenders"] if o["column"] == "trailing_vol"]
    assert len(trailing) == len(gate.evidence["cuts"])  # every cut sees it
    assert all(o["n_rows"] == 10 and o["truncated"] == [None] * 5 for o in trailing)


def test_gate_catches_a_crisis_threshold_on_future_vol():
    dates, prices = garch_series()
    leaky = partial(label_regimes, threshold_fn=threshold_on_future_vol)
    gate = regime_truncation_gate(dates, prices, label=leaky)
    assert not gate.passed
    assert gate.evidence["offending_columns"] == ["crisis_threshold"]
    offenders = gate.evidence["offenders"]
    assert {o["cut"] for o in offenders} == set(gate.evidence["cuts"])
    for offender in offenders:
        cut = _row_of(dates, offender["cut"])
        assert offender["n_rows"] == 5
        assert offender["rows"] == list(range(cut - 4, cut + 1))  # the five rows before the cut
        assert offender["dates"] == [str(dates[r]) for r in offender["rows"]]
        assert offender["full"] != offender["truncated"]


def test_gate_checks_classifier_only_inputs():
    dates, prices = garch_series()
    gate = regime_truncation_gate(dates, prices, inputs=centred_drawdown)
    assert not gate.passed
    assert gate.evidence["offending_columns"] == ["drawdown_252"]


def test_gate_judges_the_table_as_written():
    dates, prices = garch_series()
    honest = label_regimes(dates, prices)
    assert regime_truncation_gate(dates, prices, written=honest).passed
    leaky = label_regimes(dates, prices, threshold_fn=threshold_on_future_vol)
    gate = regime_truncation_gate(dates, prices, written=leaky)
    assert not gate.passed
    written = [o for o in gate.evidence["offenders"] if o["cut"] == "none (as written)"]
    by_column = {o["column"]: o for o in written}
    assert set(by_column) <= {"regime", "crisis_threshold"}
    assert by_column["crisis_threshold"]["n_rows"] > 1000
    short = regime_truncation_gate(dates, prices, written=honest.head(100))
    assert not short.passed and short.evidence["offenders"][0]["column"] == "date"


def test_explicit_cuts_are_used_and_an_honest_rule_passes_at_each():
    dates, prices = garch_series()
    cuts = [dates[400], dates[1111], dates[1598]]
    gate = regime_truncation_gate(dates, prices, cut_dates=cuts)
    assert gate.passed and gate.evidence["cuts"] == [str(c) for c in cuts]
    assert gate.evidence["rows_per_cut"] == {
        str(dates[400]): 401,
        str(dates[1111]): 1112,
        str(dates[1598]): 1599,
    }


@pytest.mark.parametrize("n,n_cuts", [(300, 4), (1600, 1), (6800, 4), (6800, 8)])
def test_default_cuts_spread_over_the_labelled_span(n, n_cuts):
    dates = pl.Series([dt.date(2000, 1, 1) + dt.timedelta(days=i) for i in range(n)])
    cuts = regime_cuts(dates, 253 if n > 300 else 100, n_cuts)
    rows = [(c - dates[0]).days for c in cuts]
    assert rows == sorted(set(rows)) and all(r < n - 1 for r in rows)
    assert max(rows) >= 0.75 * n
    if n_cuts > 1:
        assert min(rows) < 0.5 * n


def test_crisis_threshold_is_the_quantile_of_strictly_earlier_vols():
    dates, prices = garch_series()
    rule = RegimeRule()
    vol = regime_inputs(dates, prices)[f"vol_{rule.vol_window}"]
    threshold = crisis_threshold(vol, rule)
    first = int(vol.first_valid_index())
    assert threshold.iloc[: first + rule.min_history].isna().all()
    for t in (first + rule.min_history, 900, 1599):
        past = vol.iloc[:t].dropna().to_numpy()
        assert threshold.iloc[t] == pytest.approx(np.quantile(past, rule.crisis_quantile))


def test_gate_is_fast_enough_for_the_pipeline():
    dates, prices = garch_series(6800, seed=11)
    started = time.perf_counter()
    gate = regime_truncation_gate(dates, prices)
    elapsed = time.perf_counter() - started
    assert gate.passed, gate.evidence["offenders"]
    assert elapsed < 5.0, elapsed
