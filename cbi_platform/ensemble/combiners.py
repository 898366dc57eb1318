"""Walk-forward combiners of the members' out-of-fold forecasts, shrunk toward the random walk.

Everything happens in log-return space, per horizon, and strictly walk-forward: at origin t a
combiner (its weights, its meta-learner, its shrinkage weight, and the choice among combiners)
uses only OOF rows whose target_date <= t, because only their actuals are known at t. The random
walk is always a member and always the fallback: every combiner is blended
`w * combo + (1 - w) * random_walk` with w chosen on past origins, and an origin with too little
resolved history gets the random walk itself, flagged in `fallback`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import polars as pl

RANDOM_WALK = "random_walk"
ENSEMBLE = "ensemble"
SIMPLE_AVERAGE = "simple_average"
INVERSE_ERROR = "inverse_error"
META_LGBM = "meta_lgbm"
COMBINERS = (SIMPLE_AVERAGE, INVERSE_ERROR, META_LGBM)
REGIMES = ("crisis", "bull", "bear", "normal")  # detected regimes (never the hindsight calendar)

OOF_COLUMNS = (
    "horizon",
    "model",
    "origin",
    "target_date",
    "price",
    "actual",
    "forecast",
    "forecast_logret",
    "role",
)
VOL_COLUMNS = ("vol_forecast", "vol", "trailing_vol")  # accepted context vol columns, in order
_NEVER = np.iinfo(np.int64).max  # day number of a target date that is unknown (never resolved)

DEFAULT_META_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 4,
    "max_depth": 2,
    "min_data_in_leaf": 30,  # raised to n // 10 on larger training sets
    "lambda_l2": 10.0,
    "min_gain_to_split": 0.0,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "seed": 0,
    "verbosity": -1,
}


@dataclass(frozen=True)
class EnsembleConfig:
    """Knobs of the walk-forward ensemble; defaults suit daily origins over a few years."""

    combiners: tuple[str, ...] = COMBINERS
    min_history: int = 60  # resolved rows needed for inverse-error weights, shrinkage and choice
    min_independent: float = 10.0  # ... and independent outcomes (rows / target overlap) for
    # shrinkage and choice: 6m/12m targets over a few years hold too few to weigh anything
    meta_min_history: int = 120  # resolved rows before the LightGBM meta-learner is fitted
    meta_refit_every: int = 20  # refit the meta-learner every k origins (between: last fit)
    meta_num_rounds: int = 100
    meta_params: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_META_PARAMS))
    inverse_error_power: float = 1.0  # weights ∝ 1 / MAE**power
    shrink_grid: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))
    shrink_se_rule: float = 0.5  # smallest w within this many std errors of the best (0: argmin)
    choice: Literal["expanding", "burn_in"] = "expanding"
    include_random_walk_candidate: bool = True  # the random walk competes in the choice too


@dataclass(frozen=True)
class EnsembleResult:
    """Ensemble forecasts (oof-shaped), effective member weights, every candidate's forecasts."""

    forecasts: pl.DataFrame
    member_weights: pl.DataFrame
    candidates: pl.DataFrame


@dataclass
class _Panel:
    """One horizon's OOF as arrays: one row per origin, one column per member."""

    horizon: str
    base: pl.DataFrame  # origin, target_date, price, actual, role (one row per origin)
    origin_days: np.ndarray  # int64 day numbers
    target_days: np.ndarray  # int64 day numbers, _NEVER where unknown
    y: np.ndarray  # actual log return, NaN where unknown
    members: list[str]
    F: np.ndarray  # (n, m) member forecast log returns, NaN where missing
    rw: np.ndarray  # (n,) random-walk forecast log return (0)
    context: np.ndarray  # (n, c) regime one-hot and vol forecast
    context_names: list[str]
    order: np.ndarray  # origin rows sorted by target date
    resolved: np.ndarray  # (n,) how many rows (in `order`) have target_date <= origin
    overlap: float  # how many origins share one target window (1 = no overlap)

    def has_evidence(self, counts: np.ndarray, min_rows: int, min_independent: float) -> np.ndarray:
        """Enough resolved rows, and enough independent outcomes among them, to judge by."""
        return (counts >= min_rows) & (counts / self.overlap >= min_independent)

    def prefix(self, values: np.ndarray) -> np.ndarray:
        """Cumulative sums over rows in target-date order with a leading zero row.

        `prefix(v)[resolved[i]]` is the sum of v over the rows known at origin i.
        """
        v = np.nan_to_num(values[self.order], nan=0.0)
        zero = np.zeros((1,) + v.shape[1:], dtype=float)
        return np.concatenate([zero, np.cumsum(v, axis=0)], axis=0)


@dataclass
class _CombinerOutput:
    combo: np.ndarray  # (n,) raw combined log return, NaN where the combiner has no history
    weights: np.ndarray  # (n, m + c) weight of each member / context feature
    weight_kind: str  # "linear" (exact weights) | "importance" (meta-learner gain shares)


