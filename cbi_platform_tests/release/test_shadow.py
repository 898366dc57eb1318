"""Shadow scoring: pairing champion and challenger on the same matured targets, the summary
numbers (checked by hand), and when a shadow record can promote."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from scipy import stats

from cbi_platform.release.gates import Decision
from cbi_platform.release.shadow import (
    FAVOURS_CHALLENGER,
    INSUFFICIENT,
    NO_RECORD,
    NOT_BETTER,
    ShadowComparison,
    compare,
    decide_with_shadow,
    shadow_record,
)
from cbi_platform.release.versions import model_version_label

D = dt.date


def row(as_of, version, target, forecast, lo=None, hi=None, price=None, horizon="1w", role=None):
    return {
        "as_of": as_of,
        "horizon": horizon,
        "model_version": version,
        "target_date": target,
        "price": price,
        "forecast": forecast,
        "lo90": lo,
        "hi90": hi,
        "role": role,
    }


CHAMP, CHALL = "cbi-zl-1w/v1", "cbi-zl-1w/v2"


def test_model_version_label():
    assert model_version_label("1w", "3") == "cbi-zl-1w/v3"
    assert model_version_label("1w", "v3") == "cbi-zl-1w/v3"
    assert model_version_label("1w", "cbi-zl-1w/v3") == "cbi-zl-1w/v3"


def test_shadow_record_pairs_common_matured_targets_only():
    prices = pl.DataFrame(
        {
            "date": [D(2024, 1, 1), D(2024, 1, 2), D(2024, 1, 5), D(2024, 1, 8), D(2024, 1, 9)],
            "value": [100.0, 101.0, 104.0, 200.0, 210.0],
        }
    )
    history = pl.DataFrame(
        [
            # champion only (no shadow that day): dropped
            row(D(2024, 1, 1), CHAMP, D(2024, 1, 5), 103.0, 99, 107),
            # both; target Sat 6 Jan: the actual is Friday's 104, never Monday's 200
            row(D(2024, 1, 2), CHAMP, D(2024, 1, 6), 102.0, 100, 103, role="served"),
            row(D(2024, 1, 2), CHALL, D(2024, 1, 6), 105.0, 101, 108, role="shadow"),
            # both; target Thu 4 Jan (a missing close): the actual is 2 Jan's 101
            row(D(2024, 1, 3), CHAMP, D(2024, 1, 4), 100.0, None, None, price=100.5),
            row(D(2024, 1, 3), CHALL, D(2024, 1, 4), 101.5, 100, 102, role="shadow"),
            # both, but not matured (after the last price date 9 Jan): dropped
            row(D(2024, 1, 5), CHAMP, D(2024, 1, 12), 104.0),
            row(D(2024, 1, 5), CHALL, D(2024, 1, 12), 104.0, role="shadow"),
            # another horizon and another version: ignored
            row(D(2024, 1, 2), "cbi-zl-1m/v2", D(2024, 1, 6), 1.0, horizon="1m"),
            row(D(2024, 1, 2), "cbi-zl-1w/v7", D(2024, 1, 6), 1.0, role="shadow"),
        ]
    )
    rec = shadow_record(history, prices, "1w", "1", "v2")
    assert rec["as_of"].to_list() == [D(2024, 1, 2), D(2024, 1, 3)]
    assert rec["actual"].to_list() == [104.0, 101.0]
    # random walk: the close at the origin (3 Jan has none: the last before it, 2 Jan's 101)
    assert rec["rw_forecast"].to_list() == [101.0, 101.0]
    assert rec["champion_abs_error"].to_list() == [2.0, 1.0]
    assert rec["challenger_abs_error"].to_list() == [1.0, 0.5]
    assert rec["rw_abs_error"].to_list() == [3.0, 0.0]
    assert rec["champion_in90"].to_list() == [False, None]  # no zone on 3 Jan
    assert rec["challenger_in90"].to_list() == [True, True]
    assert shadow_record(history, prices, "1w", CHAMP, "cbi-zl-1w/v9").height == 0
    assert shadow_record(history.clear(), prices, "1w", CHAMP, CHALL).height == 0


def record(champ_err, chall_err, rw_err, champ_in=None, chall_in=None) -> pl.DataFrame:
    n = len(champ_err)
    start = D(2024, 1, 1)
    actual = np.full(n, 100.0)
    return pl.DataFrame(
        {
            "as_of": [start + dt.timedelta(days=i) for i in range(n)],
            "target_date": [start + dt.timedelta(days=i + 7) for i in range(n)],
            "actual": actual,
            "champion_forecast": actual + np.asarray(champ_err, float),
            "challenger_forecast": actual - np.asarray(chall_err, float),
            "rw_forecast": actual + np.asarray(rw_err, float),
            "champion_abs_error": np.abs(champ_err).astype(float),
            "challenger_abs_error": np.abs(chall_err).astype(float),
            "rw_abs_error": np.abs(rw_err).astype(float),
            "champion_in90": champ_in if champ_in is not None else [True] * n,
            "challenger_in90": chall_in if chall_in is not None else [True] * n,
        }
    )


def test_compare_by_hand():
    rec = record([2, 2, 2, 2], [1, 1, 1, 3], [4, 4, 4, 4], [True, False, True, True], [True] * 4)
    got = compare(rec, horizon_days=1)  # non-overlapping: no Newey-West lags
    assert (got.n, got.n_independent, got.dm_lags) == (4, 4, 0)
    assert (got.mae_champion, got.mae_challenger, got.mae_random_walk) == (2.0, 1.5, 4.0)
    assert got.rel_mae_champion == pytest.approx(0.5)
    assert got.rel_mae_challenger == pytest.approx(0.375)
    assert got.mae_improvement == pytest.approx(0.25)
    # d = [-1,-1,-1,1]: mean -0.5, variance 0.75, HLN factor sqrt(3/4) -> stat -1.0 exactly
    assert got.dm_stat == pytest.approx(-1.0)
    assert got.dm_pvalue == pytest.approx(2 * stats.t.sf(1.0, df=3))
    assert (got.coverage90_champion, got.coverage90_challenger) == (0.75, 1.0)
    assert got.as_dict()["mae_improvement"] == pytest.approx(0.25)


def test_compare_overlapping_forecasts():
    rng = np.random.default_rng(0)
    nine = compare(record(*rng.uniform(0, 1, (3, 9))), horizon_days=5)
    assert (nine.n_independent, nine.dm_lags) == (2, 4)  # ceil(9 / 5)
    assert nine.dm_pvalue is None and nine.dm_stat is None  # fewer than 2h = 10 outcomes
    ten = compare(record(*rng.uniform(0, 1, (3, 10))), horizon_days=5)
    assert ten.n_independent == 2 and ten.dm_pvalue is not None
    one = compare(record([1.0], [0.5], [1.0]), horizon_days=21)
    assert one.n_independent == 1
    empty = compare(record([], [], []), horizon_days=5)
    assert (empty.n, empty.n_independent, empty.mae_champion, empty.dm_pvalue) == (0, 0, None, None)


def strong_history(n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Daily 1w forecasts over n origins: the challenger errs far less than the champion."""
    rng = np.random.default_rng(1)
    days = [D(2024, 1, 1) + dt.timedelta(days=i) for i in range(n + 5)]
    closes = 100 + np.cumsum(rng.normal(0, 1, n + 5))
    rows = []
    for i in range(n):
        actual = closes[i + 5]
        rows.append(
            row(days[i], CHAMP, days[i + 5], actual + rng.normal(0, 2), actual - 3, actual + 3)
        )
        rows.append(
            row(
                days[i],
                CHALL,
                days[i + 5],
                actual + rng.normal(0, 0.3),
                actual - 1,
                actual + 1,
                role="shadow",
            )
        )
    return pl.DataFrame(rows), pl.DataFrame({"date": days, "value": closes})


