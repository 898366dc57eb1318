"""SHAP explanations: additive for every feature model, planted drivers found, OOF explanations."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import cbi_platform.models.trees as trees
from cbi_platform.evaluation.origins import walk_forward_origins
from cbi_platform.evaluation.walk_forward import (
    run_walk_forward,
    run_walk_forward_with_explanations,
)
from cbi_platform.explain.shap_tables import (
    SHAP_TABLE_SCHEMA,
    coverage_curve,
    ensemble_shap,
    explain_model,
    explain_row,
    shap_contributions,
    shap_coverage,
    top_drivers,
)
from cbi_platform.features.catalogue import format_feature_value
from cbi_platform.models.attribution import ShapAdditivityError
from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.registry import build_model

FEATURES = [f"f_x{i}" for i in range(6)]
RTOL = 1e-6  # of |base| + sum |shap|: the size of the terms the identity sums

LGBM_GBDT = ModelSpec(
    "lgbm_gbdt",
    "lightgbm",
    "sanity",
    {
        "boosting": "gbdt",
        "n_estimators": 60,
        "learning_rate": 0.1,
        "num_leaves": 7,
        "min_data_in_leaf": 20,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "feature_fraction": 0.8,
    },
)
LGBM_DART = ModelSpec(
    "lgbm_dart",
    "lightgbm",
    "tree",
    {
        "boosting": "dart",
        "n_estimators": 60,
        "learning_rate": 0.1,
        "num_leaves": 7,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.8,
        "drop_rate": 0.2,
        "skip_drop": 0.3,
        "max_drop": 50,
    },
)
XGB_DART = ModelSpec(
    "xgb_dart",
    "xgboost",
    "tree",
    {
        "booster": "dart",
        "n_estimators": 40,
        "learning_rate": 0.1,
        "max_depth": 3,
        "subsample": 0.8,
        "rate_drop": 0.2,
        "skip_drop": 0.3,
    },
)
RIDGE = ModelSpec("ridge", "ridge", "sanity", {"alpha": 10.0})
RIDGE_WEIGHTED = ModelSpec("ridge_w", "ridge", "sanity", {"alpha": 10.0}, weighted=True)
RANDOM_WALK = ModelSpec("random_walk", "random_walk", "benchmark")


def planted(n: int = 600, seed: int = 0, noise: float = 0.002, missing: float = 0.03):
    """X with a few NaNs (never in f_x3) and y = 0.02 * x3 + noise: x3 is the one driver."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    holes = rng.random(X.shape) < missing
    holes[:, 3] = False
    X[holes] = np.nan
    y = 0.02 * X[:, 3] + noise * rng.normal(size=n)
    return X, y


def fitted(spec: ModelSpec, X: np.ndarray, y: np.ndarray):
    weights = np.linspace(0.5, 2.0, len(y)) if spec.weighted else None
    return build_model(spec).fit(FitData(X, y, np.ones(1), 21, list(FEATURES), weights))


def assert_additive(values, base, prediction, rtol=RTOL):
    scale = np.abs(base) + np.abs(values).sum(axis=1)
    gap = np.abs(base + values.sum(axis=1) - prediction)
    assert np.all(gap <= rtol * scale), f"max gap {gap.max():.3g}, scale {scale.min():.3g}"


# ---- contributions ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", "tree_explainer", "native"])
@pytest.mark.parametrize("spec", [LGBM_GBDT, LGBM_DART, XGB_DART, RIDGE, RIDGE_WEIGHTED])
def test_base_plus_shap_is_the_model_prediction(spec, method):
    X, y = planted()
    model = fitted(spec, X, y)
    values, base = shap_contributions(model, X[:200], FEATURES, method=method)
    assert values.shape == (200, len(FEATURES))
    assert_additive(values, base, model.predict(X[:200]))
    assert np.ptp(values.sum(axis=1)) > 0.01  # the explanations are not trivially zero


