"""Target zones by split conformal prediction on walk-forward residuals, with MAPIE.

At each origin t, per horizon (and model), the calibration set is the walk-forward residuals known
at t (target_date <= t), in log-return space: residual = actual_logret - forecast_logret. MAPIE's
`SplitConformalRegressor(prefit=True)` wraps a pass-through "estimator" whose prediction is the
point forecast carried in X, so MAPIE calibrates on those past residuals without refitting
anything. Signed (asymmetric) scores give P10/P90 (80%), P30/P70 (40%) and lo90/hi90 (90%) as the
finite-sample-corrected residual quantiles; P50 = forecast + median residual.

Variants: pooled; regime-conditional (Mondrian: only residuals of the origin's detected regime,
with a minimum count); and both with volatility scaling (residuals divided by the vol forecast,
intervals multiplied back). A variant replaces pooled at t only if it covered better than pooled,
by more than a tolerance, on earlier resolved origins like t (same regime, same vol tercile).
Probability statements use the same calibrated distribution (the conformal CDF of the residuals).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import numpy as np
import polars as pl
from mapie.conformity_scores import AbsoluteConformityScore
from mapie.regression import SplitConformalRegressor
from sklearn.base import BaseEstimator, RegressorMixin

from cbi_platform.ensemble.combiners import (
    VOL_COLUMNS,
    day_numbers,
    normalise_context,
    target_overlap,
)
from cbi_platform.features.contract import HORIZONS

LEVELS = (0.4, 0.8, 0.9)  # central intervals: P30-P70, P10-P90, P5-P95
ZONE_COLUMNS = ("lo90", "p10", "p30", "p50", "p70", "p90", "hi90")  # price levels, ordered
POOLED, REGIME, POOLED_VOL, REGIME_VOL = "pooled", "regime", "pooled_vol", "regime_vol"
VARIANTS = (POOLED, REGIME, POOLED_VOL, REGIME_VOL)
INSUFFICIENT = "insufficient"


@dataclass(frozen=True)
class ConformalConfig:
    """Knobs of the walk-forward conformal calibration."""

    variants: tuple[str, ...] = VARIANTS
    min_calibration: int = 40  # residuals needed for any zone (MAPIE needs >= 20 for 90%)
    min_per_regime: int = 40  # residuals of the origin's regime needed for the Mondrian variant
    min_selection: int = 40  # resolved earlier zones needed to judge a variant's coverage
    coverage_tolerance: float = 0.02  # a variant must beat pooled's coverage error by this much
    max_cdf_knots: int = 101  # knots kept per row for probability statements
    # a variant used at every origin, no per-origin choice (e.g. POOLED_VOL: always vol-scaled)
    fixed_variant: str | None = None


class PassThroughRegressor(RegressorMixin, BaseEstimator):
    """A prefit 'model' whose prediction is the point forecast carried in X[:, 0].

    It lets MAPIE calibrate on past walk-forward residuals without refitting anything.
    """

    def fit(self, X: Any, y: Any = None) -> PassThroughRegressor:
        self.n_features_in_ = np.asarray(X).reshape(len(X), -1).shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=float).reshape(len(X), -1)[:, 0]


_PASS_THROUGH = PassThroughRegressor().fit(np.zeros((1, 1)))


def conformal_interval(
    calib_forecast: np.ndarray,
    calib_actual: np.ndarray,
    forecast: float,
    levels: tuple[float, ...] = LEVELS,
) -> tuple[np.ndarray, np.ndarray]:
    """MAPIE split-conformal bounds around `forecast`, calibrated on (forecast, actual) pairs.

    Returns (lower, upper), one entry per confidence level, from asymmetric (signed) residual
    quantiles with MAPIE's finite-sample correction.
    """
    mapie = SplitConformalRegressor(
        estimator=_PASS_THROUGH,
        confidence_level=list(levels),
        conformity_score=AbsoluteConformityScore(sym=False),
        prefit=True,
    )
    mapie.conformalize(np.asarray(calib_forecast, float).reshape(-1, 1), np.asarray(calib_actual))
    _, intervals = mapie.predict_interval(np.array([[forecast]], dtype=float))
    return intervals[0, 0, :], intervals[0, 1, :]


def _attach_context(forecasts: pl.DataFrame, context: pl.DataFrame | None) -> pl.DataFrame:
    """Give every row a `regime` (str, null if unknown) and `vol_forecast` (float, null);
    columns already on the forecasts win over the context's."""
    frame = forecasts.with_columns(pl.col("origin").cast(pl.Date))
    extra = normalise_context(context)
    if extra is not None:
        keys = ["horizon", "origin"] if "horizon" in extra.columns else ["origin"]
        extra = extra.select(keys + [c for c in extra.columns if c not in frame.columns])
        frame = frame.join(extra, on=keys, how="left", maintain_order="left")
    if "regime" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Utf8).alias("regime"))
    if "vol_forecast" not in frame.columns:
        vol = next((c for c in VOL_COLUMNS if c in frame.columns), None)
        value = pl.col(vol).cast(pl.Float64) if vol else pl.lit(None, dtype=pl.Float64)
        frame = frame.with_columns(value.alias("vol_forecast"))
    return frame


