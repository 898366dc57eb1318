"""Accuracy of out-of-fold forecasts against the random walk, on scored origins only.

Errors are in price units (the level the user sees). Burn-in origins and origins whose target
is still unknown never enter a reported number. The random walk's forecast is the price at
the origin; every relative number (rel_mae, skill, Diebold-Mariano) pairs a model with the
random walk on exactly the origins the model forecast.

Diebold-Mariano (loss = absolute error; d_t = |e_model,t| - |e_rw,t|; negative stat = the
model beats the random walk): long-run variance by Newey-West (Bartlett weights) with
L = dm_lags(h, spacing) = max(0, ceil(h / spacing) - 1) lags, because forecasts from origins
`spacing` trading days apart have overlapping h-day targets for exactly that many neighbours
(0 lags for 1w/1m at the protocol's 25.6-day spacing, 2 for 3m, 4 for 6m, 9 for 12m). The
Harvey-Leybourne-Newbold factor sqrt((n + 1 - 2k + k(k - 1)/n) / n) with k = L + 1 (the horizon
in origin steps) scales the statistic, and the two-sided p-value uses a t distribution with
n - 1 degrees of freedom. When the two loss series are identical (d = 0 at every origin,
e.g. the random walk against itself) the test is undefined: stat and p-value are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

# The interval and quantile scores are reported here too; they live with the zone methods.
from cbi_platform.ensemble.scoring_rules import interval_score as interval_score
from cbi_platform.ensemble.scoring_rules import pinball_loss as pinball_loss
from cbi_platform.evaluation.origins import SCORED

RANDOM_WALK = "random_walk"

_METRIC_SCHEMA: dict[str, pl.DataType] = {
    "horizon": pl.Utf8(),
    "horizon_days": pl.Int64(),
    "model": pl.Utf8(),
    "n": pl.Int64(),
    "mape": pl.Float64(),
    "smape": pl.Float64(),
    "rmse": pl.Float64(),
    "mae": pl.Float64(),
    "mase": pl.Float64(),
    "directional_accuracy": pl.Float64(),
    "n_directional": pl.Int64(),
    "rel_mae": pl.Float64(),
    "skill": pl.Float64(),
    "dm_stat": pl.Float64(),
    "dm_pvalue": pl.Float64(),
    "dm_lags": pl.Int64(),
    "effective_n": pl.Int64(),
    "n_fallback": pl.Int64(),  # origins where the model had fallen back to the random walk
}


# ---- point metrics ----------------------------------------------------------------------


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def mape(actual, forecast) -> float:
    """Mean absolute percentage error, in percent."""
    a, f = _arr(actual), _arr(forecast)
    return float(np.mean(np.abs(f - a) / np.abs(a)) * 100.0) if a.size else math.nan


def smape(actual, forecast) -> float:
    """Symmetric MAPE in percent (0-200): mean of 2|f - a| / (|a| + |f|); 0/0 counts as 0."""
    a, f = _arr(actual), _arr(forecast)
    if not a.size:
        return math.nan
    denom = np.abs(a) + np.abs(f)
    ratio = np.divide(2.0 * np.abs(f - a), denom, out=np.zeros_like(a), where=denom > 0)
    return float(np.mean(ratio) * 100.0)


def rmse(actual, forecast) -> float:
    a, f = _arr(actual), _arr(forecast)
    return float(np.sqrt(np.mean((f - a) ** 2))) if a.size else math.nan


def mae(actual, forecast) -> float:
    a, f = _arr(actual), _arr(forecast)
    return float(np.mean(np.abs(f - a))) if a.size else math.nan


def mase(actual, forecast, naive_scale) -> float:
    """Mean of |f - a| / naive_scale, each origin scaled by its own in-sample h-step naive MAE."""
    a, f, s = _arr(actual), _arr(forecast), _arr(naive_scale)
    return float(np.mean(np.abs(f - a) / s)) if a.size else math.nan


def directional_accuracy(price, actual, forecast) -> tuple[float, int]:
    """Share of origins where sign(f - price) == sign(a - price), and how many were judged.

    Origins with a flat forecast or a flat outcome have no direction and are left out; with
    none left (the random walk is always flat) the accuracy is NaN, not 0.5.
    """
    p, a, f = _arr(price), _arr(actual), _arr(forecast)
    f_dir, a_dir = np.sign(f - p), np.sign(a - p)
    judged = (f_dir != 0) & (a_dir != 0)
    n = int(judged.sum())
    return (float(np.mean(f_dir[judged] == a_dir[judged])) if n else math.nan), n


def interval_coverage(actual, lo, hi) -> float:
    """Share of outcomes inside the closed interval [lo, hi]."""
    a, low, high = _arr(actual), _arr(lo), _arr(hi)
    return float(np.mean((low <= a) & (a <= high))) if a.size else math.nan


def interval_width_pct(lo, hi, price) -> float:
    """Mean interval width as a percentage of the price at the origin."""
    low, high, p = _arr(lo), _arr(hi), _arr(price)
    return float(np.mean((high - low) / p) * 100.0) if p.size else math.nan


# ---- overlap, Diebold-Mariano -----------------------------------------------------------


def dm_lags(horizon_days: int, spacing_days: float) -> int:
    """Newey-West lags: neighbours whose h-day targets overlap, max(0, ceil(h/spacing) - 1)."""
    if spacing_days <= 0:
        raise ValueError("spacing_days must be > 0")
    return max(0, math.ceil(horizon_days / spacing_days - 1e-9) - 1)


def effective_sample_size(n_origins: int, horizon_days: int, spacing_days: float) -> int:
    """Non-overlapping target windows among n origins: ceil(n / m), m = max(1, ceil(h/spacing)).

    Taking every m-th origin gives targets that do not overlap, so that many errors are
    (roughly) independent; with spacing >= h every origin counts.
    """
    if n_origins <= 0:
        return 0
    m = dm_lags(horizon_days, spacing_days) + 1
    return (n_origins - 1) // m + 1


@dataclass(frozen=True)
class DMResult:
    stat: float  # HLN-corrected; negative: the model's loss is lower than the benchmark's
    pvalue: float  # two-sided, t with n - 1 df
    lags: int
    n: int


def diebold_mariano(loss_model, loss_benchmark, lags: int) -> DMResult:
    """Diebold-Mariano test with a Newey-West variance and the HLN small-sample correction."""
    d = _arr(loss_model) - _arr(loss_benchmark)
    n = d.size
    if n < 2 or np.all(d == 0):
        return DMResult(math.nan, math.nan, lags, n)
    lags_used = min(lags, n - 1)
    mean = float(d.mean())
    centred = d - mean
    lrv = float(centred @ centred) / n
    for k in range(1, lags_used + 1):
        lrv += 2.0 * (1.0 - k / (lags_used + 1)) * float(centred[k:] @ centred[:-k]) / n
    steps = lags_used + 1
    correction = (n + 1 - 2 * steps + steps * (steps - 1) / n) / n
    if correction <= 0:
        return DMResult(math.nan, math.nan, lags, n)
    if lrv <= 0:  # constant, non-zero loss differential: infinitely significant
        return DMResult(math.copysign(math.inf, mean), 0.0, lags, n)
    stat = mean / math.sqrt(lrv / n) * math.sqrt(correction)
    return DMResult(stat, float(2.0 * stats.t.sf(abs(stat), df=n - 1)), lags, n)


# ---- tables -----------------------------------------------------------------------------


def scored_rows(oof: pl.DataFrame, roles: Sequence[str] = (SCORED,)) -> pl.DataFrame:
    """Rows that count: origins of the window (`roles`: the scored one unless the development
    window is asked for) with a known outcome and a forecast."""
    return oof.filter(
        pl.col("role").is_in(list(roles))
        & pl.col("actual").is_not_null()
        & pl.col("forecast").is_not_null()
        & pl.col("forecast").is_finite()
    )


def with_random_walk(oof: pl.DataFrame, name: str = RANDOM_WALK) -> pl.DataFrame:
    """Add the random walk (forecast = price at the origin) if no model of that name exists."""
    if name in oof["model"].unique().to_list():
        return oof
    origins = oof.unique(subset=["horizon", "origin"], keep="first", maintain_order=True)
    rw = origins.with_columns(
        model=pl.lit(name),
        forecast=pl.col("price"),
        forecast_logret=pl.lit(0.0),
        fitted_at=pl.col("origin"),
        n_train=pl.lit(None, dtype=pl.Int64),
    )
    return pl.concat([oof, rw.select(oof.columns)], how="vertical_relaxed")


def _spacing_by_horizon(oof: pl.DataFrame, roles: Sequence[str] = (SCORED,)) -> dict[str, float]:
    """Mean trading-day gap between consecutive origins of the window, per horizon."""
    out: dict[str, float] = {}
    for (horizon,), part in (
        oof.filter(pl.col("role").is_in(list(roles))).partition_by("horizon", as_dict=True).items()
    ):
        rows = np.unique(part["origin_row"].to_numpy())
        out[horizon] = float((rows[-1] - rows[0]) / (rows.size - 1)) if rows.size > 1 else 1.0
    return out


def _score(part: pl.DataFrame, spacing: float) -> dict:
    horizon_days = int(part["horizon_days"][0])
    price = part["price"].to_numpy()
    actual = part["actual"].to_numpy()
    forecast = part["forecast"].to_numpy()
    err = np.abs(forecast - actual)
    rw_err = np.abs(price - actual)
    rw_mae = float(rw_err.mean())
    rel = float(err.mean() / rw_mae) if rw_mae > 0 else math.nan
    lags = dm_lags(horizon_days, spacing)
    dm = diebold_mariano(err, rw_err, lags)
    da, n_da = directional_accuracy(price, actual, forecast)
    return {
        "horizon_days": horizon_days,
        "n": part.height,
        "mape": mape(actual, forecast),
        "smape": smape(actual, forecast),
        "rmse": rmse(actual, forecast),
        "mae": mae(actual, forecast),
        "mase": mase(actual, forecast, part["naive_scale"].to_numpy()),
        "directional_accuracy": da,
        "n_directional": n_da,
        "rel_mae": rel,
        "skill": 1.0 - rel,
        "dm_stat": dm.stat,
        "dm_pvalue": dm.pvalue,
        "dm_lags": lags,
        "effective_n": effective_sample_size(part.height, horizon_days, spacing),
        "n_fallback": int(part["fallback_reason"].is_not_null().sum())
        if "fallback_reason" in part.columns
        else 0,
    }


def _metrics_table(
    oof: pl.DataFrame,
    keys: list[str],
    spacing_days: float | None,
    include_random_walk: bool,
    roles: Sequence[str] = (SCORED,),
) -> pl.DataFrame:
    spacing = _spacing_by_horizon(oof, roles)
    data = scored_rows(with_random_walk(oof) if include_random_walk else oof, roles)
    rows = []
    for key, part in data.sort("origin").partition_by(keys, as_dict=True).items():
        h_spacing = spacing_days if spacing_days is not None else spacing[key[0]]
        rows.append({**dict(zip(keys, key, strict=True)), **_score(part, h_spacing)})
    schema = dict(_METRIC_SCHEMA)
    for extra in keys[2:]:
        schema[extra] = oof.schema[extra]
    columns = ["horizon", "horizon_days", "model", *keys[2:]] + [
        c for c in _METRIC_SCHEMA if c not in ("horizon", "horizon_days", "model")
    ]
    table = pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
    table = table.select(columns).with_columns(pl.col(pl.Float64).fill_nan(None))
    return table.sort(["horizon_days", *keys[2:], "rel_mae", "model"], nulls_last=True)


def leaderboard(
    oof: pl.DataFrame,
    spacing_days: float | None = None,
    include_random_walk: bool = True,
    roles: Sequence[str] = (SCORED,),
) -> pl.DataFrame:
    """One row per (horizon, model): accuracy on scored origins, versus the random walk.

    `spacing_days` (trading days between origins, `OriginPlan.spacing_days`) sets the DM lags
    and the effective sample size; by default it is read off the oof's `origin_row`. NaN
    metrics (undefined DM, the random walk's direction) are returned as null. `roles` picks the
    window (default: scored; the benchmark also reports the development window). `n_fallback`
    counts the origins where a statistical model had fallen back to the random walk.
    """
    return _metrics_table(oof, ["horizon", "model"], spacing_days, include_random_walk, roles)


def by_group(
    oof: pl.DataFrame,
    group_col: str,
    spacing_days: float | None = None,
    include_random_walk: bool = True,
) -> pl.DataFrame:
    """The leaderboard within each value of `group_col` (e.g. the detected regime at the origin).

    DM lags keep the horizon's overall origin spacing; within small groups it is indicative.
    """
    if group_col not in oof.columns:
        raise ValueError(f"oof has no column {group_col!r}")
    return _metrics_table(oof, ["horizon", "model", group_col], spacing_days, include_random_walk)


def move_size_bins(oof: pl.DataFrame, bins: int | Sequence[float] = 3) -> pl.DataFrame:
    """Add `move_bin`: the size of the realised move |actual / price - 1|, binned per horizon.

    An int gives quantile bins over the horizon's scored origins ("q1 0.0%-2.1%" ...); a
    sequence gives explicit inner edges as fractions, e.g. [0.05, 0.10].
    """
    move = (pl.col("actual") / pl.col("price") - 1.0).abs()
    parts = []
    for part in oof.partition_by("horizon", maintain_order=True):
        moves = part.select(move.alias("m"))["m"].fill_null(np.nan).to_numpy()
        known = (part["role"].to_numpy() == SCORED) & np.isfinite(moves)
        origin_moves = (
            part.filter(pl.Series(known))
            .unique(subset=["origin"])
            .select(move.alias("m"))["m"]
            .to_numpy()
        )
        if isinstance(bins, int):
            if bins < 1:
                raise ValueError("bins must be >= 1")
            if origin_moves.size:
                edges = np.quantile(origin_moves, np.linspace(0.0, 1.0, bins + 1))
            else:
                edges = np.zeros(bins + 1)
            inner = edges[1:-1]
            names = [f"q{b + 1} {edges[b]:.1%}-{edges[b + 1]:.1%}" for b in range(bins)]
        else:
            inner = np.asarray(sorted(bins), dtype=np.float64)
            bounds = [0.0, *inner.tolist(), math.inf]
            names = [
                f"b{b + 1} {bounds[b]:.1%}-{bounds[b + 1]:.1%}" for b in range(len(bounds) - 1)
            ]
        which = np.searchsorted(inner, np.nan_to_num(moves), side="right")
        labels = [names[w] if k else None for w, k in zip(which, known, strict=True)]
        parts.append(part.with_columns(move_bin=pl.Series(labels, dtype=pl.Utf8)))
    return pl.concat(parts) if parts else oof.with_columns(move_bin=pl.lit(None, dtype=pl.Utf8))


def by_move_size(
    oof: pl.DataFrame,
    bins: int | Sequence[float] = 3,
    spacing_days: float | None = None,
    include_random_walk: bool = True,
) -> pl.DataFrame:
    """The leaderboard within bins of the realised move size (see `move_size_bins`)."""
    binned = move_size_bins(with_random_walk(oof) if include_random_walk else oof, bins)
    return by_group(binned, "move_bin", spacing_days, include_random_walk=False)


# The metrics shown in the UI and the benchmarks, in reading order.
REPORTED_METRICS = (
    "n",
    "mape",
    "smape",
    "rmse",
    "mase",
    "rel_mae",
    "skill",
    "dm_stat",
    "dm_pvalue",
    "directional_accuracy",
    "effective_n",
)
