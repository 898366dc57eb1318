"""Why the live forecast is what it is: the ensemble's drivers through its members."""

from __future__ import annotations

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