@dataclass
class _Group:
    """One (horizon, model) series as arrays, one row per origin."""

    f: np.ndarray  # forecast log return
    y: np.ndarray  # actual log return (NaN unknown)
    regime: np.ndarray  # object array of str | None
    vol: np.ndarray  # vol forecast (NaN unknown)
    order: np.ndarray  # rows by target date
    resolved: np.ndarray  # rows (in order) with target_date <= origin

    def calibration_rows(self, i: int, variant: str, cfg: ConformalConfig) -> np.ndarray | None:
        """Rows whose residual may calibrate origin i under `variant`, or None if too few."""
        rows = self.order[: self.resolved[i]]
        rows = rows[np.isfinite(self.y[rows]) & np.isfinite(self.f[rows])]
        if variant in (REGIME, REGIME_VOL):
            if self.regime[i] is None:
                return None
            rows = rows[self.regime[rows] == self.regime[i]]
            if len(rows) < cfg.min_per_regime:
                return None
        if variant in (POOLED_VOL, REGIME_VOL):
            if not (np.isfinite(self.vol[i]) and self.vol[i] > 0):
                return None
            rows = rows[np.isfinite(self.vol[rows]) & (self.vol[rows] > 0)]
        return rows if len(rows) >= cfg.min_calibration else None

    def scales(self, i: int, rows: np.ndarray, variant: str) -> tuple[np.ndarray, float]:
        if variant in (POOLED_VOL, REGIME_VOL):
            return self.vol[rows], float(self.vol[i])
        return np.ones(len(rows)), 1.0


def _zone_logrets(group: _Group, i: int, variant: str, cfg: ConformalConfig) -> np.ndarray | None:
    """[lo90, p10, p30, p50, p70, p90, hi90] in log-return space at origin i, or None."""
    rows = group.calibration_rows(i, variant, cfg)
    if rows is None or not np.isfinite(group.f[i]):
        return None
    scale_rows, scale_now = group.scales(i, rows, variant)
    x_cal, y_cal = group.f[rows] / scale_rows, group.y[rows] / scale_rows
    lower, upper = conformal_interval(x_cal, y_cal, group.f[i] / scale_now)
    p50 = group.f[i] / scale_now + np.median(y_cal - x_cal)
    scaled = np.array([lower[2], lower[1], lower[0], p50, upper[0], upper[1], upper[2]])
    return scaled * scale_now