def day_numbers(dates: pl.Series) -> np.ndarray:
    """Dates as int64 day numbers; a null (unknown target date) sorts after every date."""
    days = dates.cast(pl.Date).cast(pl.Int64)
    return days.fill_null(_NEVER).to_numpy().astype(np.int64)


def validate_oof(oof: pl.DataFrame) -> pl.DataFrame:
    """Check the OOF contract and fill forecast_logret from the price level where it is null."""
    missing = [c for c in OOF_COLUMNS if c not in oof.columns]
    if missing:
        raise ValueError(f"oof is missing column(s) {missing}; expected {list(OOF_COLUMNS)}")
    dupes = oof.group_by(["horizon", "model", "origin"]).len().filter(pl.col("len") > 1)
    if dupes.height:
        raise ValueError(f"oof has duplicate (horizon, model, origin) rows, e.g. {dupes.row(0)}")
    without_rw = set(oof["horizon"].unique()) - set(
        oof.filter(pl.col("model") == RANDOM_WALK)["horizon"].unique()
    )
    if without_rw:
        raise ValueError(f"oof has no '{RANDOM_WALK}' rows for horizon(s) {sorted(without_rw)}")
    return oof.with_columns(
        pl.col("forecast_logret")
        .cast(pl.Float64)
        .fill_null((pl.col("forecast") / pl.col("price")).log()),
        pl.col("origin").cast(pl.Date),
        pl.col("target_date").cast(pl.Date),
    )


def normalise_context(context: pl.DataFrame | None) -> pl.DataFrame | None:
    """The per-origin context as [horizon,] origin, regime (str), vol_forecast (float).

    Accepts `date` for `origin` (the regime labeller's frame) and the first of VOL_COLUMNS present
    as the volatility forecast; a `horizon` column, if present, makes the context per horizon.
    """
    if context is None:
        return None
    if "origin" not in context.columns and "date" in context.columns:
        context = context.rename({"date": "origin"})
    if "origin" not in context.columns:
        raise ValueError(f"context needs an 'origin' (or 'date') column, has {context.columns}")
    keys = ["horizon", "origin"] if "horizon" in context.columns else ["origin"]
    exprs: list[pl.Expr] = [pl.col(k) if k != "origin" else pl.col(k).cast(pl.Date) for k in keys]
    if "regime" in context.columns:
        exprs.append(pl.col("regime").cast(pl.Utf8))
    vol = next((c for c in VOL_COLUMNS if c in context.columns), None)
    if vol is not None:
        exprs.append(pl.col(vol).cast(pl.Float64).alias("vol_forecast"))
    return context.select(exprs).unique(subset=keys, keep="last", maintain_order=True)


def _context_columns(context: pl.DataFrame | None) -> tuple[pl.DataFrame | None, list[str]]:
    """Meta-learner context features: regime one-hot and the vol forecast."""
    context = normalise_context(context)
    if context is None:
        return None, []
    keys = ["horizon", "origin"] if "horizon" in context.columns else ["origin"]
    exprs: list[pl.Expr] = [pl.col(k) for k in keys]
    names: list[str] = []
    if "regime" in context.columns:
        for regime in REGIMES:
            name = f"regime_{regime}"
            exprs.append((pl.col("regime") == regime).cast(pl.Float64).alias(name))
            names.append(name)
    if "vol_forecast" in context.columns:
        exprs.append(pl.col("vol_forecast"))
        names.append("vol_forecast")
    return context.select(exprs), names


def _panel(
    oof_h: pl.DataFrame,
    horizon: str,
    context: pl.DataFrame | None = None,
    names: list[str] | None = None,
) -> _Panel:
    """Pivot one horizon's oof to arrays; the random walk, when present, is member 0."""
    names = names or []
    base = (
        oof_h.sort("origin")
        .group_by("origin", maintain_order=True)
        .agg(
            pl.col("target_date").drop_nulls().first(),
            pl.col("price").drop_nulls().first(),
            pl.col("actual").drop_nulls().first(),
            (pl.col("role") if "role" in oof_h.columns else pl.lit(None, pl.Utf8))
            .drop_nulls()
            .first()
            .alias("role"),
        )
    )
    wide = base.select("origin").join(
        oof_h.pivot(on="model", index="origin", values="forecast_logret"),
        on="origin",
        how="left",
        maintain_order="left",
    )
    others = sorted(c for c in wide.columns if c not in ("origin", RANDOM_WALK))
    members = ([RANDOM_WALK] if RANDOM_WALK in wide.columns else []) + others
    F = wide.select(members).to_numpy().astype(float)
    if context is not None and names:
        ctx = base.select("origin").with_columns(pl.lit(horizon).alias("horizon"))
        keys = ["horizon", "origin"] if "horizon" in context.columns else ["origin"]
        joined = ctx.join(context, on=keys, how="left", maintain_order="left")
        ctx_values = joined.select(names).to_numpy().astype(float)
    else:
        ctx_values = np.empty((base.height, 0))
    price = base["price"].to_numpy().astype(float)
    actual = base["actual"].cast(pl.Float64).to_numpy().astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.log(actual / price)
    origin_days = day_numbers(base["origin"])
    target_days = day_numbers(base["target_date"])
    order = np.argsort(target_days, kind="stable")
    resolved = np.searchsorted(target_days[order], origin_days, side="right")
    return _Panel(
        horizon=horizon,
        base=base,
        origin_days=origin_days,
        target_days=target_days,
        y=y,
        members=members,
        F=F,
        rw=np.nan_to_num(F[:, 0], nan=0.0) if members[0] == RANDOM_WALK else np.zeros(len(F)),
        context=ctx_values,
        context_names=list(names),
        order=order,
        resolved=resolved,
        overlap=target_overlap(origin_days, target_days),
    )


