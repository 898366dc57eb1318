"""SHAP explanations of the feature models: contributions, long tables, ensemble drivers, words.

A contribution is to the model's own output, the h-day log return: for every row
`base + sum(shap) == model.predict(row)`, checked on every call. Trees (LightGBM, XGBoost, gbdt
or DART) get TreeSHAP; ridge gets exact linear SHAP. Models without features (random walk,
random walk with drift, ARIMA/ETS/Theta, GARCH) have no drivers: they return None. Every
feature model explains itself through its hooks: `shap_values(X, feature_names, method)` for
many rows and `contributions(X, feature_names)` for the forecast of the last row (p values,
base last); this module, the walk-forward and serving call the hooks, never a per-family switch
(the tree and linear SHAP live with their models: models/trees.py, models/linear.py).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from cbi_platform.features.catalogue import describe_feature, format_feature_value
from cbi_platform.models.attribution import Method, check_method
from cbi_platform.models.base import Model, ModelSpec

SHAP_TABLE_SCHEMA: dict[str, pl.DataType] = {
    "horizon": pl.Utf8(),
    "model": pl.Utf8(),
    "origin": pl.Date(),
    "feature": pl.Utf8(),
    "value": pl.Float64(),  # the feature's value at the origin (null when missing)
    "shap": pl.Float64(),  # contribution to the h-day log return
    "base": pl.Float64(),  # the model's base value (expected output); same on every row
    "rank": pl.Int64(),  # 1 = largest |shap| within (horizon, model, origin)
}


# ---- contributions ------------------------------------------------------------------------


def shap_contributions(
    model: Model, X: np.ndarray, feature_names: Sequence[str], method: Method = "auto"
) -> tuple[np.ndarray, float] | None:
    """SHAP values (n_rows x n_features) and the base value of a fitted feature model, from its
    own `shap_values` hook; None for a model without one (no features to explain).

    Additivity is verified on every call: base + row sum == model.predict (rtol 1e-6 of
    |base| + sum|shap|; 1e-5 for XGBoost's float32). Trees: `method="auto"` runs
    shap.TreeExplainer on `model.booster` and falls back (with a warning) to the library's
    native TreeSHAP if additivity fails; "tree_explainer" and "native" force one path (the
    native one is what TreeExplainer calls underneath, without ~10 ms of Python overhead).
    Ridge: exact linear SHAP whatever the method. Anything else (random walk, statistical,
    volatility models) has no features to explain: None.
    """
    check_method(method)
    hook = getattr(model, "shap_values", None)
    if hook is None:
        return None
    return hook(X, list(feature_names), method=method)


def explain_row(
    model: Model, spec: ModelSpec, x_rows: np.ndarray, feature_names: list[str]
) -> np.ndarray | None:
    """The walk-forward hook: [shap_1 .. shap_p, base] for the forecast of the last row of
    `x_rows` (the origin), from the model's own `contributions()` hook; None for models
    without one (no features: random walk, statistical, volatility).

    Module-level (picklable for spawned workers). Each family explains itself: trees and ridge
    with TreeSHAP / linear SHAP, networks with grouped kernel SHAP over their input window.
    """
    hook = getattr(model, "contributions", None)
    if hook is None:
        return None
    vector = np.asarray(hook(x_rows, list(feature_names)), dtype=np.float64).reshape(-1)
    if vector.size != len(feature_names) + 1:
        raise ValueError(
            f"{spec.name}: contributions() returned {vector.size} values for "
            f"{len(feature_names)} features (+ base)"
        )
    return vector


# ---- long tables --------------------------------------------------------------------------


def _ranks(shap_values: np.ndarray) -> np.ndarray:
    """Per row, 1 for the largest |shap| (ties: feature order)."""
    order = np.argsort(-np.abs(shap_values), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, shap_values.shape[1] + 1)[None, :], axis=1)
    return ranks


def shap_table(
    shap_values: np.ndarray,
    X: np.ndarray,
    feature_names: Sequence[str],
    origins: Sequence[dt.date] | pl.Series,
    horizon: str,
    model: str,
    base: float | np.ndarray | None = None,
) -> pl.DataFrame:
    """Long format (`SHAP_TABLE_SCHEMA`): one row per (origin, feature), ranked within origin."""
    S = np.asarray(shap_values, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    if S.ndim == 1:
        S, X = S.reshape(1, -1), X.reshape(1, -1)
    n, p = S.shape
    if X.shape != (n, p) or len(feature_names) != p:
        raise ValueError(f"shap {S.shape}, X {X.shape}, {len(feature_names)} feature names")
    origin_list = origins.to_list() if isinstance(origins, pl.Series) else list(origins)
    if len(origin_list) != n:
        raise ValueError(f"{len(origin_list)} origins for {n} rows")
    bases = np.broadcast_to(
        np.full(n, np.nan) if base is None else np.asarray(base, dtype=np.float64), (n,)
    )
    if n == 0 or p == 0:
        return pl.DataFrame(schema=SHAP_TABLE_SCHEMA)
    frame = pl.DataFrame(
        {
            "horizon": [horizon] * (n * p),
            "model": [model] * (n * p),
            "origin": pl.Series(origin_list, dtype=pl.Date).gather(np.repeat(np.arange(n), p)),
            "feature": list(feature_names) * n,
            "value": X.reshape(-1),
            "shap": S.reshape(-1),
            "base": np.repeat(bases, p),
            "rank": _ranks(S).reshape(-1),
        },
        schema=SHAP_TABLE_SCHEMA,
    )
    return frame.with_columns(pl.col("value", "base").fill_nan(None))


def explain_model(
    model: Model,
    X: np.ndarray,
    feature_names: Sequence[str],
    origins: Sequence[dt.date] | pl.Series,
    horizon: str,
    method: Method = "auto",
) -> pl.DataFrame | None:
    """shap_contributions + shap_table for a fitted model's rows (None without features)."""
    result = shap_contributions(model, X, feature_names, method=method)
    if result is None:
        return None
    values, base = result
    X = np.asarray(X, dtype=np.float64).reshape(values.shape)
    return shap_table(values, X, feature_names, origins, horizon, model.spec.name, base)


def ensemble_shap(
    member_shap: pl.DataFrame,
    member_weights: Mapping[str, float] | pl.DataFrame,
    ensemble_name: str = "ensemble",
) -> pl.DataFrame:
    """The ensemble explained through its members: sum_m weight_m * shap_m per feature.

    Exact for a linear combination: ensemble = sum_m w_m * forecast_m, and each feature
    member's forecast is its base + sum of its shap, so ensemble = base_e + sum(shap_e) +
    sum over members without features of w_m * forecast_m, where base_e = sum_m w_m * base_m.
    Members without features (random walk, statistical) contribute nothing here: their weighted
    forecast stays outside the drivers (the random walk's is 0). Members in `member_shap` with
    no weight count as weight 0. `member_weights` is {model: weight}, or a frame with columns
    model, weight and optionally horizon / origin (per-origin weights, e.g. the combiners'
    `member_weights`); rows whose weight_kind is not "linear" are refused (a meta-learner's
    gain shares are not weights of a sum).
    """
    needed = {"horizon", "model", "origin", "feature", "shap"}
    missing = needed - set(member_shap.columns)
    if missing:
        raise ValueError(f"member_shap lacks columns {sorted(missing)}")
    if isinstance(member_weights, pl.DataFrame):
        if (
            "weight_kind" in member_weights.columns
            and (member_weights["weight_kind"] != "linear").any()
        ):
            raise ValueError("member_weights holds non-linear (importance) weights")
        keys = [c for c in ("horizon", "origin") if c in member_weights.columns] + ["model"]
        weights = member_weights.select(*keys, pl.col("weight").cast(pl.Float64))
        if weights.select(keys).is_duplicated().any():
            raise ValueError(f"member_weights has duplicate rows for {keys}")
    else:
        keys = ["model"]
        weights = pl.DataFrame(
            {"model": list(member_weights), "weight": [float(w) for w in member_weights.values()]},
            schema={"model": pl.Utf8, "weight": pl.Float64},
        )
    has_value = "value" in member_shap.columns
    has_base = "base" in member_shap.columns
    joined = member_shap.join(weights, on=keys, how="inner").filter(pl.col("weight") != 0)
    group = ["horizon", "origin", "feature"]
    aggs = [(pl.col("weight") * pl.col("shap")).sum().alias("shap")]
    aggs.append(pl.col("value").first() if has_value else pl.lit(None, pl.Float64).alias("value"))
    if has_base:
        aggs.append((pl.col("weight") * pl.col("base")).sum().alias("base"))
    out = joined.group_by(group, maintain_order=True).agg(aggs)
    if not has_base:
        out = out.with_columns(base=pl.lit(None, pl.Float64))
    out = out.with_columns(
        model=pl.lit(ensemble_name),
        rank=pl.col("shap")
        .abs()
        .rank(method="ordinal", descending=True)
        .over("horizon", "origin")
        .cast(pl.Int64),
    )
    return out.select([pl.col(c).cast(t) for c, t in SHAP_TABLE_SCHEMA.items()]).sort(
        "horizon", "origin", "rank"
    )


# ---- coverage -----------------------------------------------------------------------------


def shap_coverage(shap_values: np.ndarray, k: int) -> float:
    """Share of the prediction's variance the top-k features explain, taken at face value.

    With S the (rows x features) SHAP matrix, total_i = sum_j S_ij = prediction_i - base, and
    T the k features with the largest mean |S_j| over rows (ties: feature order):

        coverage(k) = 1 - Var_i(total_i - sum_{j in T} S_ij) / Var_i(total_i)

    1.0 when k >= n_features; 0.0 at k = 0. It usually rises with k, but it need not: features
    whose contributions cancel can make a top-k story miss more than it explains (even < 0),
    which is worth seeing. NaN when the predictions do not vary (nothing to explain).
    """
    S = np.asarray(shap_values, dtype=np.float64)
    if S.ndim != 2:
        raise ValueError(f"shap_values must be (rows, features), got shape {S.shape}")
    if k < 0:
        raise ValueError("k must be >= 0")
    total = S.sum(axis=1)
    total_var = float(np.var(total))
    if S.shape[0] < 2 or total_var <= 0.0:
        return float("nan")
    top = np.argsort(-np.abs(S).mean(axis=0), kind="stable")[: min(k, S.shape[1])]
    residual = total - S[:, top].sum(axis=1)
    return 1.0 - float(np.var(residual)) / total_var


def coverage_curve(shap_values: np.ndarray, ks: Sequence[int] = (1, 2, 4, 8)) -> dict[int, float]:
    """{k: shap_coverage(shap_values, k)} for each k (k beyond n_features gives 1.0)."""
    return {int(k): shap_coverage(shap_values, int(k)) for k in ks}


# ---- plain words --------------------------------------------------------------------------


def _format_percent(pct: float) -> str:
    size = abs(pct)
    if size >= 0.1:
        return f"{size:.1f}%"
    if size >= 0.005:
        return f"{size:.2f}%"
    return "less than 0.01%"


def top_drivers(
    shap_rows: pl.DataFrame,
    k: int = 4,
    horizon_label: str | None = None,
    feature_descriptions: Mapping[str, str] | None = None,
) -> list[str]:
    """The k largest drivers of one forecast in plain words, largest |shap| first.

    `shap_rows` holds one forecast's rows (one horizon, model, origin) with feature, value and
    shap (a log-return contribution, written as 100 * (exp(shap) - 1) percent). Features with a
    zero contribution are not drivers, so fewer than k lines may come back.
    """
    keys = [c for c in ("horizon", "model", "origin") if c in shap_rows.columns]
    if keys and shap_rows.select(keys).unique().height > 1:
        raise ValueError(f"shap_rows holds several forecasts; filter to one {tuple(keys)}")
    if horizon_label is None and "horizon" in shap_rows.columns and shap_rows.height:
        horizon_label = shap_rows["horizon"][0]
    target = f"the {horizon_label} forecast" if horizon_label else "the forecast"
    has_value = "value" in shap_rows.columns
    drivers = (
        shap_rows.filter(pl.col("shap").is_not_null() & pl.col("shap").is_finite())
        .filter(pl.col("shap") != 0.0)
        .sort(pl.col("shap").abs(), "feature", descending=[True, False])
        .head(k)
    )
    lines = []
    for row in drivers.iter_rows(named=True):
        phrase, unit = describe_feature(row["feature"], feature_descriptions)
        if has_value:
            phrase = f"{phrase} ({format_feature_value(row['value'], unit)})"
        direction = "up" if row["shap"] > 0 else "down"
        size = _format_percent(100.0 * math.expm1(row["shap"]))
        lines.append(f"{phrase} pushes {target} {direction} by {size}")
    return lines


def coverage_table(shap_long: pl.DataFrame, ks: Sequence[int] = (1, 2, 4, 8)) -> pl.DataFrame:
    """SHAP coverage per (horizon, model) from a long SHAP table: the share of the variance of
    the model's out-of-fold predictions explained by its top-k features."""
    rows = []
    for (horizon, model), part in shap_long.group_by(["horizon", "model"], maintain_order=True):
        wide = part.pivot(on="feature", index="origin", values="shap").drop("origin")
        values = wide.fill_null(0.0).to_numpy()
        if values.shape[0] < 3:
            continue
        curve = coverage_curve(values, ks)
        rows.append(
            {
                "horizon": horizon,
                "model": model,
                "origins": values.shape[0],
                **{f"top{k}": v for k, v in curve.items()},
            }
        )
    return pl.DataFrame(rows)