def _cdf_knots(group: _Group, i: int, variant: str, zone: np.ndarray, cfg: ConformalConfig):
    """Knots (log return, probability) of the conformal CDF F(r_(k)) = k/(n+1) of the residuals,
    thinned to max_cdf_knots but keeping the zone's own quantiles; linear tails of one mean
    spacing beyond the extreme residuals reach 0 and 1."""
    rows = group.calibration_rows(i, variant, cfg)
    scale_rows, scale_now = group.scales(i, rows, variant)
    residuals = np.sort((group.y[rows] - group.f[rows]) / scale_rows)
    n = len(residuals)
    probs = np.arange(1, n + 1) / (n + 1)
    keep = np.unique(np.round(np.linspace(0, n - 1, min(n, cfg.max_cdf_knots))).astype(int))
    zone_residuals = zone / scale_now - group.f[i] / scale_now
    spacing = (residuals[-1] - residuals[0]) / max(n - 1, 1)
    x = np.concatenate(
        [[residuals[0] - spacing], residuals[keep], zone_residuals, [residuals[-1] + spacing]]
    )
    p = np.concatenate([[0.0], probs[keep], np.interp(zone_residuals, residuals, probs), [1.0]])
    idx = np.argsort(x, kind="stable")
    x, p = x[idx], np.maximum.accumulate(p[idx])
    return (group.f[i] + scale_now * x).tolist(), p.tolist()


def _hits(zones: list[np.ndarray | None], y: np.ndarray) -> np.ndarray:
    """(n, 3) hits of the 40/80/90% intervals per origin, NaN where no zone or no actual.
    A zone is [lo90, p10, p30, p50, p70, p90, hi90] in log returns."""
    out = np.full((len(zones), len(LEVELS)), np.nan)
    for s, zone in enumerate(zones):
        if zone is not None and np.isfinite(y[s]):
            out[s] = (zone[[2, 1, 0]] <= y[s]) & (y[s] <= zone[[4, 5, 6]])
    return out


def _neighbourhood(group: _Group, i: int, cfg: ConformalConfig) -> np.ndarray:
    """Resolved earlier origins like origin i: same regime, then same vol tercile, if populous."""
    rows = group.order[: group.resolved[i]]
    rows = rows[np.isfinite(group.y[rows])]
    if group.regime[i] is not None:
        same = rows[group.regime[rows] == group.regime[i]]
        if len(same) >= cfg.min_selection:
            rows = same
    if np.isfinite(group.vol[i]):
        vols = group.vol[rows]
        finite = rows[np.isfinite(vols)]
        if len(finite) >= cfg.min_selection:
            cuts = np.quantile(group.vol[finite], [1 / 3, 2 / 3])
            bucket = np.searchsorted(cuts, group.vol[i])
            same = finite[np.searchsorted(cuts, group.vol[finite]) == bucket]
            if len(same) >= cfg.min_selection:
                rows = same
    return rows


def _choose_variant(group: _Group, i: int, zones: dict, hits: dict, cfg: ConformalConfig) -> str:
    """Pooled unless another variant's coverage error on comparable earlier origins is lower by
    more than the tolerance (largest improvement wins)."""
    if zones[POOLED][i] is None:
        return INSUFFICIENT
    rows = _neighbourhood(group, i, cfg)
    nominal = np.asarray(LEVELS)
    best, best_gain = POOLED, cfg.coverage_tolerance
    pooled_ok = np.isfinite(hits[POOLED][rows, 0])
    for variant in cfg.variants:
        if variant == POOLED or zones[variant][i] is None:
            continue
        common = rows[pooled_ok & np.isfinite(hits[variant][rows, 0])]
        if len(common) < cfg.min_selection:
            continue
        err_pooled = np.abs(hits[POOLED][common].mean(axis=0) - nominal).mean()
        err_variant = np.abs(hits[variant][common].mean(axis=0) - nominal).mean()
        if err_pooled - err_variant > best_gain:
            best, best_gain = variant, err_pooled - err_variant
    return best