def target_overlap(origin_days: np.ndarray, target_days: np.ndarray) -> float:
    """Origins per target window (median window / median origin spacing, in business days, >= 1):
    the factor by which overlapping targets inflate the apparent number of independent outcomes."""
    known = target_days != _NEVER
    if known.sum() < 2:
        return 1.0
    origins = origin_days[known].astype("datetime64[D]")
    window = float(np.median(np.busday_count(origins, target_days[known].astype("datetime64[D]"))))
    ordered = np.sort(origin_days).astype("datetime64[D]")
    spacing = float(np.median(np.busday_count(ordered[:-1], ordered[1:])))
    return max(window / max(spacing, 1.0), 1.0)


def _known(panel: _Panel, values: np.ndarray) -> np.ndarray:
    """1.0 where a row's actual (and value) is known, else 0; for counting resolved rows."""
    ok = np.isfinite(panel.y)
    if values.ndim == 2:
        ok = ok[:, None] & np.isfinite(values)
    else:
        ok = ok & np.isfinite(values)
    return ok.astype(float)


# ----------------------------------------------------------------------------- combiners


def simple_average(panel: _Panel) -> _CombinerOutput:
    """Equal weights over the members available at each origin (the random walk included)."""
    available = np.isfinite(panel.F)
    k = available.sum(axis=1)
    weights = np.where(available, 1.0 / np.maximum(k, 1)[:, None], 0.0)
    combo = np.where(k > 0, (np.nan_to_num(panel.F) * weights).sum(axis=1), np.nan)
    pad = np.zeros((panel.F.shape[0], len(panel.context_names)))
    return _CombinerOutput(combo, np.hstack([weights, pad]), "linear")


def inverse_error(panel: _Panel, min_history: int, power: float = 1.0) -> _CombinerOutput:
    """Weights ∝ 1/MAE of each member over the rows resolved by the origin (log-return MAE)."""
    abs_err = np.abs(panel.F - panel.y[:, None])
    sums = panel.prefix(abs_err)[panel.resolved]
    counts = panel.prefix(_known(panel, panel.F))[panel.resolved]
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = sums / counts
    eligible = (counts >= min_history) & np.isfinite(panel.F) & np.isfinite(mae)
    raw = np.where(eligible, 1.0 / np.maximum(mae, 1e-9) ** power, 0.0)
    total = raw.sum(axis=1)
    weights = np.divide(raw, total[:, None], out=np.zeros_like(raw), where=total[:, None] > 0)
    combo = np.where(total > 0, (np.nan_to_num(panel.F) * weights).sum(axis=1), np.nan)
    pad = np.zeros((panel.F.shape[0], len(panel.context_names)))
    return _CombinerOutput(combo, np.hstack([weights, pad]), "linear")


def meta_lgbm(
    panel: _Panel,
    min_history: int,
    refit_every: int,
    num_rounds: int = 100,
    params: dict[str, Any] | None = None,
) -> _CombinerOutput:
    """A small, heavily regularised LightGBM on the members' forecasts (+ regime context).

    Refitted every `refit_every` origins on the rows resolved by the refit origin; between refits
    the last fit predicts (it only ever saw rows resolved by an earlier origin). Weights are the
    normalised gain importances of the fit in use (explanatory, not a linear combination).
    """
    params = dict(DEFAULT_META_PARAMS if params is None else params)
    X = np.hstack([panel.F, panel.context])
    n = X.shape[0]
    combo = np.full(n, np.nan)
    weights = np.zeros_like(X)
    refits = _meta_refits(panel, min_history, refit_every)
    for j, start in enumerate(refits):
        stop = refits[j + 1] if j + 1 < len(refits) else n
        booster = _fit_meta_booster(panel, X, start, params, num_rounds)
        combo[start:stop] = booster.predict(X[start:stop])
        gain = booster.feature_importance(importance_type="gain").astype(float)
        if gain.sum() > 0:
            weights[start:stop] = gain / gain.sum()
    return _CombinerOutput(combo, weights, "importance")