def test_dart_models_really_drop_trees():
    """The DART additivity tests mean something only if dropout rescaled some trees."""
    X, y = planted()
    booster = fitted(XGB_DART, X, y).booster
    weights = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["weight_drop"]
    assert min(weights) < 0.99
    lgbm = fitted(LGBM_DART, X, y)
    assert lgbm.booster.params["boosting"] == "dart"


def test_tree_explainer_and_native_treeshap_agree():
    X, y = planted()
    for spec in (LGBM_DART, XGB_DART):
        model = fitted(spec, X, y)
        via_shap, base_shap = shap_contributions(model, X[:50], FEATURES, "tree_explainer")
        native, base_native = shap_contributions(model, X[:50], FEATURES, "native")
        np.testing.assert_allclose(via_shap, native, rtol=0, atol=1e-12)
        assert base_shap == pytest.approx(base_native, abs=1e-12)


def test_auto_falls_back_to_native_when_the_explainer_is_not_additive(monkeypatch):
    X, y = planted()
    model = fitted(XGB_DART, X, y)

    def off_by_a_tree(model, X):  # what shap's own DART parse would give: a wrong base
        values, base = trees.native_tree_contributions(model, X)
        return values, base + 0.01

    monkeypatch.setattr(trees, "tree_explainer_contributions", off_by_a_tree)
    with pytest.warns(UserWarning, match="native TreeSHAP"):
        values, base = shap_contributions(model, X[:20], FEATURES, method="auto")
    assert_additive(values, base, model.predict(X[:20]))
    with pytest.raises(ShapAdditivityError):
        shap_contributions(model, X[:20], FEATURES, method="tree_explainer")


def test_ridge_shap_is_coef_times_centred_standardised_features():
    X, y = planted()
    model = fitted(RIDGE, X, y)
    values, base = shap_contributions(model, X[:30], FEATURES)
    z = model.scaler.transform(model.imputer.transform(X[:30]))
    np.testing.assert_allclose(values, model.ridge.coef_ * z, atol=1e-15)
    assert base == pytest.approx(float(model.ridge.intercept_))
    training = shap_contributions(model, X, FEATURES)[0]
    np.testing.assert_allclose(training.mean(axis=0), 0.0, atol=1e-12)  # centred on training


def test_models_without_features_have_no_drivers():
    X, y = planted(50)
    for name in ("random_walk", "random_walk_drift"):
        spec = ModelSpec(name, name, "benchmark", {"window": 30} if "drift" in name else {})
        model = build_model(spec).fit(FitData(X, y, np.linspace(40, 41, 60), 5, list(FEATURES)))
        assert shap_contributions(model, X[:3], FEATURES) is None
        assert explain_row(model, spec, X[:1], list(FEATURES)) is None


def test_feature_names_must_match_the_fit():
    X, y = planted()
    model = fitted(LGBM_GBDT, X, y)
    with pytest.raises(ValueError, match="feature names"):
        shap_contributions(model, X[:2], FEATURES[::-1])
    with pytest.raises(ValueError, match="shape"):
        shap_contributions(model, X[:2, :4], FEATURES)


# ---- the planted driver in tables and words ----------------------------------------------


@pytest.mark.parametrize("spec", [LGBM_GBDT, RIDGE])
def test_planted_driver_tops_the_table_and_the_words(spec):
    X, y = planted()
    model = fitted(spec, X, y)
    rows = np.zeros((2, len(FEATURES)))
    rows[:, 3] = [2.0, -2.0]
    origins = [dt.date(2024, 3, 1), dt.date(2024, 3, 4)]
    table = explain_model(model, rows, FEATURES, origins, "1m")
    assert table.schema == pl.Schema(SHAP_TABLE_SCHEMA)
    assert table.height == 2 * len(FEATURES)
    top = table.filter(pl.col("rank") == 1)
    assert top["feature"].to_list() == ["f_x3", "f_x3"]
    assert top["shap"][0] > 0 > top["shap"][1]
    assert (table["base"] == table["base"][0]).all()
    up, down = (table.filter(pl.col("origin") == o) for o in origins)

    words = top_drivers(up, feature_descriptions={"f_x3": "planted driver x3"})
    assert 1 <= len(words) <= 4
    s = top["shap"][0]
    assert (
        words[0] == f"planted driver x3 (2) pushes the 1m forecast up by {100 * math.expm1(s):.1f}%"
    )
    assert "down" in top_drivers(down, k=1)[0] and top_drivers(down, k=1)[0].startswith("x3 ")
    assert len(top_drivers(up, k=2, horizon_label="3m")) <= 2
    assert "the 3m forecast" in top_drivers(up, k=1, horizon_label="3m")[0]
    with pytest.raises(ValueError, match="several forecasts"):
        top_drivers(table)


