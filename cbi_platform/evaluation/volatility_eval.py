"""Walk-forward GARCH / GJR-GARCH: one fit per origin serves every horizon.

The models are the `kind: volatility` entries of models/specs.yaml: `family` picks the model
(GARCH or GJR-GARCH), params `dist` and `window` how it is fitted. At each origin they are
fitted on daily log returns up to the origin and forecast the h-day volatility of the log
return for all horizons at once (sum of the daily variance path). Each is scored against the
realised h-day volatility after the origin, next to a naive benchmark: the trailing 63-day
sample volatility times sqrt(h).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import polars as pl

from cbi_platform.evaluation.origins import OriginPlan
from cbi_platform.models.base import ModelSpec
from cbi_platform.models.registry import build_model, load_specs
from cbi_platform.models.volatility import VolatilityModel, fit_volatility, realized_vol

NAIVE = "trailing_vol"
NAIVE_WINDOW = 63  # trailing daily returns behind the naive benchmark


def volatility_models(specs: Sequence[ModelSpec] | None = None) -> list[VolatilityModel]:
    """The volatility models to run, built from their specs (default: specs.yaml's volatility
    entries), so the spec list is the one place that says which models run and how."""
    specs = load_specs(kinds=["volatility"]) if specs is None else list(specs)
    models = [build_model(spec) for spec in specs]
    names = [m.spec.name for m in models]
    not_vol = [m.spec.name for m in models if not isinstance(m, VolatilityModel)]
    if not_vol:
        raise ValueError(f"not volatility models: {not_vol}")
    if len(set(names)) != len(names) or NAIVE in names:
        raise ValueError(f"volatility model names must be unique and not {NAIVE!r}: {names}")
    return models


def _path_vols(result, horizons: dict[str, int]) -> dict[str, float]:
    longest = max(horizons.values())
    variance = np.asarray(result.forecast(horizon=longest, reindex=False).variance)[-1]
    cumulative = np.cumsum(variance)
    return {h: float(np.sqrt(cumulative[d - 1]) / 100.0) for h, d in horizons.items()}


def volatility_walk_forward(
    prices: np.ndarray,
    plan: OriginPlan,
    horizons: dict[str, int],
    specs: Sequence[ModelSpec] | None = None,
) -> pl.DataFrame:
    """Rows: origin, role, horizon, model, forecast_vol, realized_vol (null if not yet known).

    One model per volatility spec (default: specs.yaml), each fitted on its own `window` of
    daily returns with its `dist`, plus the naive trailing volatility.
    """
    models = volatility_models(specs)
    logp = np.log(np.asarray(prices, dtype=float))
    returns = np.diff(logp)  # returns[i-1] is the return into row i
    rows = []
    for origin, idx, role in zip(plan.dates, plan.index, plan.role, strict=True):
        forecasts: dict[str, dict[str, float]] = {}
        for model in models:
            past = returns[max(0, idx - model.window) : idx]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fitted = fit_volatility(past, model.vol_kind, model.dist)
                    forecasts[model.spec.name] = _path_vols(fitted, horizons)
            except Exception:  # recorded as a null forecast, never silently replaced
                forecasts[model.spec.name] = {h: float("nan") for h in horizons}
        trailing = float(np.std(returns[max(0, idx - NAIVE_WINDOW) : idx], ddof=1))
        forecasts[NAIVE] = {h: trailing * np.sqrt(d) for h, d in horizons.items()}
        for h, d in horizons.items():
            after = returns[idx : idx + d]
            realised = realized_vol(after) if len(after) == d else float("nan")
            for name, by_h in forecasts.items():
                rows.append((origin, role, h, name, by_h[h], realised))
    frame = pl.DataFrame(
        rows,
        schema={
            "origin": pl.Date,
            "role": pl.Utf8,
            "horizon": pl.Utf8,
            "model": pl.Utf8,
            "forecast_vol": pl.Float64,
            "realized_vol": pl.Float64,
        },
        orient="row",
    )
    return frame.with_columns(pl.col("forecast_vol", "realized_vol").fill_nan(None))


def live_volatility(prices: np.ndarray, model_name: str | None, horizon_days: int) -> float | None:
    """The h-day volatility forecast of `model_name` at the last price, as the walk-forward
    fits it at an origin (its own window of returns up to and including the last day)."""
    returns = np.diff(np.log(np.asarray(prices, dtype=float)))
    if model_name is None or returns.size < 2:
        return None
    if model_name == NAIVE:
        return float(np.std(returns[-NAIVE_WINDOW:], ddof=1) * np.sqrt(horizon_days))
    models = {m.spec.name: m for m in volatility_models()}
    if model_name not in models:
        raise ValueError(f"unknown volatility model {model_name!r}; known: {sorted(models)}")
    model = models[model_name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = fit_volatility(returns[-model.window :], model.vol_kind, model.dist)
    value = _path_vols(fitted, {"h": horizon_days})["h"]
    return float(value) if np.isfinite(value) else None


def score_volatility(frame: pl.DataFrame, role: str = "scored") -> pl.DataFrame:
    """Per horizon and model on origins of `role`: MAE, QLIKE, MAE relative to the naive vol.

    Scored origins report accuracy; development origins choose which model scales zones, so the
    choice never looks at the origins it is judged on.
    """
    scored = frame.filter((pl.col("role") == role) & pl.col("realized_vol").is_not_null())
    scored = scored.drop_nulls("forecast_vol").with_columns(
        err=(pl.col("forecast_vol") - pl.col("realized_vol")).abs(),
        qlike=(pl.col("realized_vol") ** 2 / pl.col("forecast_vol") ** 2)
        - (pl.col("realized_vol") ** 2 / pl.col("forecast_vol") ** 2).log()
        - 1,
    )
    table = scored.group_by("horizon", "model").agg(
        n=pl.len(),
        mae=pl.col("err").mean(),
        qlike=pl.col("qlike").mean(),
        mean_forecast=pl.col("forecast_vol").mean(),
        mean_realized=pl.col("realized_vol").mean(),
    )
    naive = table.filter(pl.col("model") == NAIVE).select("horizon", naive_mae=pl.col("mae"))
    order = {h: i for i, h in enumerate(["1w", "1m", "3m", "6m", "12m"])}
    return (
        table.join(naive, on="horizon", how="left")
        .with_columns(rel_mae_vs_trailing=pl.col("mae") / pl.col("naive_mae"))
        .drop("naive_mae")
        .with_columns(_o=pl.col("horizon").replace_strict(order, default=99))
        .sort("_o", "model")
        .drop("_o")
    )


def best_volatility_model(scores: pl.DataFrame, horizon: str) -> str:
    """The GARCH-family model with the lower QLIKE at this horizon (the naive is a benchmark)."""
    rows = scores.filter((pl.col("horizon") == horizon) & (pl.col("model") != NAIVE))
    if rows.height == 0:
        return "gjr_garch"
    return rows.sort("qlike")["model"][0]