WF_NOT_BETTER = Decision(False, ("MASE 0.9 vs 0.95 on 40 common origins: +5.3% < 10%",))


def test_a_strong_shadow_record_promotes_and_says_how_many_outcomes():
    history, prices = strong_history(60)
    shadow = compare(shadow_record(history, prices, "1w", "1", "2"), horizon_days=5)
    assert shadow.n == 60 and shadow.n_independent == 12
    decision = decide_with_shadow(WF_NOT_BETTER, shadow)
    assert decision.promote and not decision.walk_forward_promote
    assert decision.shadow_verdict == FAVOURS_CHALLENGER
    assert decision.shadow_outcomes_used == 60
    assert all("[60 shadow outcomes used]" in r for r in decision.reasons)
    assert decision.reasons[0].startswith("walk-forward: MASE")
    assert "promoted on the shadow record" in decision.reasons[-1]


def test_too_few_shadow_outcomes_do_not_promote():
    history, prices = strong_history(12)
    shadow = compare(shadow_record(history, prices, "1w", "1", "2"), horizon_days=5)
    decision = decide_with_shadow(WF_NOT_BETTER, shadow)
    assert not decision.promote and decision.shadow_verdict == INSUFFICIENT
    assert decision.shadow_outcomes_used == 12
    assert "only 12 matured shadow outcomes (need 20)" in decision.reasons[-1]
    assert all("[12 shadow outcomes used]" in r for r in decision.reasons)
    none = decide_with_shadow(WF_NOT_BETTER, None)
    assert not none.promote and none.shadow_verdict == NO_RECORD
    assert none.shadow_outcomes_used == 0 and "[0 shadow outcomes used]" in none.reasons[-1]


def test_enough_outcomes_but_dm_cannot_run_for_long_horizons():
    history, prices = strong_history(30)
    shadow = compare(shadow_record(history, prices, "1w", "1", "2"), horizon_days=21)
    decision = decide_with_shadow(WF_NOT_BETTER, shadow)
    assert not decision.promote and decision.shadow_verdict == NOT_BETTER
    assert "DM test not run" in decision.reasons[-1]


def test_a_challenger_that_failed_its_gates_is_never_promoted():
    history, prices = strong_history(60)
    shadow = compare(shadow_record(history, prices, "1w", "1", "2"), horizon_days=5)
    gate = "90% coverage 0.700 is not within 5% of 0.90"
    failed = Decision(False, (gate,), failed_gates=(gate,))
    decision = decide_with_shadow(failed, shadow)
    assert not decision.promote and decision.shadow_outcomes_used == 0
    assert decision.shadow_verdict == FAVOURS_CHALLENGER  # reported, but it cannot promote
    assert "failed its own gates" in decision.reasons[-1]
    assert all("[0 shadow outcomes used]" in r for r in decision.reasons)


def test_shadow_only_adds_evidence():
    worse = ShadowComparison(5, 60, 12, 1.0, 2.0, 2.0, 0.5, 1.0, -1.0, 3.0, 0.01, 4, 0.9, 0.9)
    wf = Decision(True, ("MASE better by 20.0% on 40 common origins and DM favours it",))
    decision = decide_with_shadow(wf, worse)
    assert decision.promote and decision.walk_forward_promote
    assert decision.shadow_verdict == NOT_BETTER and decision.shadow_outcomes_used == 0
    assert not decide_with_shadow(WF_NOT_BETTER, worse).promote
