"""Walk-forward GARCH / GJR-GARCH: one fit per origin serves every horizon.

The models are the `kind: volatility` entries of models/specs.yaml: `family` picks the model
(GARCH or GJR-GARCH), params `dist` and `window` how it is fitted. At each origin they are
fitted on daily log returns up to the origin and forecast the h-day volatility of the log
return for all horizons at once (sum of the daily variance path). Each is scored against the
realised h-day volatility after the origin, next to a naive benchmark: the trailing 63-day
sample volatility times sqrt(h).

A neural volatility model (family `lstm_vol`, models/volatility_nn.py) is too slow to refit at
every origin: it refits on a recorded schedule (`refit_schedule`, at most its `max_fits`
times, the first at the first origin with enough history) and forecasts every origin in
between from its last fit, with the closes up to that origin. The output's `fit_origin` says
which fit produced each forecast (the origin itself for the GARCH models and the naive).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence

import numpy as np
import polars as pl

from cbi_platform.evaluation.origins import OriginPlan
from cbi_platform.models.base import ModelSpec
from cbi_platform.models.registry import build_model, load_specs
from cbi_platform.models.volatility import VolatilityModel, fit_volatility, realized_vol
from cbi_platform.models.volatility_nn import LstmVolatilityModel  # Keras only inside its fit
from cbi_platform.settings import HORIZON_KEYS

logger = logging.getLogger(__name__)

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


def refit_schedule(n_origins: int, max_fits: int, first: int | None) -> tuple[int, ...]:
    """Positions (0-based, plan order) of the origins at which a sparsely refitted model refits:
    `first` (the first origin with enough history), then evenly every ceil(rest / max_fits)
    origins, so at most `max_fits` fits and none after the last origin. Empty if `first` is
    None or past the last origin."""
    if isinstance(max_fits, bool) or not isinstance(max_fits, int) or max_fits < 1:
        raise ValueError(f"max_fits must be an integer >= 1, got {max_fits!r}")
    if first is None or first < 0 or first >= n_origins:
        return ()
    step = math.ceil((n_origins - first) / max_fits)
    return tuple(range(first, n_origins, step))


def _neural_forecasts(
    model: LstmVolatilityModel,
    prices: np.ndarray,
    plan: OriginPlan,
    horizons: dict[str, int],
) -> list[tuple[dict[str, float], object]]:
    """Per origin: the model's forecast for every horizon and the origin of the fit behind it."""
    days = list(horizons.values())
    need = model.min_closes(days)
    first = next((k for k, idx in enumerate(plan.index) if idx + 1 >= need), None)
    schedule = set(refit_schedule(plan.n_origins, model.max_fits, first))
    nan = {h: float("nan") for h in horizons}
    out: list[tuple[dict[str, float], object]] = [(nan, None)] * plan.n_origins
    fits, seconds = 0, 0.0
    starts = sorted(schedule)
    for i, k in enumerate(starts):  # each fit serves the origins up to the next one
        origin, idx = plan.dates[k], plan.index[k]
        served = range(k, starts[i + 1] if i + 1 < len(starts) else plan.n_origins)
        try:
            model.fit_horizons(prices[: idx + 1], days)  # closes up to and including the origin
            fits, seconds = fits + 1, seconds + model.fit_seconds
            # one pass for the origins this fit serves; each reads only the closes up to itself
            vols = model.forecast_horizons(prices, [plan.index[j] for j in served])
        except Exception as exc:  # null forecasts until the next scheduled fit
            logger.warning(
                "%s: fit at %s failed: %s: %s", model.spec.name, origin, type(exc).__name__, exc
            )
            continue
        for j, by_h in zip(served, vols, strict=True):
            out[j] = ({h: float(v) for h, v in zip(horizons, by_h, strict=True)}, origin)
    logger.info(
        "volatility %s: %d fits (max_fits %d) at origins %s, %.1fs fitting",
        model.spec.name,
        fits,
        model.max_fits,
        [str(plan.dates[k]) for k in sorted(schedule)],
        seconds,
    )
    return out