def test_words_for_the_platform_features():
    rows = pl.DataFrame(
        {
            "horizon": ["1m"] * 3,
            "feature": ["f_zl_mom21", "f_cot_zl_net", "f_zl_vol21"],
            "value": [0.0315, -12.0, 0.25],
            "shap": [0.008, -0.004, 0.0],
        }
    )
    assert top_drivers(rows) == [
        "ZL price vs its 21-day average (+3.2%) pushes the 1m forecast up by 0.8%",
        "speculators' net position in ZL (COT) (-12.0% of open interest) pushes the 1m "
        "forecast down by 0.4%",
    ]  # a zero contribution is no driver
    assert format_feature_value(None, "pct_change") == "missing"
    assert format_feature_value(3.0, "weekday") == "Wednesday"


# ---- ensemble and coverage ----------------------------------------------------------------


def test_ensemble_shap_is_the_weighted_sum_of_member_contributions():
    X, y = planted()
    origins = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(25)]
    a, b = fitted(LGBM_GBDT, X, y), fitted(RIDGE, X, y)
    member = pl.concat(
        [
            explain_model(a, X[:25], FEATURES, origins, "1m").with_columns(model=pl.lit("a")),
            explain_model(b, X[:25], FEATURES, origins, "1m").with_columns(model=pl.lit("b")),
        ]
    )
    ens = ensemble_shap(member, {"a": 0.75, "b": 0.25, "random_walk": 0.0})
    assert ens.schema == pl.Schema(SHAP_TABLE_SCHEMA)
    assert ens.height == 25 * len(FEATURES) and (ens["model"] == "ensemble").all()
    wide = member.pivot(on="model", index=["origin", "feature"], values="shap")
    check = ens.join(wide, on=["origin", "feature"])
    np.testing.assert_allclose(check["shap"], 0.75 * check["a"] + 0.25 * check["b"], atol=1e-15)
    # the ensemble's base + shap is the weighted sum of the members' predictions
    totals = (
        ens.group_by("origin").agg(pl.col("base").first() + pl.col("shap").sum()).sort("origin")
    )
    expected = 0.75 * a.predict(X[:25]) + 0.25 * b.predict(X[:25])
    np.testing.assert_allclose(totals["base"], expected, rtol=1e-9)
    ranks = ens.filter(pl.col("origin") == origins[0]).sort("rank")
    assert ranks["shap"].abs().is_sorted(descending=True)

    per_origin = pl.DataFrame(
        {"origin": origins, "model": ["a"] * 25, "weight": [1.0] * 25, "weight_kind": "linear"}
    )
    only_a = ensemble_shap(member, per_origin)
    a_rows = member.filter(pl.col("model") == "a").sort("origin", "rank")
    np.testing.assert_allclose(only_a.sort("origin", "rank")["shap"], a_rows["shap"])
    with pytest.raises(ValueError, match="non-linear"):
        ensemble_shap(member, per_origin.with_columns(weight_kind=pl.lit("importance")))


