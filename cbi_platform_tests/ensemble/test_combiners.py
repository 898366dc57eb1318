"""Walk-forward combiners: weight goes to skill, noise shrinks to the random walk, no look-ahead."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from cbi_platform.ensemble.combiners import (
    ENSEMBLE,
    INVERSE_ERROR,
    META_LGBM,
    OOF_COLUMNS,
    RANDOM_WALK,
    SIMPLE_AVERAGE,
    EnsembleConfig,
    EnsembleState,
    build_ensemble,
    choose_combiner,
    ensemble_state,
    run_ensemble,
)

SIGMA = 0.03  # std of the h-day log return


def make_oof(
    members: dict[str, str],
    n: int = 480,
    h: int = 5,
    horizon: str = "1w",
    seed: int = 0,
    unknown_tail: int = 0,
) -> pl.DataFrame:
    """Synthetic OOF for one horizon: daily business-day origins, actual log returns ~ N(0, SIGMA).

    members maps a name to "exact" (forecast = the actual log return) or "noise" (independent of
    it). The last `unknown_tail` origins have no actual yet. The random walk is always added.
    The first 40% of origins are burn-in: the ensemble's nested walk-forward (combiner history,
    then shrinkage history) needs that long before it stops falling back.
    """
    rng = np.random.default_rng(seed)
    days = np.busday_offset("2019-01-01", np.arange(n + h), roll="forward").astype("datetime64[D]")
    logp = np.log(45.0) + np.cumsum(rng.normal(0.0, SIGMA / np.sqrt(h), n + h))
    price, y = np.exp(logp[:n]), logp[h : n + h] - logp[:n]
    actual = np.exp(logp[h : n + h])
    if unknown_tail:
        actual[-unknown_tail:] = np.nan
    role = np.where(np.arange(n) < int(0.4 * n), "burn_in", "scored")
    parts = []
    for name, kind in {RANDOM_WALK: "rw", **members}.items():
        logret = {"rw": np.zeros(n), "exact": y.copy()}.get(kind)
        if logret is None:
            logret = rng.normal(0.0, SIGMA, n)
        parts.append(
            pl.DataFrame(
                {
                    "horizon": horizon,
                    "model": name,
                    "origin": days[:n],
                    "target_date": days[h : n + h],
                    "price": price,
                    "actual": pl.Series(actual).fill_nan(None),
                    "forecast": price * np.exp(logret),
                    "forecast_logret": logret,
                    "role": role,
                }
            )
        )
    return pl.concat(parts)


def log_mae(frame: pl.DataFrame) -> float:
    err = (pl.col("actual") / pl.col("price")).log() - pl.col("forecast_logret")
    return frame.filter(pl.col("actual").is_not_null()).select(err.abs().mean()).item()


def scored(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("role") == "scored")


@pytest.fixture(scope="module")
def exact_case() -> pl.DataFrame:
    return make_oof({"exact": "exact", "noise_a": "noise", "noise_b": "noise"})


def test_inverse_error_puts_its_weight_on_the_exact_member(exact_case):
    config = EnsembleConfig(combiners=(INVERSE_ERROR,), include_random_walk_candidate=False)
    result = build_ensemble(exact_case, config=config)
    out = scored(result.forecasts)
    assert (out["combiner"] == INVERSE_ERROR).all()
    assert out["shrink_weight"].min() == 1.0
    weights = result.member_weights.filter(pl.col("origin").is_in(out["origin"].implode()))
    on_exact = weights.filter(pl.col("model") == "exact")["weight"]
    assert on_exact.len() == out.height and on_exact.min() > 0.999
    assert log_mae(out) < 1e-6


def test_meta_learner_puts_its_weight_on_the_exact_member(exact_case):
    config = EnsembleConfig(
        combiners=(META_LGBM,),
        include_random_walk_candidate=False,
        meta_min_history=100,
        meta_refit_every=40,
    )
    result = build_ensemble(exact_case, config=config)
    out = scored(result.forecasts)
    assert (out["combiner"] == META_LGBM).all() and not out["fallback"].any()
    members = result.member_weights.filter(
        pl.col("origin").is_in(out["origin"].implode()) & (pl.col("model") != RANDOM_WALK)
    )
    share = (
        members.group_by("model")
        .agg(pl.col("weight").sum())
        .with_columns(pl.col("weight") / pl.col("weight").sum())
    )
    assert share.filter(pl.col("model") == "exact")["weight"].item() > 0.95
    rw_mae = log_mae(scored(exact_case.filter(pl.col("model") == RANDOM_WALK)))
    noise_mae = log_mae(scored(exact_case.filter(pl.col("model") == "noise_a")))
    assert log_mae(out) < 0.5 * min(rw_mae, noise_mae)
    assert out["shrink_weight"].mean() > 0.5


def test_default_ensemble_finds_the_exact_member(exact_case):
    out = scored(run_ensemble(exact_case))
    rw_mae = log_mae(scored(exact_case.filter(pl.col("model") == RANDOM_WALK)))
    assert log_mae(out) < 0.05 * rw_mae


def test_noise_members_shrink_to_the_random_walk():
    mean_weights = []
    for seed in range(4):
        oof = make_oof({"noise_a": "noise", "noise_b": "noise", "noise_c": "noise"}, seed=seed)
        out = scored(run_ensemble(oof))
        rw_mae = log_mae(scored(oof.filter(pl.col("model") == RANDOM_WALK)))
        assert log_mae(out) <= 1.01 * rw_mae
        assert out["shrink_weight"].mean() < 0.4
        mean_weights.append(out["shrink_weight"].mean())
    assert np.mean(mean_weights) < 0.15


def test_shrinkage_keeps_a_weak_but_real_signal():
    """The counterpart: shrinkage must not simply always pick the random walk."""
    oof = make_oof({"signal": "exact", "noise_a": "noise", "noise_b": "noise"}, seed=2)
    blur = pl.Series(np.random.default_rng(9).normal(0.0, SIGMA, oof.height))
    oof = oof.with_columns(
        pl.when(pl.col("model") == "signal")
        .then(0.3 * pl.col("forecast_logret") + 0.5 * blur)
        .otherwise(pl.col("forecast_logret"))
        .alias("forecast_logret")
    )
    out = scored(run_ensemble(oof))
    rw_mae = log_mae(scored(oof.filter(pl.col("model") == RANDOM_WALK)))
    assert out["shrink_weight"].mean() > 0.3
    assert log_mae(out) < 0.97 * rw_mae


def test_combiner_never_uses_a_row_whose_target_date_is_after_the_origin(exact_case):
    """Poison every actual whose target date is after `cut`: nothing at origins <= cut changes,
    while later origins (which may legitimately see some of them) do."""
    # A meta-learner fit at every origin from 200 on, so a leak in any one fit would show.
    config = EnsembleConfig(meta_min_history=200, meta_refit_every=1, meta_num_rounds=50)
    cut = exact_case["origin"].unique().sort()[300]
    poisoned = exact_case.with_columns(
        pl.when(pl.col("target_date") > cut)
        .then(pl.col("actual") * 1000.0)
        .otherwise(pl.col("actual"))
        .alias("actual")
    )
    clean = build_ensemble(exact_case, config=config)
    dirty = build_ensemble(poisoned, config=config)
    key = ["horizon", "origin"]
    forecast_cols = ["forecast", "forecast_logret", "combiner", "shrink_weight", "fallback"]

    def before(frame: pl.DataFrame, cols) -> pl.DataFrame:
        return frame.filter(pl.col("origin") <= cut).sort(key).select(key + cols)

    assert before(clean.forecasts, forecast_cols).equals(before(dirty.forecasts, forecast_cols))
    weight_cols = ["combiner", "model", "weight"]
    assert (
        before(clean.member_weights, weight_cols)
        .sort(key + ["model"])
        .equals(before(dirty.member_weights, weight_cols).sort(key + ["model"]))
    )
    cand_cols = ["model", "forecast_logret", "shrink_weight"]
    assert (
        before(clean.candidates, cand_cols)
        .sort(key + ["model"])
        .equals(before(dirty.candidates, cand_cols).sort(key + ["model"]))
    )
    after = pl.col("origin") > cut
    assert (
        not clean.candidates.filter(after)
        .sort(key + ["model"])["forecast_logret"]
        .equals(dirty.candidates.filter(after).sort(key + ["model"])["forecast_logret"])
    ), "the poison must matter once it is resolved, or this test cannot fail"


def test_too_little_history_falls_back_to_the_random_walk_and_says_so(exact_case):
    out = run_ensemble(exact_case, config=EnsembleConfig(min_history=60)).sort("origin")
    early = out.head(50)  # fewer than 60 resolved rows at each of these origins
    assert early["fallback"].all()
    assert (early["combiner"] == RANDOM_WALK).all()
    assert (early["shrink_weight"] == 0.0).all()
    assert np.allclose(early["forecast"], early["price"])
    assert not scored(out)["fallback"].any()


def test_overlapping_long_horizon_targets_are_too_few_outcomes_to_leave_the_random_walk():
    """480 daily origins of 12m targets hold < 1 independent outcome: even an exact member must
    not be trusted on that evidence."""
    oof = make_oof({"exact": "exact", "noise_a": "noise"}, h=252, horizon="12m")
    out = run_ensemble(oof)
    assert out["fallback"].all() and (out["combiner"] == RANDOM_WALK).all()
    assert np.allclose(out["forecast"], out["price"])
    relaxed = run_ensemble(oof, config=EnsembleConfig(min_independent=0))
    assert not relaxed["fallback"].all()  # the gate, not a lack of rows, held it back


def test_output_has_the_oof_shape_per_horizon_and_weights_sum_to_one():
    oof = pl.concat(
        [
            make_oof({"exact": "exact", "noise_a": "noise"}, n=300, unknown_tail=5),
            make_oof({"exact": "exact", "noise_a": "noise"}, n=300, h=21, horizon="1m", seed=3),
        ]
    )
    result = build_ensemble(oof, config=EnsembleConfig(combiners=(INVERSE_ERROR,)))
    out = result.forecasts
    assert out.columns == [*OOF_COLUMNS, "combiner", "shrink_weight", "fallback"]
    assert (out["model"] == ENSEMBLE).all()
    assert out.group_by("horizon").len().sort("horizon").rows() == [("1m", 300), ("1w", 300)]
    assert out.select(pl.col("forecast_logret", "forecast").is_not_null().all()).row(0) == (
        True,
        True,
    )
    last = out.filter(pl.col("horizon") == "1w").sort("origin").tail(5)
    assert last["actual"].is_null().all()  # unknown actuals stay unknown, forecasts still made
    sums = result.member_weights.group_by(["horizon", "origin"]).agg(pl.col("weight").sum())
    assert sums.height == out.height
    assert np.allclose(sums["weight"], 1.0)


def _candidates(n: int = 200, h: int = 5) -> pl.DataFrame:
    """Two candidates: 'early' is exact on the first 40% of origins, 'late' afterwards."""
    rng = np.random.default_rng(7)
    days = np.busday_offset("2020-01-01", np.arange(n + h), roll="forward").astype("datetime64[D]")
    y = rng.normal(0.0, SIGMA, n)
    half = np.arange(n) < int(0.4 * n)
    noise = rng.normal(0.0, SIGMA, n)
    forecasts = {
        RANDOM_WALK: np.zeros(n),
        "early": np.where(half, y, noise),
        "late": np.where(half, noise, y),
    }
    return pl.concat(
        pl.DataFrame(
            {
                "horizon": "1w",
                "model": name,
                "origin": days[:n],
                "target_date": days[h : n + h],
                "price": 50.0,
                "actual": 50.0 * np.exp(y),
                "forecast_logret": f,
                "role": np.where(np.arange(n) < 120, "burn_in", "scored"),
            }
        )
        for name, f in forecasts.items()
    )


def test_choose_combiner_judges_each_origin_on_resolved_rows_only():
    cands = _candidates()
    choice = choose_combiner(cands, min_history=30, min_independent=0).sort("origin")
    # Brute force: at origin t, the lowest MAE on rows with target_date <= t.
    errs = cands.with_columns(
        ((pl.col("actual") / pl.col("price")).log() - pl.col("forecast_logret")).abs().alias("e")
    )
    for origin, combiner, fallback in choice.select("origin", "combiner", "choice_fallback").rows():
        past = errs.filter(pl.col("target_date") <= origin)
        per_model = past.group_by("model").agg(pl.col("e").mean(), pl.len())
        if per_model.height == 0 or per_model["len"].min() < 30:
            assert fallback and combiner == RANDOM_WALK
        else:
            assert combiner == per_model.sort("e")["model"][0]
    assert choice["combiner"].tail(1).item() == "late"  # it switched once the evidence arrived
    assert choice["combiner"][100] == "early"  # ... and not before
    # By default it also needs 10 independent outcomes: 50 rows of 5-day targets, not 30.
    strict = choose_combiner(cands, min_history=30).sort("origin")
    assert strict["choice_fallback"].sum() > choice["choice_fallback"].sum()
    assert strict.filter(~pl.col("choice_fallback"))["choice_rows"].min() >= 50


def test_choose_combiner_burn_in_mode_freezes_the_choice_on_scored_origins():
    cands = _candidates()
    choice = choose_combiner(cands, min_history=30, mode="burn_in").sort("origin")
    assert not choice.filter(pl.col("origin") > dt.date(2020, 7, 1))["choice_fallback"].any()
    roles = cands.filter(pl.col("model") == RANDOM_WALK).sort("origin")["role"]
    at_scored = choice.filter(roles == "scored")
    last_burn_in = choice.filter(roles == "burn_in").tail(1)
    assert at_scored["combiner"].unique().to_list() == last_burn_in["combiner"].to_list()
    assert at_scored["origin"].min() > dt.date(2020, 1, 1)


@pytest.mark.parametrize("combiner", [SIMPLE_AVERAGE, INVERSE_ERROR, META_LGBM])
def test_exported_state_reproduces_the_last_origin_forecast(combiner):
    """A registered version keeps the combiner's state at the live origin: combining the same
    member forecasts reproduces build_ensemble exactly, and the state survives JSON."""
    import json

    oof = make_oof({"signal": "exact", "noise_a": "noise"}, n=300, seed=3, unknown_tail=5)
    noise = np.random.default_rng(5).normal(0.0, 1.5 * SIGMA, oof.height)
    weak = pl.col("model") == "signal"
    oof = oof.with_columns(
        pl.when(weak)
        .then(pl.col("forecast_logret") + pl.Series(noise))
        .otherwise(pl.col("forecast_logret"))
        .alias("forecast_logret")
    ).with_columns(forecast=pl.col("price") * pl.col("forecast_logret").exp())
    origins = oof["origin"].unique().sort()
    regimes = ["bull", "bear", "normal"]
    context = pl.DataFrame(
        {
            "origin": origins,
            "regime": [regimes[i % 3] for i in range(origins.len())],
            "vol_forecast": np.linspace(0.02, 0.05, origins.len()),
        }
    )
    config = EnsembleConfig(
        combiners=(combiner,),
        include_random_walk_candidate=False,
        meta_min_history=100,
        meta_refit_every=40,
    )
    result = build_ensemble(oof, context, config)
    last = result.forecasts.sort("origin").tail(1).row(0, named=True)
    state = EnsembleState.from_dict(
        json.loads(json.dumps(ensemble_state(oof, context, config).to_dict()))
    )
    members = dict(
        oof.filter(pl.col("origin") == last["origin"]).select("model", "forecast_logret").rows()
    )
    ctx = context.filter(pl.col("origin") == last["origin"]).row(0, named=True)
    assert state.combiner == combiner == last["combiner"] and state.blended
    assert state.shrink_weight == last["shrink_weight"]
    assert 0.0 < state.shrink_weight <= 1.0
    assert state.combine(members, ctx) == pytest.approx(last["forecast_logret"], abs=1e-12)
    assert state.forecast_logret == pytest.approx(last["forecast_logret"], abs=1e-12)
    weights, kind = state.effective_weights(members, ctx)
    if kind == "linear":
        linear = sum(w * members[m] for m, w in weights.items())
        assert linear == pytest.approx(last["forecast_logret"], abs=1e-12)
        assert sum(weights.values()) == pytest.approx(1.0)
    # Another day's member forecasts: the state combines them (the random walk stays at 0).
    moved = {**members, "signal": members["signal"] + 0.05}
    assert state.combine(moved, ctx) != pytest.approx(state.combine(members, ctx), abs=1e-9)


def test_state_of_an_ensemble_without_evidence_is_the_random_walk(exact_case):
    short = exact_case.filter(pl.col("origin") <= exact_case["origin"].unique().sort()[20])
    state = ensemble_state(short)
    assert not state.blended
    assert state.combine({"random_walk": 0.0, "exact": 0.1, "noise_a": -0.2}) == 0.0
    with pytest.raises(ValueError, match="horizons"):
        ensemble_state(pl.concat([short, short.with_columns(horizon=pl.lit("1m"))]))