def volatility_walk_forward(
    prices: np.ndarray,
    plan: OriginPlan,
    horizons: dict[str, int],
    specs: Sequence[ModelSpec] | None = None,
) -> pl.DataFrame:
    """Rows: origin, role, horizon, model, forecast_vol, realized_vol (null if not yet known),
    fit_origin (the origin of the fit behind the forecast; null when there is none yet).

    One model per volatility spec (default: specs.yaml), each fitted on its own `window` of
    daily returns with its `dist`, plus the naive trailing volatility. GARCH models refit at
    every origin; a neural model on its `refit_schedule`.
    """
    models = volatility_models(specs)
    prices = np.asarray(prices, dtype=float)
    logp = np.log(prices)
    returns = np.diff(logp)  # returns[i-1] is the return into row i
    neural: dict[str, list[tuple[dict[str, float], object]]] = {}
    for model in models:
        if isinstance(model, LstmVolatilityModel):
            started = time.perf_counter()
            neural[model.spec.name] = _neural_forecasts(model, prices, plan, horizons)
            logger.info(
                "volatility %s: %d origins in %.1fs",
                model.spec.name,
                plan.n_origins,
                time.perf_counter() - started,
            )
    rows = []
    for k, (origin, idx, role) in enumerate(zip(plan.dates, plan.index, plan.role, strict=True)):
        forecasts: dict[str, dict[str, float]] = {}
        fit_origin: dict[str, object] = {}
        for model in models:
            name = model.spec.name
            if name in neural:
                forecasts[name], fit_origin[name] = neural[name][k]
                continue
            past = returns[max(0, idx - model.window) : idx]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fitted = fit_volatility(past, model.vol_kind, model.dist)
                    forecasts[name] = _path_vols(fitted, horizons)
            except Exception:  # recorded as a null forecast, never silently replaced
                forecasts[name] = {h: float("nan") for h in horizons}
            fit_origin[name] = origin
        trailing = float(np.std(returns[max(0, idx - NAIVE_WINDOW) : idx], ddof=1))
        forecasts[NAIVE] = {h: trailing * np.sqrt(d) for h, d in horizons.items()}
        fit_origin[NAIVE] = origin
        for h, d in horizons.items():
            after = returns[idx : idx + d]
            realised = realized_vol(after) if len(after) == d else float("nan")
            for name, by_h in forecasts.items():
                rows.append((origin, role, h, name, by_h[h], realised, fit_origin[name]))
    frame = pl.DataFrame(
        rows,
        schema={
            "origin": pl.Date,
            "role": pl.Utf8,
            "horizon": pl.Utf8,
            "model": pl.Utf8,
            "forecast_vol": pl.Float64,
            "realized_vol": pl.Float64,
            "fit_origin": pl.Date,
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
    if isinstance(model, LstmVolatilityModel):  # a fresh fit on the closes up to today
        value = float(model.fit_horizons(prices, [horizon_days]).forecast_horizons(prices)[0])
        return value if np.isfinite(value) else None
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
    order = {h: i for i, h in enumerate(HORIZON_KEYS)}
    return (
        table.join(naive, on="horizon", how="left")
        .with_columns(rel_mae_vs_trailing=pl.col("mae") / pl.col("naive_mae"))
        .drop("naive_mae")
        .with_columns(_o=pl.col("horizon").replace_strict(order, default=99))
        .sort("_o", "model")
        .drop("_o")
    )


def _neural_names() -> set[str]:
    return {s.name for s in load_specs(kinds=["volatility"]) if s.family == "lstm_vol"}


def best_volatility_model(scores: pl.DataFrame, horizon: str) -> str:
    """The GARCH-family model with the lower QLIKE at this horizon (the naive is a benchmark).

    The neural volatility model (specs.yaml family lstm_vol) is scored beside them but not
    chosen: zones would then need a Keras fit at every live refresh."""
    excluded = [NAIVE, *_neural_names()]
    rows = scores.filter((pl.col("horizon") == horizon) & ~pl.col("model").is_in(excluded))
    if rows.height == 0:
        return "gjr_garch"
    return rows.sort("qlike")["model"][0]