def _group_zones(frame: pl.DataFrame, cfg: ConformalConfig) -> pl.DataFrame:
    frame = frame.sort("origin")
    price = frame["price"].cast(pl.Float64).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.log(frame["actual"].cast(pl.Float64).to_numpy() / price)
    target_days = day_numbers(frame["target_date"])
    order = np.argsort(target_days, kind="stable")
    group = _Group(
        f=frame["forecast_logret"].cast(pl.Float64).to_numpy().astype(float),
        y=y,
        regime=np.asarray(frame["regime"].to_list(), dtype=object),
        vol=frame["vol_forecast"].cast(pl.Float64).fill_null(np.nan).to_numpy().astype(float),
        order=order,
        resolved=np.searchsorted(target_days[order], day_numbers(frame["origin"]), side="right"),
    )
    n = frame.height
    overlap = target_overlap(day_numbers(frame["origin"]), target_days)
    fixed = cfg.fixed_variant
    if fixed is not None and fixed not in VARIANTS:
        raise ValueError(f"fixed_variant must be one of {VARIANTS}, got {fixed!r}")
    variants = [fixed] if fixed is not None else list(dict.fromkeys((POOLED, *cfg.variants)))
    zones = {v: [_zone_logrets(group, i, v, cfg) for i in range(n)] for v in variants}
    hits = {v: _hits(zs, y) for v, zs in zones.items()}
    cfg_variants = replace(cfg, variants=tuple(variants))
    chosen, n_cal, values, cdf_x, cdf_p = [], [], np.full((n, len(ZONE_COLUMNS)), np.nan), [], []
    for i in range(n):
        if fixed is not None:
            variant = fixed if zones[fixed][i] is not None else INSUFFICIENT
        else:
            variant = _choose_variant(group, i, zones, hits, cfg_variants)
        chosen.append(variant)
        if variant == INSUFFICIENT:
            known = group.order[: group.resolved[i]]
            n_cal.append(int(np.isfinite(y[known] + group.f[known]).sum()))
            cdf_x.append(None)
            cdf_p.append(None)
            continue
        zone = zones[variant][i]
        values[i] = price[i] * np.exp(zone)
        n_cal.append(len(group.calibration_rows(i, variant, cfg_variants)))
        x, p = _cdf_knots(group, i, variant, zone, cfg_variants)
        cdf_x.append(x)
        cdf_p.append(p)
    return frame.with_columns(
        pl.Series("calibration", chosen, dtype=pl.Utf8),
        pl.Series("n_calibration", n_cal, dtype=pl.Int64),
        # overlapping targets: the residuals hold far fewer independent outcomes than rows
        (pl.Series(n_cal, dtype=pl.Float64) / overlap).alias("n_calibration_independent"),
        *[pl.Series(name, values[:, j], dtype=pl.Float64) for j, name in enumerate(ZONE_COLUMNS)],
        pl.Series("cdf_logret", cdf_x, dtype=pl.List(pl.Float64)),
        pl.Series("cdf_prob", cdf_p, dtype=pl.List(pl.Float64)),
    ).with_columns(pl.col(ZONE_COLUMNS).fill_nan(None))


def conformal_zones(
    forecasts: pl.DataFrame,
    context: pl.DataFrame | None = None,
    config: ConformalConfig | None = None,
) -> pl.DataFrame:
    """Walk-forward target zones for oof-shaped forecasts (e.g. the ensemble's), per horizon and
    model: the input columns plus regime, vol_forecast, calibration (variant used or
    "insufficient"), n_calibration (residuals used) and n_calibration_independent (the same
    divided by the overlap of target windows), lo90/p10/p30/p50/p70/p90/hi90 (price levels)
    and the CDF knots (cdf_logret, cdf_prob) behind `probability_between`."""
    cfg = config or ConformalConfig()
    required = ("horizon", "model", "origin", "target_date", "price", "actual", "forecast_logret")
    missing = [c for c in required if c not in forecasts.columns]
    if missing:
        raise ValueError(f"forecasts are missing column(s) {missing}")
    frame = _attach_context(forecasts, context)
    parts = [
        _group_zones(part, cfg)
        for _, part in frame.group_by(["horizon", "model"], maintain_order=True)
    ]
    return pl.concat(parts, how="vertical_relaxed")


# ----------------------------------------------------------------------------- probabilities


def _as_row(zone_row: Mapping[str, Any] | pl.DataFrame) -> Mapping[str, Any]:
    if isinstance(zone_row, pl.DataFrame):
        if zone_row.height != 1:
            raise ValueError(f"expected one zone row, got {zone_row.height}")
        return zone_row.row(0, named=True)
    return zone_row


