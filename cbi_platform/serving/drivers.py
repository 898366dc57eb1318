"""Why the live forecast is what it is: the ensemble's drivers through its members."""

from __future__ import annotations

import math

import polars as pl

from cbi_platform.explain.shap_tables import ensemble_shap, top_drivers


def forecast_drivers(
    shap_live: pl.DataFrame, weights_live: pl.DataFrame, horizon: str, k: int = 4
) -> tuple[list[str], str]:
    """Top-k drivers of the live ensemble forecast in plain words, and how they were derived.

    Linear combiners are explained exactly through their members' SHAP values. A meta-learner's
    weights are gain shares, not weights of a sum: its drivers are the share-weighted member
    contributions, labelled approximate. When the ensemble is the random walk (every combiner
    shrunk away), no feature moves it, and the note says so.
    """
    weights = (
        weights_live.rename({"member": "model"})
        if "member" in weights_live.columns
        else weights_live
    )
    weights = weights.filter(pl.col("model").is_in(shap_live["model"].unique().to_list()))
    if weights.height == 0 or weights["weight"].abs().sum() == 0 or shap_live.height == 0:
        return (
            [],
            "the ensemble is the random walk here: no member beat it on past origins, "
            "so no feature moves this forecast",
        )
    note = "exact: ensemble SHAP = member SHAP weighted by the combiner's weights"
    if "weight_kind" in weights.columns and (weights["weight_kind"] != "linear").any():
        weights = weights.with_columns(weight_kind=pl.lit("linear"))
        note = "approximate: meta-learner gain shares used as member weights"
    keep = [
        c for c in ("horizon", "origin", "model", "weight", "weight_kind") if c in weights.columns
    ]
    combined = ensemble_shap(shap_live, weights.select(keep))
    values = shap_live.select("feature", "value").unique("feature")
    if "value" not in combined.columns:
        combined = combined.join(values, on="feature", how="left")
    return top_drivers(combined, k=k, horizon_label=horizon), note


def member_signals(
    shap_live: pl.DataFrame, leaderboard: pl.DataFrame, horizon: str, k: int = 3
) -> list[str]:
    """When the ensemble is the random walk: what the best-scoring feature member would have
    said, clearly labelled as not used, so the buyer sees the signals the ensemble rejected."""
    members = shap_live["model"].unique().to_list() if shap_live.height else []
    ranked = leaderboard.filter(pl.col("model").is_in(members)).sort("rel_mae", nulls_last=True)
    if ranked.height == 0:
        return []
    best = ranked.row(0, named=True)
    rows = shap_live.filter(pl.col("model") == best["model"])
    lines = top_drivers(rows, k=k, horizon_label=horizon)
    label = f"(not used: {best['model']}, relative MAE {best['rel_mae']:.2f} vs the random walk)"
    return [f"{line} {label}" for line in lines]


def driver_numbers(
    shap_rows: pl.DataFrame, k: int = 4, *, model: str = "ensemble", used: bool = True
) -> list[dict]:
    """The same top-k drivers as `top_drivers`, as numbers: feature, its value, and its
    contribution in % of the price (100 * (exp(shap) - 1)), for pages and APIs."""
    if shap_rows.height == 0:
        return []
    has_value = "value" in shap_rows.columns
    rows = (
        shap_rows.filter(pl.col("shap").is_not_null() & pl.col("shap").is_finite())
        .filter(pl.col("shap") != 0.0)
        .sort(pl.col("shap").abs(), "feature", descending=[True, False])
        .head(k)
    )
    return [
        {
            "feature": r["feature"],
            "value": None if not has_value or r["value"] is None else float(r["value"]),
            "contribution_pct": 100.0 * math.expm1(float(r["shap"])),
            "model": model,
            "used": used,
        }
        for r in rows.iter_rows(named=True)
    ]


def explain_forecast(
    shap_live: pl.DataFrame,
    weights_live: pl.DataFrame,
    leaderboard: pl.DataFrame,
    horizon: str,
    k: int = 4,
) -> tuple[list[str], list[dict], str]:
    """Drivers of one forecast in words and in numbers, and how they were derived.

    When the ensemble is the random walk, the best feature member's signals are shown instead,
    labelled as not used (`used` False in the numbers).
    """
    lines, note = forecast_drivers(shap_live, weights_live, horizon, k)
    if lines:
        weights = (
            weights_live.rename({"member": "model"})
            if "member" in weights_live.columns
            else weights_live
        )
        weights = weights.filter(pl.col("model").is_in(shap_live["model"].unique().to_list()))
        keep = [c for c in ("horizon", "origin", "model", "weight") if c in weights.columns]
        combined = ensemble_shap(
            shap_live, weights.select(keep).with_columns(weight_kind=pl.lit("linear"))
        )
        if "value" not in combined.columns or combined["value"].null_count() == combined.height:
            values = shap_live.select("feature", "value").unique("feature")
            combined = combined.drop("value", strict=False).join(values, on="feature", how="left")
        return lines, driver_numbers(combined, k), note
    signals = member_signals(shap_live, leaderboard, horizon)
    numbers: list[dict] = []
    if signals:
        members = shap_live["model"].unique().to_list()
        best = (
            leaderboard.filter(pl.col("model").is_in(members))
            .sort("rel_mae", nulls_last=True)
            .row(0, named=True)["model"]
        )
        numbers = driver_numbers(
            shap_live.filter(pl.col("model") == best), 3, model=best, used=False
        )
    return [note, *signals], numbers, note