def test_coverage_is_one_with_every_feature_and_grows_with_k():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 6))
    y = X @ np.array([0.03, 0.02, 0.01, 0.005, 0.0, 0.0]) + 0.001 * rng.normal(size=500)
    model = build_model(RIDGE).fit(FitData(X, y, np.ones(1), 21, list(FEATURES)))
    values, _ = shap_contributions(model, X, FEATURES)
    curve = coverage_curve(values, ks=(0, 1, 2, 3, 4, 6))
    assert curve[0] == 0.0
    assert curve[6] == pytest.approx(1.0, abs=1e-12)
    assert shap_coverage(values, 99) == pytest.approx(1.0, abs=1e-12)
    steps = np.diff([curve[k] for k in (0, 1, 2, 3, 4, 6)])
    assert np.all(steps > 0)
    assert curve[1] == pytest.approx(0.03**2 / (0.03**2 + 0.02**2 + 0.01**2 + 0.005**2), abs=0.05)


def test_coverage_follows_its_definition_even_when_contributions_cancel():
    a = np.array([1.0, -1.0, 2.0, -2.0])
    values = np.column_stack([a, -0.9 * a])  # total = 0.1 a; the top feature alone overshoots
    expected = 1 - np.var(-0.9 * a) / np.var(0.1 * a)
    assert shap_coverage(values, 1) == pytest.approx(expected)
    assert shap_coverage(values, 1) < 0 < shap_coverage(values, 2) == pytest.approx(1.0)
    assert math.isnan(shap_coverage(np.zeros((5, 2)), 1))


# ---- out-of-fold explanations inside the walk-forward ------------------------------------


def oof_frame(n_rows: int = 700, horizon: str = "1m", seed: int = 0) -> pl.DataFrame:
    """A contract frame whose target is 0.02 * f_x3 (scaled to the horizon) plus noise."""
    rng = np.random.default_rng(seed)
    hd = {"1w": 5, "1m": 21}[horizon]
    X = rng.normal(size=(n_rows, len(FEATURES)))
    X[rng.random(X.shape) < 0.02] = np.nan
    days = np.busday_offset(np.datetime64("2015-01-05"), np.arange(n_rows), roll="forward")
    price = 40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_rows)))
    logret = 0.02 * np.nan_to_num(X[:, 3]) + 0.01 * rng.normal(size=n_rows)
    target_price = price * np.exp(logret)
    known = np.arange(n_rows) + hd < n_rows
    dates = days.astype("datetime64[D]").astype(dt.date).tolist()
    return pl.DataFrame(
        {
            "date": dates,
            "horizon": horizon,
            "horizon_days": hd,
            "price": price,
            "target_date": [dates[i + hd] if k else None for i, k in enumerate(known)],
            "target_price": np.where(known, target_price, np.nan),
            "target_logret": np.where(known, logret, np.nan),
            **{name: X[:, j] for j, name in enumerate(FEATURES)},
        }
    ).with_columns(pl.col("target_price", "target_logret", *FEATURES).fill_nan(None))


def oof_plan(frame: pl.DataFrame):
    return walk_forward_origins(
        frame["date"], 21, n_origins=12, span=240, end_offset=5, n_burn_in=6
    )


OOF_SPECS = [
    RANDOM_WALK,
    ModelSpec("lgbm_gbdt", "lightgbm", "sanity", LGBM_GBDT.params, refit_every=3),
    ModelSpec("xgb_dart", "xgboost", "tree", XGB_DART.params, refit_every=3),
    ModelSpec("ridge", "ridge", "sanity", {"alpha": 10.0}, refit_every=2),
]


@pytest.fixture(scope="module")
def oof_run():
    frame = oof_frame()
    plan = oof_plan(frame)
    lines: list[str] = []
    oof, shap_long = run_walk_forward_with_explanations(
        frame, OOF_SPECS, build_model, plan, progress=lines.append
    )
    return frame, plan, oof, shap_long, lines


def test_oof_frame_is_unchanged_by_explanations(oof_run):
    frame, plan, oof, _, lines = oof_run
    plain = run_walk_forward(frame, OOF_SPECS, build_model, plan)
    assert isinstance(plain, pl.DataFrame)
    assert_frame_equal(plain, oof)
    assert all(", explain " in line for line in lines)