def probability_between(
    lo_price: float, hi_price: float, zone_row: Mapping[str, Any] | pl.DataFrame
) -> float:
    """P(lo <= price at target <= hi) from the row's calibrated (conformal) residual CDF.

    Consistent with the zone: the 90% band gets ≈ 0.90, P10..P90 ≈ 0.80, P30..P70 ≈ 0.40 (a little
    more, by at most 2/(n+1): conformal quantiles are conservative).
    """
    row = _as_row(zone_row)
    if row.get("cdf_logret") is None:
        raise ValueError("this row has no calibrated zone (too little history)")
    if not (0 < lo_price <= hi_price):
        raise ValueError(f"need 0 < lo <= hi, got lo={lo_price}, hi={hi_price}")
    x = np.asarray(row["cdf_logret"], dtype=float)
    p = np.asarray(row["cdf_prob"], dtype=float)
    price = float(row["price"])
    bounds = np.log(np.array([lo_price, hi_price]) / price)
    lo_p, hi_p = np.interp(bounds, x, p, left=0.0, right=1.0)
    return float(min(max(hi_p - lo_p, 0.0), 1.0))


def probability_statement(
    row: Mapping[str, Any] | pl.DataFrame,
    lo: float,
    hi: float,
    target_date: date | None = None,
    *,
    symbol: str = "ZL",
    unit: str = "c/lb",
) -> str:
    """E.g. "72% probability ZL is between 41.50 and 44.50 c/lb on 2024-07-19"."""
    row = _as_row(row)
    when = target_date if target_date is not None else row["target_date"]
    percent = round(100 * probability_between(lo, hi, row))
    return f"{percent}% probability {symbol} is between {lo:.2f} and {hi:.2f} {unit} on {when}"


def default_band(
    row: Mapping[str, Any] | pl.DataFrame,
    *,
    step: float = 0.5,
    target: tuple[float, float] = (0.60, 0.75),
) -> tuple[float, float, float]:
    """The narrowest band on a `step` grid (half-cents) around P50 holding `target` probability:
    returns (lo, hi, probability). Falls back to the narrowest band holding >= target[0]."""
    row = _as_row(row)
    p50 = float(row["p50"])
    lows = np.arange(math.floor(float(row["lo90"]) / step), math.floor(p50 / step) + 1) * step
    highs = np.arange(math.ceil(p50 / step), math.ceil(float(row["hi90"]) / step) + 1) * step
    lows = lows[lows > 0]
    best: tuple[float, float, float] | None = None
    fallback: tuple[float, float, float] | None = None
    for lo in lows:
        for hi in highs:
            if hi <= lo:
                continue
            prob = probability_between(lo, hi, row)
            key = (hi - lo, abs(prob - sum(target) / 2))
            if target[0] <= prob <= target[1]:
                if best is None or key < (best[1] - best[0], abs(best[2] - sum(target) / 2)):
                    best = (float(lo), float(hi), prob)
            elif prob >= target[0] and (fallback is None or hi - lo < fallback[1] - fallback[0]):
                fallback = (float(lo), float(hi), prob)
    chosen = best or fallback
    if chosen is None:
        lo, hi = float(row["lo90"]), float(row["hi90"])
        chosen = (lo, hi, probability_between(lo, hi, row))
    return chosen


def default_statement(row: Mapping[str, Any] | pl.DataFrame, **kwargs: Any) -> str:
    """A statement for the narrowest half-cent band around P50 holding about 60-75%."""
    lo, hi, _ = default_band(row)
    return probability_statement(row, lo, hi, **kwargs)


# ----------------------------------------------------------------------------- coverage


def _independent_outcomes(origins: list[date], targets: list[date]) -> int:
    """Greedy count of non-overlapping (origin, target] windows: ≈ span_of_origins / h + 1."""
    count, last_end = 0, None
    for origin, target in sorted(zip(origins, targets, strict=True)):
        if last_end is None or origin >= last_end:
            count += 1
            last_end = target
    return count