def _meta_refits(panel: _Panel, min_history: int, refit_every: int) -> list[int]:
    """Origin rows where the meta-learner is refitted: enough resolved rows, every k origins."""
    known = panel.prefix(np.isfinite(panel.y).astype(float))[panel.resolved]
    refits: list[int] = []
    last = None
    for i in range(len(known)):
        if known[i] >= min_history and (last is None or i - last >= refit_every):
            refits.append(i)
            last = i
    return refits


def _fit_meta_booster(
    panel: _Panel, X: np.ndarray, start: int, params: dict[str, Any], num_rounds: int
) -> lgb.Booster:
    """The meta-learner fitted at origin row `start` on the rows resolved by then."""
    rows = panel.order[: panel.resolved[start]]
    rows = rows[np.isfinite(panel.y[rows])]
    fit_params = dict(params)
    fit_params["min_data_in_leaf"] = max(int(params.get("min_data_in_leaf", 30)), len(rows) // 10)
    dataset = lgb.Dataset(X[rows], label=panel.y[rows], params={"verbosity": -1})
    return lgb.train(fit_params, dataset, num_boost_round=num_rounds)


# ----------------------------------------------------------------------------- shrinkage


def shrinkage_weights(
    panel: _Panel,
    combo: np.ndarray,
    min_history: int,
    grid: tuple[float, ...],
    se_rule: float = 0.5,
    min_independent: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per origin, the shrinkage weight w of rw + w*(combo - rw), from rows resolved by the origin.

    The smallest w in `grid` whose past MAE is within `se_rule` standard errors of the best w's
    (a k-standard-error rule; errors paired by origin, the count deflated by the overlap of
    target windows): the random walk keeps the weight unless the past clearly says otherwise.
    Plain argmin (se_rule=0) lets noise members take w ≈ 0.2-0.6 on a few hundred origins.
    With fewer than `min_history` usable rows or `min_independent` independent outcomes among
    them, w = 0 and the second array is False.
    """
    w_grid = np.asarray(grid, dtype=float)
    gap = combo - panel.rw
    usable = _known(panel, combo)
    err = np.abs(panel.y[:, None] - panel.rw[:, None] - w_grid[None, :] * gap[:, None])
    err = np.where(usable[:, None] > 0, err, 0.0)
    sums = panel.prefix(err)[panel.resolved]  # (n, G)
    cross = panel.prefix(err[:, :, None] * err[:, None, :])[panel.resolved]  # (n, G, G)
    counts = panel.prefix(usable)[panel.resolved]
    enough = panel.has_evidence(counts, min_history, min_independent) & np.isfinite(combo)
    n = np.maximum(counts, 1.0)
    mean = sums / n[:, None]
    best = np.argmin(mean, axis=1)  # first minimum: the smallest w among ties
    rows = np.arange(len(best))
    diff = mean - mean[rows, best][:, None]
    second = (
        np.diagonal(cross, axis1=1, axis2=2)
        - 2 * cross[rows, :, best]
        + cross[rows, best, best][:, None]
    ) / n[:, None]
    var = np.maximum(second - diff**2, 0.0)
    n_effective = np.maximum(n / panel.overlap, 1.0)
    within = diff <= se_rule * np.sqrt(var / n_effective[:, None]) + 1e-15
    chosen = np.argmax(within, axis=1)  # the smallest w within the band (best is always in it)
    return np.where(enough, w_grid[chosen], 0.0), enough


# ----------------------------------------------------------------------------- choice


def choose_combiner(
    candidates: pl.DataFrame,
    *,
    min_history: int = 60,
    min_independent: float = 10.0,
    mode: Literal["expanding", "burn_in"] = "expanding",
    fallback: str = RANDOM_WALK,
) -> pl.DataFrame:
    """Pick, per horizon and origin, the candidate with the lowest log-return MAE on rows resolved
    by that origin (target_date <= origin), i.e. on earlier origins only.

    `candidates` is oof-shaped (one "model" per candidate). mode="expanding" re-chooses at every
    origin; mode="burn_in" chooses once at the last pre-scored (development) origin and keeps
    that choice for the scored origins (earlier origins use the expanding choice). With fewer than
    `min_history` resolved rows, or fewer than `min_independent` independent outcomes (rows /
    overlap of the target windows), the choice is `fallback`, flagged. Ties go to `fallback`, then
    alphabetically.
    Returns horizon, origin, combiner, choice_rows (rows it was judged on), choice_fallback.
    """
    out = []
    for (horizon,), frame in candidates.group_by("horizon", maintain_order=True):
        panel = _panel(frame, horizon)
        names = [fallback] + [m for m in panel.members if m != fallback]
        forecasts = panel.F[:, [panel.members.index(m) for m in names if m in panel.members]]
        if fallback not in panel.members:
            forecasts = np.hstack([np.full((forecasts.shape[0], 1), np.nan), forecasts])
        abs_err = np.abs(forecasts - panel.y[:, None])
        sums = panel.prefix(abs_err)[panel.resolved]
        counts = panel.prefix(_known(panel, forecasts))[panel.resolved]
        with np.errstate(invalid="ignore", divide="ignore"):
            mae = np.where(
                panel.has_evidence(counts, min_history, min_independent), sums / counts, np.inf
            )
        best = np.argmin(mae, axis=1)  # first minimum: fallback, then alphabetical
        has_history = np.isfinite(mae[np.arange(len(best)), best])
        chosen = np.where(has_history, np.asarray(names, dtype=object)[best], fallback)
        rows_used = counts.max(axis=1).astype(np.int64)
        base = panel.base
        if mode == "burn_in":
            # the pre-scored windows (calibration, development); "burn_in" in older tables
            pre = ("calibration", "development", "burn_in")
            burn = np.flatnonzero(np.isin(base["role"].to_numpy(), pre))
            if burn.size:
                decision = burn.max()
                chosen[decision + 1 :] = chosen[decision]
                has_history[decision + 1 :] = has_history[decision]
                rows_used[decision + 1 :] = rows_used[decision]
        out.append(
            pl.DataFrame(
                {
                    "horizon": [horizon] * base.height,
                    "origin": base["origin"],
                    "combiner": chosen.astype(str).tolist(),
                    "choice_rows": rows_used,
                    "choice_fallback": ~has_history,
                }
            )
        )
    return pl.concat(out) if out else pl.DataFrame()


# ----------------------------------------------------------------------------- the ensemble


def _candidate_frame(panel: _Panel, name: str, logret, raw, shrink, fallback) -> pl.DataFrame:
    return panel.base.with_columns(
        pl.lit(panel.horizon).alias("horizon"),
        pl.lit(name).alias("model"),
        pl.Series("forecast_logret", logret, dtype=pl.Float64),
        pl.Series("raw_forecast_logret", raw, dtype=pl.Float64),
        pl.Series("shrink_weight", shrink, dtype=pl.Float64),
        pl.Series("fallback", fallback, dtype=pl.Boolean),
    ).with_columns((pl.col("price") * pl.col("forecast_logret").exp()).alias("forecast"))


def _horizon_candidates(panel: _Panel, cfg: EnsembleConfig):
    """Every combiner's raw and shrunk walk-forward forecasts, and its effective weights."""
    frames = []
    weights: dict[str, tuple[np.ndarray, str]] = {}
    n, m = panel.F.shape
    if cfg.include_random_walk_candidate:
        zeros = np.zeros(n)
        frames.append(
            _candidate_frame(panel, RANDOM_WALK, panel.rw, panel.rw, zeros, np.zeros(n, bool))
        )
    rw_only = np.zeros((n, m + len(panel.context_names)))
    rw_only[:, 0] = 1.0
    weights[RANDOM_WALK] = (rw_only, "linear")
    for name in cfg.combiners:
        if name not in COMBINER_REGISTRY:
            raise ValueError(f"unknown combiner {name!r}; known: {tuple(COMBINER_REGISTRY)}")
        result = COMBINER_REGISTRY[name].walk_forward(panel, cfg)
        w, enough = shrinkage_weights(
            panel,
            result.combo,
            cfg.min_history,
            cfg.shrink_grid,
            cfg.shrink_se_rule,
            cfg.min_independent,
        )
        shrunk = np.where(enough, panel.rw + w * (result.combo - panel.rw), panel.rw)
        effective = result.weights * w[:, None]
        effective[:, 0] += 1.0 - w
        weights[name] = (effective, result.weight_kind)
        frames.append(_candidate_frame(panel, name, shrunk, result.combo, w, ~enough))
    return pl.concat(frames, how="vertical_relaxed"), weights


def build_ensemble(
    oof: pl.DataFrame, context: pl.DataFrame | None = None, config: EnsembleConfig | None = None
) -> EnsembleResult:
    """Combine, shrink and choose, walk-forward, per horizon (see the module docstring)."""
    cfg = config or EnsembleConfig()
    oof = validate_oof(oof)
    ctx, ctx_names = _context_columns(context)
    forecast_frames, weight_frames, candidate_frames = [], [], []
    for (horizon,), oof_h in oof.group_by("horizon", maintain_order=True):
        panel = _panel(oof_h, horizon, ctx, ctx_names)
        candidates, weights = _horizon_candidates(panel, cfg)
        candidate_frames.append(candidates)
        choice = choose_combiner(
            candidates,
            min_history=cfg.min_history,
            min_independent=cfg.min_independent,
            mode=cfg.choice,
        )
        chosen = choice["combiner"].to_numpy().astype(str)
        values = candidates.select(
            "origin",
            pl.col("model").alias("combiner"),
            "forecast_logret",
            "shrink_weight",
            "fallback",
        )
        picked = (
            panel.base.with_columns(pl.Series("rw_logret", panel.rw))
            .join(choice.select("origin", "combiner", "choice_fallback"), on="origin")
            .join(values, on=["origin", "combiner"], how="left")
            .sort("origin")
            .with_columns(
                pl.col("forecast_logret").fill_null(pl.col("rw_logret")),
                pl.col("shrink_weight").fill_null(0.0),
                (pl.col("fallback").fill_null(True) | pl.col("choice_fallback")).alias("fallback"),
                pl.lit(horizon).alias("horizon"),
            )
            .with_columns((pl.col("price") * pl.col("forecast_logret").exp()).alias("forecast"))
        )
        forecast_frames.append(
            picked.with_columns(pl.lit(ENSEMBLE).alias("model")).select(
                *OOF_COLUMNS, "combiner", "shrink_weight", "fallback"
            )
        )
        weight_frames.append(_weight_frame(panel, chosen, weights))
    return EnsembleResult(
        forecasts=pl.concat(forecast_frames),
        member_weights=pl.concat(weight_frames),
        candidates=pl.concat(candidate_frames, how="vertical_relaxed"),
    )


def _weight_frame(panel: _Panel, chosen: np.ndarray, weights) -> pl.DataFrame:
    """Long frame of the chosen combiner's effective weight on each member at each origin."""
    names = panel.members + [f"context:{c}" for c in panel.context_names]
    n = len(chosen)
    rows_w = np.zeros((n, len(names)))
    kinds = np.empty(n, dtype=object)
    for name, (w, kind) in weights.items():
        mask = chosen == name
        rows_w[mask] = w[mask]
        kinds[mask] = kind
    unknown = ~np.isin(chosen, list(weights))
    rows_w[unknown, 0] = 1.0
    kinds[unknown] = "linear"
    i, j = np.nonzero(rows_w)
    origins = panel.base["origin"]
    return pl.DataFrame(
        {
            "horizon": [panel.horizon] * len(i),
            "origin": origins.gather(i),
            "combiner": chosen[i].astype(str).tolist(),
            "model": np.asarray(names, dtype=object)[j].astype(str).tolist(),
            "weight": rows_w[i, j],
            "weight_kind": kinds[i].astype(str).tolist(),
        },
        schema={
            "horizon": pl.Utf8,
            "origin": pl.Date,
            "combiner": pl.Utf8,
            "model": pl.Utf8,
            "weight": pl.Float64,
            "weight_kind": pl.Utf8,
        },
    )


def run_ensemble(
    oof: pl.DataFrame, context: pl.DataFrame | None = None, config: EnsembleConfig | None = None
) -> pl.DataFrame:
    """The ensemble's forecasts, oof-shaped (model = "ensemble") plus combiner, shrink_weight and
    fallback; `build_ensemble` also returns the member weights and every candidate."""
    return build_ensemble(oof, context, config).forecasts


# ----------------------------------------------------------------------------- served state


@dataclass(frozen=True)
class EnsembleState:
    """The chosen combiner's fitted state at one origin (the live one), enough to combine the
    members' forecasts of a later day without the walk-forward history.

    `combine` reproduces `build_ensemble`'s forecast at that origin exactly: the combiner's raw
    forecast blended with the random walk (member 0, log return 0) by `shrink_weight`, or the
    random walk itself where the combiner had too little evidence (`blended` False).
    """

    horizon: str
    origin: dt.date
    combiner: str  # random_walk | simple_average | inverse_error | meta_lgbm
    members: tuple[str, ...]  # input order; the random walk first when present
    shrink_weight: float
    blended: bool  # False: the ensemble is the random walk at this origin
    member_scores: tuple[float, ...] = ()  # inverse_error: 1/MAE**power per member (0: none)
    booster: str | None = None  # meta_lgbm: the LightGBM model string in use at the origin
    context_names: tuple[str, ...] = ()  # meta_lgbm context inputs (regime one-hot, vol)
    forecast_logret: float = float("nan")  # what build_ensemble forecast at the origin

    def member_vector(self, member_logrets: Mapping[str, float]) -> np.ndarray:
        return np.array([float(member_logrets.get(m, np.nan)) for m in self.members], dtype=float)

    def context_vector(self, context: Mapping[str, Any] | None) -> np.ndarray:
        """Context inputs as the meta-learner saw them: regime one-hot (NaN when the regime is
        unknown) and the volatility forecast (NaN when unknown)."""
        context = context or {}
        regime = context.get("regime")
        vol = context.get("vol_forecast")
        out = []
        for name in self.context_names:
            if name.startswith("regime_"):
                out.append(np.nan if regime is None else float(regime == name[len("regime_") :]))
            elif name == "vol_forecast":
                out.append(np.nan if vol is None else float(vol))
            else:
                raise ValueError(f"unknown context input {name!r}")
        return np.asarray(out, dtype=float)

    def _random_walk(self, F: np.ndarray) -> float:
        return float(np.nan_to_num(F[0], nan=0.0)) if self.members[:1] == (RANDOM_WALK,) else 0.0

    def _raw(self, F: np.ndarray, context: Mapping[str, Any] | None) -> tuple[float, np.ndarray]:
        """The combiner's raw forecast and its weights over members (+ context inputs)."""
        if self.combiner not in COMBINER_REGISTRY:
            raise ValueError(f"unknown combiner {self.combiner!r}")
        return COMBINER_REGISTRY[self.combiner].serve(self, F, context)

    def combine(
        self, member_logrets: Mapping[str, float], context: Mapping[str, Any] | None = None
    ) -> float:
        """The ensemble's log-return forecast from the members' log-return forecasts."""
        F = self.member_vector(member_logrets)
        rw = self._random_walk(F)
        if self.combiner == RANDOM_WALK or not self.blended:
            return rw
        combo, _ = self._raw(F, context)
        if not np.isfinite(combo):
            return rw
        return rw + self.shrink_weight * (combo - rw)

    def effective_weights(
        self, member_logrets: Mapping[str, float], context: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, float], str]:
        """Each member's (and context input's) effective weight after shrinkage, and its kind:
        "linear" (weights of a sum) or "importance" (meta-learner gain shares)."""
        names = [*self.members, *(f"context:{c}" for c in self.context_names)]
        weights = np.zeros(len(names))
        entry = COMBINER_REGISTRY.get(self.combiner)
        kind = entry.weight_kind if entry is not None else "linear"
        F = self.member_vector(member_logrets)
        combo = np.nan
        if self.combiner != RANDOM_WALK and self.blended:
            combo, raw_w = self._raw(F, context)
        if np.isfinite(combo):
            weights = raw_w * self.shrink_weight
            weights[0] += 1.0 - self.shrink_weight
        else:
            weights[0] = 1.0
            kind = "linear"
        return {n: float(w) for n, w in zip(names, weights, strict=True) if w != 0}, kind

    def to_dict(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "origin": self.origin.isoformat(),
            "combiner": self.combiner,
            "members": list(self.members),
            "shrink_weight": self.shrink_weight,
            "blended": self.blended,
            "member_scores": list(self.member_scores),
            "booster": self.booster,
            "context_names": list(self.context_names),
            "forecast_logret": self.forecast_logret,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnsembleState:
        return cls(
            horizon=str(data["horizon"]),
            origin=dt.date.fromisoformat(str(data["origin"])),
            combiner=str(data["combiner"]),
            members=tuple(data["members"]),
            shrink_weight=float(data["shrink_weight"]),
            blended=bool(data["blended"]),
            member_scores=tuple(float(v) for v in data.get("member_scores") or ()),
            booster=data.get("booster"),
            context_names=tuple(data.get("context_names") or ()),
            forecast_logret=float(data.get("forecast_logret", float("nan"))),
        )


def ensemble_state(
    oof: pl.DataFrame,
    context: pl.DataFrame | None = None,
    config: EnsembleConfig | None = None,
    horizon: str | None = None,
) -> EnsembleState:
    """The state of the combiner `build_ensemble` chooses at the last origin of one horizon
    (the live origin): what a registered model version needs to forecast a later day."""
    cfg = config or EnsembleConfig()
    oof = validate_oof(oof)
    horizons = oof["horizon"].unique(maintain_order=True).to_list()
    if horizon is None:
        if len(horizons) != 1:
            raise ValueError(f"oof holds horizons {horizons}: say which one")
        horizon = horizons[0]
    oof_h = oof.filter(pl.col("horizon") == horizon)
    if oof_h.height == 0:
        raise ValueError(f"oof has no rows for horizon {horizon!r} (has {horizons})")
    ctx, ctx_names = _context_columns(context)
    panel = _panel(oof_h, horizon, ctx, ctx_names)
    candidates, _ = _horizon_candidates(panel, cfg)
    choice = choose_combiner(
        candidates,
        min_history=cfg.min_history,
        min_independent=cfg.min_independent,
        mode=cfg.choice,
    )
    last = panel.base.height - 1
    origin = panel.base["origin"][last]
    chosen = choice.filter(pl.col("origin") == origin)["combiner"][0]
    row = candidates.filter((pl.col("model") == chosen) & (pl.col("origin") == origin))
    if row.height == 0:  # build_ensemble serves the random walk for an unknown choice
        chosen = RANDOM_WALK
    shrink = float(row["shrink_weight"][0]) if row.height else 0.0
    blended = bool(row.height and not row["fallback"][0] and chosen != RANDOM_WALK)
    scores: tuple[float, ...] = ()
    booster = None
    if chosen == INVERSE_ERROR:
        at = panel.resolved[last]
        sums = panel.prefix(np.abs(panel.F - panel.y[:, None]))[at]
        counts = panel.prefix(_known(panel, panel.F))[at]
        with np.errstate(invalid="ignore", divide="ignore"):
            mae = sums / counts
        ok = (counts >= cfg.min_history) & np.isfinite(mae)
        scores = tuple(
            np.where(ok, 1.0 / np.maximum(mae, 1e-9) ** cfg.inverse_error_power, 0.0).tolist()
        )
    elif chosen == META_LGBM:
        refits = _meta_refits(panel, cfg.meta_min_history, cfg.meta_refit_every)
        if refits:
            X = np.hstack([panel.F, panel.context])
            params = dict(DEFAULT_META_PARAMS if cfg.meta_params is None else cfg.meta_params)
            fitted = _fit_meta_booster(panel, X, refits[-1], params, cfg.meta_num_rounds)
            booster = fitted.model_to_string()
    value = row["forecast_logret"][0] if row.height else panel.rw[last]
    return EnsembleState(
        horizon=horizon,
        origin=origin,
        combiner=chosen,
        members=tuple(panel.members),
        shrink_weight=shrink,
        blended=blended,
        member_scores=scores,
        booster=booster,
        context_names=tuple(ctx_names),
        forecast_logret=float(value),
    )


# ----------------------------------------------------------------------------- the registry
# A combiner is two functions over the same weights: the walk-forward one (every origin of a
# horizon's panel) and the serving one (one origin, from the exported EnsembleState). Adding a
# combiner is one entry here and its name in EnsembleConfig.combiners; nothing else dispatches.


@dataclass(frozen=True)
class Combiner:
    name: str
    walk_forward: Callable[[_Panel, EnsembleConfig], _CombinerOutput]
    serve: Callable[[EnsembleState, np.ndarray, Mapping[str, Any] | None], tuple[float, np.ndarray]]
    weight_kind: str = "linear"  # "linear" (weights of a sum) | "importance" (gain shares)


def _serve_simple_average(state: EnsembleState, F: np.ndarray, context) -> tuple[float, np.ndarray]:
    pad = np.zeros(len(state.context_names))
    available = np.isfinite(F)
    k = available.sum()
    w = np.where(available, 1.0 / max(k, 1), 0.0)
    combo = float((np.nan_to_num(F) * w).sum()) if k > 0 else np.nan
    return combo, np.concatenate([w, pad])


def _serve_inverse_error(state: EnsembleState, F: np.ndarray, context) -> tuple[float, np.ndarray]:
    pad = np.zeros(len(state.context_names))
    raw = np.where(np.isfinite(F), np.asarray(state.member_scores, dtype=float), 0.0)
    total = raw.sum()
    w = np.divide(raw, total, out=np.zeros_like(raw), where=total > 0)
    combo = float((np.nan_to_num(F) * w).sum()) if total > 0 else np.nan
    return combo, np.concatenate([w, pad])


def _serve_meta_lgbm(state: EnsembleState, F: np.ndarray, context) -> tuple[float, np.ndarray]:
    if state.booster is None:
        return np.nan, np.zeros(len(F) + len(state.context_names))
    booster = lgb.Booster(model_str=state.booster)
    X = np.concatenate([F, state.context_vector(context)]).reshape(1, -1)
    gain = booster.feature_importance(importance_type="gain").astype(float)
    w = gain / gain.sum() if gain.sum() > 0 else np.zeros_like(gain)
    return float(booster.predict(X)[0]), w


COMBINER_REGISTRY: dict[str, Combiner] = {
    SIMPLE_AVERAGE: Combiner(
        SIMPLE_AVERAGE, lambda panel, cfg: simple_average(panel), _serve_simple_average
    ),
    INVERSE_ERROR: Combiner(
        INVERSE_ERROR,
        lambda panel, cfg: inverse_error(panel, cfg.min_history, cfg.inverse_error_power),
        _serve_inverse_error,
    ),
    META_LGBM: Combiner(
        META_LGBM,
        lambda panel, cfg: meta_lgbm(
            panel, cfg.meta_min_history, cfg.meta_refit_every, cfg.meta_num_rounds, cfg.meta_params
        ),
        _serve_meta_lgbm,
        weight_kind="importance",
    ),
}
if tuple(COMBINER_REGISTRY) != COMBINERS:  # one list of names, checked at import
    raise AssertionError(f"COMBINERS {COMBINERS} != registry {tuple(COMBINER_REGISTRY)}")