def test_oof_explanations_one_row_set_per_model_and_origin(oof_run):
    frame, plan, oof, shap_long, _ = oof_run
    assert shap_long.schema == pl.Schema(SHAP_TABLE_SCHEMA)
    assert "random_walk" not in shap_long["model"].unique().to_list()
    for model in ("lgbm_gbdt", "xgb_dart", "ridge"):
        rows = shap_long.filter(pl.col("model") == model)
        per_origin = rows.group_by("origin").agg(pl.len(), pl.col("feature").n_unique())
        assert (per_origin["len"] == len(FEATURES)).all()
        assert (per_origin["feature"] == len(FEATURES)).all()
        assert sorted(per_origin["origin"].to_list()) == list(plan.dates)
    # the value column is the origin's feature row
    at_origins = frame.filter(pl.col("date").is_in(list(plan.dates))).unpivot(
        index="date", on=FEATURES, variable_name="feature", value_name="frame_value"
    )
    check = shap_long.join(at_origins, left_on=["origin", "feature"], right_on=["date", "feature"])
    assert check.height == shap_long.height
    assert check.select((pl.col("value").eq_missing(pl.col("frame_value"))).all()).item()


def test_oof_shap_adds_up_to_the_forecast_at_every_origin(oof_run):
    _, _, oof, shap_long, _ = oof_run
    totals = shap_long.group_by("model", "origin").agg(
        base=pl.col("base").first(),
        shap_sum=pl.col("shap").sum(),
        scale=pl.col("base").first().abs() + pl.col("shap").abs().sum(),
    )
    check = totals.join(oof.select("model", "origin", "forecast_logret"), on=["model", "origin"])
    assert check.height == totals.height == 3 * oof["origin"].n_unique()
    gap = (check["base"] + check["shap_sum"] - check["forecast_logret"]).abs()
    assert (gap <= RTOL * check["scale"]).all()
    # the planted driver leads the explanations of the trees and the ridge on most origins
    leaders = shap_long.filter(pl.col("rank") == 1)
    assert (leaders["feature"] == "f_x3").mean() > 0.8


def test_two_workers_give_the_same_explanations(oof_run):
    frame, plan, oof, shap_long, _ = oof_run
    oof2, shap2 = run_walk_forward_with_explanations(
        frame, OOF_SPECS, build_model, plan, n_workers=2
    )
    assert_frame_equal(oof, oof2)
    assert_frame_equal(shap_long, shap2)


def bare_contributions(model, spec, x_row, feature_names):
    """A custom explainer without the base value (module level: picklable)."""
    result = explain_row(model, spec, x_row, feature_names)
    return None if result is None else result[:-1]


def wrong_length(model, spec, x_row, feature_names):
    return np.zeros(2)


def test_custom_explainers_through_run_walk_forward():
    frame = oof_frame(400)
    plan = walk_forward_origins(frame["date"], 21, n_origins=4, span=60, n_burn_in=0)
    oof, shap_long = run_walk_forward(
        frame, [OOF_SPECS[3]], build_model, plan, explain=bare_contributions
    )
    assert shap_long.height == 4 * len(FEATURES)
    assert shap_long["base"].null_count() == shap_long.height
    with pytest.raises(ValueError, match="explain returned 2 values"):
        run_walk_forward(frame, [OOF_SPECS[3]], build_model, plan, explain=wrong_length)


def test_coverage_table_reads_the_long_shap_table():
    import datetime as dt

    import numpy as np
    import polars as pl

    from cbi_platform.explain.shap_tables import coverage_table

    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        origin = dt.date(2020, 1, 1) + dt.timedelta(days=i)
        big, small = rng.normal(0, 1.0), rng.normal(0, 0.01)
        rows += [("1m", "m", origin, "f_big", big), ("1m", "m", origin, "f_small", small)]
    long = pl.DataFrame(
        rows, schema=["horizon", "model", "origin", "feature", "shap"], orient="row"
    )
    table = coverage_table(long, ks=(1, 2))
    assert table["top1"][0] > 0.99 and table["top2"][0] == 1.0