COVERAGE_INTERVAL_LEVEL = 0.95  # the confidence of every coverage interval the platform reports


def coverage_interval(
    coverage: float, n_effective: int, level: float = COVERAGE_INTERVAL_LEVEL
) -> tuple[float, float]:
    """Wilson score interval for a coverage rate observed on `n_effective` independent
    outcomes (overlapping targets counted once per non-overlapping window, never more).

    Binomial on the effective sample size, not on the row count: daily or closely spaced
    origins with long horizons share most of their target windows, so each row adds little
    evidence. (nan, nan) without evidence (n_effective < 1 or coverage undefined).
    """
    if not (n_effective >= 1 and math.isfinite(coverage)):
        return (math.nan, math.nan)
    from scipy.stats import norm  # heavy: delayed (scipy.stats)

    z = float(norm.ppf(0.5 + level / 2))
    n = float(n_effective)
    p = min(max(coverage, 0.0), 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def coverage_report(zones: pl.DataFrame) -> pl.DataFrame:
    """Empirical coverage (40/80/90%) and mean width (% of price) per horizon and per regime
    ("all" included), on scored origins with a known actual, with the effective number of
    independent outcomes: overlapping targets (long horizons) make coverage far less certain
    than the row count suggests, and the `note` says so."""
    frame = zones.filter(pl.col("actual").is_not_null() & pl.col("p10").is_not_null())
    if "role" in frame.columns:
        frame = frame.filter(pl.col("role") == "scored")
    frame = frame.with_columns(
        pl.col("regime").fill_null("unknown"),
        pl.col("actual").is_between(pl.col("p30"), pl.col("p70")).alias("hit40"),
        pl.col("actual").is_between(pl.col("p10"), pl.col("p90")).alias("hit80"),
        pl.col("actual").is_between(pl.col("lo90"), pl.col("hi90")).alias("hit90"),
        ((pl.col("p90") - pl.col("p10")) / pl.col("price") * 100).alias("w80"),
        ((pl.col("hi90") - pl.col("lo90")) / pl.col("price") * 100).alias("w90"),
    )
    keys = ["horizon", "model"] if "model" in frame.columns else ["horizon"]
    rows = []
    for key, part in frame.group_by(keys, maintain_order=True):
        regimes = sorted(set(part["regime"].unique()) - {"unknown"})
        subsets = [("all", part)] + [(r, part.filter(pl.col("regime") == r)) for r in regimes]
        for regime, sub in subsets:
            n = sub.height
            n_eff = _independent_outcomes(sub["origin"].to_list(), sub["target_date"].to_list())
            cov90 = float(sub["hit90"].mean())
            se90 = math.sqrt(0.9 * 0.1 / max(n_eff, 1))  # at nominal coverage
            overlapping = n_eff < n
            if n_eff < 10:
                note = f"only {n_eff} independent outcomes: coverage is not meaningful"
            elif overlapping:
                note = f"targets overlap: {n} outcomes ≈ {n_eff} independent (±{se90:.0%} on 90%)"
            else:
                note = ""
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "regime": regime,
                    "n_outcomes": n,
                    "n_effective": n_eff,
                    "overlapping": overlapping,
                    "coverage40": float(sub["hit40"].mean()),
                    "coverage80": float(sub["hit80"].mean()),
                    "coverage90": cov90,
                    "coverage90_se": se90,
                    # 95% Wilson interval on the independent outcomes (coverage_interval)
                    "coverage90_lo": coverage_interval(cov90, n_eff)[0],
                    "coverage90_hi": coverage_interval(cov90, n_eff)[1],
                    "width80_pct": float(sub["w80"].mean()),
                    "width90_pct": float(sub["w90"].mean()),
                    "note": note,
                }
            )
    report = pl.DataFrame(rows) if rows else pl.DataFrame()
    if report.height:
        order = {h: k for k, h in enumerate(HORIZONS)}
        report = report.sort(
            pl.col("horizon").replace_strict(order, default=len(order)),
            pl.col("regime") != "all",
            "regime",
        )
    return report
