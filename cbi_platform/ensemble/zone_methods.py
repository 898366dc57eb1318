"""Target zones by several walk-forward methods behind one entry point, their scores and the
pre-registered rule that picks one on the development window.

Every method returns exactly the columns `conformal_zones` returns (input columns + regime,
vol_forecast, calibration, n_calibration, n_calibration_independent, lo90..hi90 as PRICE levels,
cdf_logret / cdf_prob knots), so `probability_between` and `coverage_report` keep working. At
origin t a method sees only what is known at t: residuals / scores of origins s with
target_date(s) <= t, prices up to t, feature rows whose target_date <= t.

Methods (log-return space; f_t = forecast_logret at t, h = horizon in trading days):
- split: today's `conformal_zones` (split conformal on resolved residuals, MAPIE; the pooled /
  regime / vol variant chosen per origin).
- split_vol: the same, vol-scaled at every origin (residuals / GARCH vol forecast, times the
  vol forecast at t), no per-origin choice.
- aci: adaptive conformal inference (Gibbs & Candès 2021) on top of `split`: per central level
  (40/80/90%) alpha_t = alpha + gamma * sum over outcomes resolved by t of (alpha - miss_s),
  miss_s judged with the interval actually issued at s; fixed gamma = 0.02. The zone is the
  split conformal CDF read at alpha_t/2 and 1 - alpha_t/2 (clipped to [0.001, 0.999]).
- history: scores r_s = log(P_{s+h}/P_s) for EVERY past trading day s with s + h <= t; zone =
  f_t + empirical quantiles of (r_s - mean r) (centred on the point forecast: the historical
  drift is removed, the forecast supplies the centre).
- history_vol: the same with r_s standardised by a point-in-time EWMA volatility at s (one-day
  returns up to s, half-life max(10, h) days) and rescaled by the EWMA volatility at t.
- history_vol_mr: history_vol with a mean-reverting volatility term structure (issue 18 §6,
  the repair candidate): both the standardising vol at s and the rescaling vol at t are the
  expected mean one-day vol over the next h days, sqrt(L + (v - L) * g(h)), where v is the
  EWMA variance (as history_vol), L the long-run variance (mean squared one-day return of all
  history up to that day) and g(h) = (1 - phi^h) / (h (1 - phi)) with phi = 0.5^(1/63): a
  deviation of today's variance from the long run halves in a quarter (63 trading days), fixed
  before any number of this method was computed. g is ~0.98 at 1w and ~0.34 at 12m, so the
  1w band is almost history_vol's and the long-horizon band leans on the long-run vol.
- rw_normal: the anchor: sigma of all one-day log returns up to t (ddof 1) * sqrt(h), normal
  quantiles, centred on f_t.
- cqr: conformalised quantile regression (Romano et al. 2019): LightGBM quantile models
  (alphas 0.05/0.1/0.3/0.5/0.7/0.9/0.95, 100 trees, one thread) on the horizon's feature frame,
  trained on rows with target_date <= the fit origin, refit every 10 origins; each central
  level widened by the conformal quantile of the resolved CQR scores max(q_lo - y, y - q_hi).
  Centred on its own median, not on f_t. Cost on the real ZL (161 origins, ~4,000 rows, 2
  shared cores): ~15-17 s per horizon against < 1.5 s for every other method, so it is over
  the pipeline's budget of a few seconds per horizon: a benchmark candidate.

Repair rule for history_vol at long horizons (issue 18 §6), written before any number of
history_vol_mr was computed, on the development window only: on the real ZL cut to its last
3,000 rows (`benchmarks/zone_repair.py`), history_vol_mr replaces history_vol as the protocol's
zone method only if (a) its mean interval score over the 80% and 90% bands, averaged over 3m,
6m and 12m, is lower than history_vol's by more than 1% (the selection rule's tie tolerance),
and (b) at 1w and at 1m its mean interval score is not more than 1% worse. The interval score
judges, so that width cannot buy coverage. Otherwise history_vol stays and the repair is
reported as a candidate. The scored window is computed after the decision and only reported.

Probabilities: every method's CDF knots pass through its zone quantiles at their nominal
probabilities (0.05, 0.10, 0.30, 0.50, 0.70, 0.90, 0.95), so probability statements agree with
the zones. Empirical methods use F(s_(k)) = k / (n + 1) with one-spacing linear tails (as
`conformal_zones`), read by linear interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import polars as pl
from scipy import stats

from cbi_platform.ensemble.combiners import day_numbers, target_overlap
from cbi_platform.ensemble.conformal import (
    INSUFFICIENT,
    POOLED_VOL,
    ZONE_COLUMNS,
    ConformalConfig,
    _attach_context,
    _independent_outcomes,
    conformal_zones,
    coverage_interval,
)
from cbi_platform.ensemble.scoring_rules import interval_score, pinball_loss
from cbi_platform.features.contract import horizon_frame
from cbi_platform.settings import horizon_days

SPLIT, SPLIT_VOL, ACI = "split", "split_vol", "aci"
HISTORY, HISTORY_VOL, RW_NORMAL, CQR = "history", "history_vol", "rw_normal", "cqr"
HISTORY_VOL_MR = "history_vol_mr"
METHODS = (SPLIT, SPLIT_VOL, ACI, HISTORY, HISTORY_VOL, RW_NORMAL, CQR)
# Repair candidates: built by target_zones, but not among the methods the pre-registered
# selection (benchmarks/zones.py) chooses from; only their own rule can adopt them.
CANDIDATE_METHODS = (HISTORY_VOL_MR,)
METHOD_NOTES = (
    "split = conformal_zones today; split_vol = split always vol-scaled (GARCH vol forecast); "
    "aci = adaptive conformal on split, gamma 0.02, delayed feedback (outcomes count once "
    "resolved); history = all past h-day log returns (every trading day), demeaned, centred "
    "on the forecast; history_vol = the same standardised by a point-in-time EWMA vol "
    "(half-life max(10, h) days) and rescaled by the vol at the origin; history_vol_mr = "
    "history_vol with both vols replaced by the expected mean vol over the horizon (deviations "
    "from the long-run vol halve in 63 days); rw_normal = normal "
    "band, sigma of all past daily returns x sqrt(h), centred on the forecast; cqr = LightGBM "
    "quantile regression (7 alphas, 100 trees) refit every 10 origins, conformalised per level "
    "on resolved CQR scores"
)
ZONE_PROBS = np.array([0.05, 0.10, 0.30, 0.50, 0.70, 0.90, 0.95])  # of lo90..hi90
LEVELS = (0.4, 0.8, 0.9)
SELECTION_HORIZONS = ("1w", "1m", "3m", "6m")
TIE_TOLERANCE = 0.01


@dataclass(frozen=True)
class ZoneConfig:
    """Knobs of the zone methods, fixed before any scored-window number was seen."""

    conformal: ConformalConfig = ConformalConfig()
    aci_gamma: float = 0.02
    aci_clip: float = 0.001  # ACI levels read the base CDF within [clip, 1 - clip]
    min_history_scores: int = 250  # h-day returns needed by history / history_vol
    min_daily_returns: int = 60  # one-day returns needed by rw_normal
    ewma_min_halflife: int = 10  # history_vol: EWMA half-life max(this, h) trading days
    ewma_warmup: int = 20  # first returns that seed the EWMA variance
    vol_reversion_halflife: int = 63  # history_vol_mr: days for a vol deviation to halve
    cqr_alphas: tuple[float, ...] = (0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95)
    cqr_refit_every: int = 10  # origins between LightGBM refits (~256 trading days)
    cqr_trees: int = 100
    cqr_min_train: int = 250  # resolved feature rows needed for a fit
    min_calibration: int = 40  # resolved scores needed by cqr (as conformal's min_calibration)
    max_cdf_knots: int = 201


# ----------------------------------------------------------------------------- helpers


def _horizon_days(frame: pl.DataFrame, horizon: str) -> int:
    if "horizon_days" in frame.columns and frame["horizon_days"].null_count() < frame.height:
        return int(frame["horizon_days"].drop_nulls()[0])
    return horizon_days(horizon)  # no horizon_days column: the horizon's own length


def _logret(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    price = frame["price"].cast(pl.Float64).to_numpy().astype(float)
    actual = frame["actual"].cast(pl.Float64).fill_null(np.nan).to_numpy().astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.log(actual / price)
    f = frame["forecast_logret"].cast(pl.Float64).fill_null(np.nan).to_numpy().astype(float)
    return price, f, y


def _resolved_rows(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(order, counts): rows by target date, and per origin how many of them are resolved."""
    target_days = day_numbers(frame["target_date"])
    order = np.argsort(target_days, kind="stable")
    counts = np.searchsorted(target_days[order], day_numbers(frame["origin"]), side="right")
    return order, counts


def _empirical_cdf(sorted_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of F(s_(k)) = k / (n + 1), with linear tails of one mean spacing to 0 and 1."""
    n = len(sorted_scores)
    spacing = (sorted_scores[-1] - sorted_scores[0]) / max(n - 1, 1)
    spacing = spacing if spacing > 0 else max(abs(sorted_scores[0]), 1e-6) * 1e-3
    x = np.concatenate([[sorted_scores[0] - spacing], sorted_scores, [sorted_scores[-1] + spacing]])
    p = np.concatenate([[0.0], np.arange(1, n + 1) / (n + 1), [1.0]])
    return x, p


def _inverse(p_query: np.ndarray, x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Quantiles of a piecewise-linear CDF (p non-decreasing): the left-most x at each level."""
    keep = np.concatenate([[True], np.diff(p) > 0])
    return np.interp(p_query, p[keep], x[keep])


def _knots_through(
    x: np.ndarray, p: np.ndarray, zone: np.ndarray, zone_p: np.ndarray, max_knots: int
) -> tuple[list[float], list[float]]:
    """Thinned CDF knots that pass exactly through the zone points (zone_p at zone)."""
    n = len(x)
    keep = np.unique(np.round(np.linspace(0, n - 1, min(n, max_knots))).astype(int))
    xs = np.concatenate([x[keep], zone])
    ps = np.concatenate([p[keep], zone_p])
    idx = np.lexsort((ps, xs))
    xs, ps = xs[idx], np.maximum.accumulate(ps[idx])
    return xs.tolist(), ps.tolist()


@dataclass
class _Rows:
    """Per-row outputs of a method for one (horizon, model) group, in origin order."""

    zones: np.ndarray  # (n, 7) log returns, NaN where insufficient
    cdf_x: list
    cdf_p: list
    n_cal: np.ndarray
    n_ind: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _Rows:
        return cls(np.full((n, 7), np.nan), [None] * n, [None] * n, np.zeros(n, int), np.zeros(n))

    def set_empirical(self, i: int, center: float, scale: float, scores: np.ndarray, cfg):
        """Zone = center + scale * quantiles of the (sorted) scores at the nominal levels."""
        x, p = _empirical_cdf(scores)
        x = center + scale * x
        zone = _inverse(ZONE_PROBS, x, p)
        self.zones[i] = zone
        self.cdf_x[i], self.cdf_p[i] = _knots_through(x, p, zone, ZONE_PROBS, cfg.max_cdf_knots)


def _finish(frame: pl.DataFrame, rows: _Rows, method: str, price: np.ndarray) -> pl.DataFrame:
    ok = np.all(np.isfinite(rows.zones), axis=1)
    values = np.where(ok[:, None], price[:, None] * np.exp(rows.zones), np.nan)
    return frame.with_columns(
        pl.Series("calibration", np.where(ok, method, INSUFFICIENT).tolist(), dtype=pl.Utf8),
        pl.Series("n_calibration", rows.n_cal.astype(np.int64), dtype=pl.Int64),
        pl.Series("n_calibration_independent", rows.n_ind.astype(float), dtype=pl.Float64),
        *[pl.Series(name, values[:, j], dtype=pl.Float64) for j, name in enumerate(ZONE_COLUMNS)],
        pl.Series(
            "cdf_logret",
            [x if k else None for x, k in zip(rows.cdf_x, ok, strict=True)],
            pl.List(pl.Float64),
        ),
        pl.Series(
            "cdf_prob",
            [p if k else None for p, k in zip(rows.cdf_p, ok, strict=True)],
            pl.List(pl.Float64),
        ),
    ).with_columns(pl.col(ZONE_COLUMNS).fill_nan(None))


def _history_arrays(history: pl.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """(day numbers, log prices) of the target series, sorted, nulls dropped."""
    if history is None:
        raise ValueError("this method needs `history`: a (date, price) frame of the target")
    date_col = "date" if "date" in history.columns else "origin"
    value_col = "price" if "price" in history.columns else "value"
    h = history.select(pl.col(date_col).cast(pl.Date).alias("d"), pl.col(value_col).alias("v"))
    h = (
        h.drop_nulls()
        .filter(pl.col("v") > 0)
        .sort("d")
        .unique("d", keep="last", maintain_order=True)
    )
    return day_numbers(h["d"]), np.log(h["v"].cast(pl.Float64).to_numpy())


def _origin_index(days: np.ndarray, frame: pl.DataFrame) -> np.ndarray:
    """Index of the last history row dated <= each origin (-1 if none)."""
    return np.searchsorted(days, day_numbers(frame["origin"]), side="right") - 1


# ----------------------------------------------------------------------------- methods


def _term_structure(var: np.ndarray, daily: np.ndarray, h: int, cfg: ZoneConfig) -> np.ndarray:
    """Expected mean one-day variance over the next h days at each row: the long-run variance
    (mean squared one-day return up to the row) plus the EWMA variance's deviation from it,
    decaying with a half-life of `vol_reversion_halflife` days (history_vol_mr)."""
    phi = 0.5 ** (1.0 / cfg.vol_reversion_halflife)
    g = (1 - phi**h) / (h * (1 - phi))
    sq = np.concatenate([[np.nan], np.cumsum(daily**2) / np.arange(1, len(daily) + 1)])
    return sq + (var - sq) * g


def _history_rows(
    frame, h, history, cfg: ZoneConfig, vol_scaled: bool, mean_reverting: bool = False
) -> _Rows:
    days, logp = _history_arrays(history)
    _, f, _ = _logret(frame)
    k = _origin_index(days, frame)
    r = logp[h:] - logp[:-h]  # r[s] = log(P_{s+h} / P_s), known at row s + h
    rows = _Rows.empty(frame.height)
    if vol_scaled:
        daily = np.diff(logp)  # daily[j - 1] is the return into row j
        lam = 0.5 ** (1.0 / max(cfg.ewma_min_halflife, h))
        var = np.full(len(logp), np.nan)
        w = cfg.ewma_warmup
        if len(daily) > w:
            var[w] = np.mean(daily[:w] ** 2)
            for j in range(w + 1, len(logp)):
                var[j] = lam * var[j - 1] + (1 - lam) * daily[j - 1] ** 2
        if mean_reverting:
            var = _term_structure(var, daily, h, cfg)
        sigma = np.sqrt(var)  # sigma[s]: one-day vol from returns up to row s
        with np.errstate(invalid="ignore"):
            z = r / sigma[: len(r)]
    for i in range(frame.height):
        if k[i] < 0 or not np.isfinite(f[i]):
            continue
        last_s = k[i] - h  # s + h <= k
        scores = r[: max(last_s + 1, 0)]
        scale = 1.0
        if vol_scaled:
            scores = z[: max(last_s + 1, 0)]
            scale = float(sigma[k[i]]) if np.isfinite(sigma[k[i]]) else math.nan
            if not (scale > 0):
                continue
        scores = scores[np.isfinite(scores)]
        rows.n_cal[i] = len(scores)
        rows.n_ind[i] = len(scores) / h
        if len(scores) < cfg.min_history_scores:
            continue
        rows.set_empirical(i, f[i], scale, np.sort(scores - scores.mean()), cfg)
    return rows


def _rw_normal_rows(frame, h, history, cfg: ZoneConfig) -> _Rows:
    days, logp = _history_arrays(history)
    _, f, _ = _logret(frame)
    k = _origin_index(days, frame)
    daily = np.diff(logp)
    csum, csum2 = (
        np.concatenate([[0.0], np.cumsum(daily)]),
        np.concatenate([[0.0], np.cumsum(daily**2)]),
    )
    grid = np.unique(np.concatenate([np.linspace(0.001, 0.999, 199), ZONE_PROBS]))
    z_grid = stats.norm.ppf(grid)
    rows = _Rows.empty(frame.height)
    for i in range(frame.height):
        m = int(k[i])  # returns into rows 1..m: daily[:m]
        if m < 1 or not np.isfinite(f[i]):
            continue
        rows.n_cal[i] = m
        rows.n_ind[i] = m / h
        if m < cfg.min_daily_returns:
            continue
        var = (csum2[m] - csum[m] ** 2 / m) / (m - 1)
        s = math.sqrt(max(var, 0.0) * h)
        x = f[i] + s * np.concatenate([[-5.0], z_grid, [5.0]])
        p = np.concatenate([[0.0], grid, [1.0]])
        rows.zones[i] = f[i] + s * stats.norm.ppf(ZONE_PROBS)
        rows.cdf_x[i], rows.cdf_p[i] = x.tolist(), p.tolist()
    return rows


def _aci_rows(split: pl.DataFrame, cfg: ZoneConfig) -> _Rows:
    """ACI on the split zones' CDF: per level, alpha_t from outcomes resolved by t only."""
    price, f, y = _logret(split)
    n = split.height
    order, counts = _resolved_rows(split)
    rows = _Rows.empty(n)
    rows.n_cal = split["n_calibration"].fill_null(0).to_numpy().astype(int)
    rows.n_ind = split["n_calibration_independent"].fill_null(0.0).to_numpy().astype(float)
    nominal = 1.0 - np.asarray(LEVELS)  # alpha per level: 0.6, 0.2, 0.1
    miss = np.full((n, len(LEVELS)), np.nan)  # miss of the interval issued at s
    cdf_x, cdf_p = split["cdf_logret"].to_list(), split["cdf_prob"].to_list()
    for i in range(n):  # origins ascending; anything resolved at i has a smaller origin
        if cdf_x[i] is None:
            continue
        known = order[: counts[i]]
        known = known[np.isfinite(miss[known, 0])]
        alpha = nominal + cfg.aci_gamma * (nominal[None, :] - miss[known]).sum(axis=0)
        lo = np.clip(alpha / 2, cfg.aci_clip, 0.5)  # 40, 80, 90 lower levels
        # nested: the 90% band holds the 80% one, which holds the 40% one
        lo = np.minimum.accumulate(lo)
        levels = np.concatenate([lo[::-1], [0.5], 1.0 - lo])  # [a90/2, a80/2, a40/2, .5, ...]
        x, p = np.asarray(cdf_x[i]), np.asarray(cdf_p[i])
        zone = _inverse(levels, x, p)
        rows.zones[i] = zone
        if np.isfinite(y[i]):
            inside = (zone[[2, 1, 0]] <= y[i]) & (y[i] <= zone[[4, 5, 6]])
            miss[i] = 1.0 - inside
        # output CDF: base probabilities mapped so that the zone points carry nominal levels
        base_levels = np.concatenate([[0.0], levels, [1.0]])
        target_levels = np.concatenate([[0.0], ZONE_PROBS, [1.0]])
        keep = np.concatenate([[True], np.diff(base_levels) > 0])
        mapped = np.interp(p, base_levels[keep], target_levels[keep])
        rows.cdf_x[i], rows.cdf_p[i] = _knots_through(
            x, mapped, zone, ZONE_PROBS, cfg.max_cdf_knots
        )
    return rows


def _features_for(features, horizon: str) -> pl.DataFrame:
    if features is None:
        raise ValueError("cqr needs `features`: the horizon's feature-contract frame")
    if isinstance(features, dict):
        features = features[horizon]
    if "horizon" in features.columns and features["horizon"].n_unique() > 1:
        features = horizon_frame(features, horizon)
    return features.sort("date")


def _fit_quantiles(X: np.ndarray, y: np.ndarray, cfg: ZoneConfig) -> list:
    import lightgbm as lgb  # heavy: delayed

    boosters = []
    for alpha in cfg.cqr_alphas:
        params = {
            "objective": "quantile",
            "alpha": alpha,
            "learning_rate": 0.05,
            "num_leaves": 15,
            "min_data_in_leaf": 50,
            "feature_fraction": 0.8,
            "bagging_fraction": 1.0,
            "max_bin": 63,
            "num_threads": 1,
            "deterministic": True,
            "force_row_wise": True,
            "seed": 0,
            "verbosity": -1,
        }
        data = lgb.Dataset(X, y, params={"max_bin": 63, "verbosity": -1})
        boosters.append(lgb.train(params, data, num_boost_round=cfg.cqr_trees))
    return boosters


def _cqr_rows(frame: pl.DataFrame, horizon: str, features, cfg: ZoneConfig) -> _Rows:
    feats = _features_for(features, horizon)
    names = [c for c in feats.columns if c.startswith("f_")]
    X_all = feats.select(names).cast(pl.Float64).fill_null(np.nan).to_numpy()
    y_all = feats["target_logret"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    tdays = day_numbers(feats["target_date"])
    fdays = day_numbers(feats["date"])
    odays = day_numbers(frame["origin"])
    row_of = {int(d): j for j, d in enumerate(fdays)}
    _, _, y = _logret(frame)
    n = frame.height
    alphas = np.asarray(cfg.cqr_alphas)
    preds = np.full((n, len(alphas)), np.nan)
    rows_at = np.array([row_of.get(int(d), -1) for d in odays])
    boosters = None
    for start in range(0, n, cfg.cqr_refit_every):  # refit here on rows resolved by this origin
        usable = (tdays <= odays[start]) & np.isfinite(y_all)
        if usable.sum() >= cfg.cqr_min_train:
            boosters = _fit_quantiles(X_all[usable], y_all[usable], cfg)
        block = np.arange(start, min(start + cfg.cqr_refit_every, n))
        block = block[rows_at[block] >= 0]
        if boosters is None or not len(block):
            continue
        X_block = X_all[rows_at[block]]
        q = np.column_stack([b.predict(X_block, num_threads=1) for b in boosters])
        preds[block] = np.sort(q, axis=1)  # rearrangement: no crossing quantiles
    idx = {a: int(np.argmin(np.abs(alphas - a))) for a in (0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95)}
    lo_hi = [(idx[0.3], idx[0.7]), (idx[0.1], idx[0.9]), (idx[0.05], idx[0.95])]
    scores = np.full((n, 3), np.nan)
    for lvl, (a, b) in enumerate(lo_hi):
        scores[:, lvl] = np.maximum(preds[:, a] - y, y - preds[:, b])
    order, counts = _resolved_rows(frame)
    overlap = target_overlap(odays, day_numbers(frame["target_date"]))
    rows = _Rows.empty(n)
    for i in range(n):
        known = order[: counts[i]]
        known = known[np.isfinite(scores[known, 0])]
        rows.n_cal[i] = len(known)
        rows.n_ind[i] = len(known) / overlap
        if len(known) < cfg.min_calibration or not np.all(np.isfinite(preds[i])):
            continue
        m = len(known)
        adj = []
        for lvl, level in enumerate(LEVELS):
            rank = min(math.ceil((m + 1) * level), m)  # conformal quantile (capped at the max)
            adj.append(np.sort(scores[known, lvl])[rank - 1])
        (a40, b40), (a80, b80), (a90, b90) = lo_hi
        zone = np.array(
            [
                preds[i, a90] - adj[2],
                preds[i, a80] - adj[1],
                preds[i, a40] - adj[0],
                preds[i, idx[0.5]],
                preds[i, b40] + adj[0],
                preds[i, b80] + adj[1],
                preds[i, b90] + adj[2],
            ]
        )
        zone[:4] = np.minimum.accumulate(zone[:4][::-1])[::-1]  # nested, ordered
        zone[3:] = np.maximum.accumulate(zone[3:])
        rows.zones[i] = zone
        tail = max((zone[6] - zone[0]) / 2, 1e-9)
        x = np.concatenate([[zone[0] - tail], zone, [zone[6] + tail]])
        p = np.concatenate([[0.0], ZONE_PROBS, [1.0]])
        rows.cdf_x[i], rows.cdf_p[i] = x.tolist(), p.tolist()
    return rows


# ----------------------------------------------------------------------------- entry point


def target_zones(
    forecasts: pl.DataFrame,
    context: pl.DataFrame | None = None,
    method: str = SPLIT,
    *,
    history: pl.DataFrame | None = None,
    features: pl.DataFrame | dict[str, pl.DataFrame] | None = None,
    config: ZoneConfig | None = None,
) -> pl.DataFrame:
    """Walk-forward target zones by `method` (see METHODS and the module docstring), with the
    columns of `conformal_zones`. `history`: (date, price) of the target series (history,
    history_vol, rw_normal); `features`: the horizon's feature-contract frame, or a dict of them
    by horizon (cqr); `context`: regime and vol forecast per origin (split, split_vol, aci)."""
    cfg = config or ZoneConfig()
    if method not in METHODS + CANDIDATE_METHODS:
        raise ValueError(
            f"unknown zone method {method!r}; choose from {METHODS + CANDIDATE_METHODS}"
        )
    required = ("horizon", "model", "origin", "target_date", "price", "actual", "forecast_logret")
    missing = [c for c in required if c not in forecasts.columns]
    if missing:
        raise ValueError(f"forecasts are missing column(s) {missing}")
    if method == SPLIT:
        return conformal_zones(forecasts, context, cfg.conformal)
    if method == SPLIT_VOL:
        return conformal_zones(forecasts, context, replace(cfg.conformal, fixed_variant=POOLED_VOL))
    if method == ACI:
        split = conformal_zones(forecasts, context, cfg.conformal)
        parts = []
        for _, part in split.group_by(["horizon", "model"], maintain_order=True):
            part = part.sort("origin")
            rows = _aci_rows(part, cfg)
            price, _, _ = _logret(part)
            base = part.drop(
                "calibration",
                "n_calibration",
                "n_calibration_independent",
                *ZONE_COLUMNS,
                "cdf_logret",
                "cdf_prob",
            )
            parts.append(_finish(base, rows, ACI, price))
        return pl.concat(parts, how="vertical_relaxed")
    frame = _attach_context(forecasts, context)
    parts = []
    for (horizon, _), part in frame.group_by(["horizon", "model"], maintain_order=True):
        part = part.sort("origin")
        h = _horizon_days(part, horizon)
        if method in (HISTORY, HISTORY_VOL, HISTORY_VOL_MR):
            rows = _history_rows(
                part,
                h,
                history,
                cfg,
                vol_scaled=method != HISTORY,
                mean_reverting=method == HISTORY_VOL_MR,
            )
        elif method == RW_NORMAL:
            rows = _rw_normal_rows(part, h, history, cfg)
        else:
            rows = _cqr_rows(part, horizon, features, cfg)
        price, _, _ = _logret(part)
        parts.append(_finish(part, rows, method, price))
    return pl.concat(parts, how="vertical_relaxed")


# ----------------------------------------------------------------------------- scores


def zone_scores(zones: pl.DataFrame, roles: Iterable[str] | None = ("scored",)) -> pl.DataFrame:
    """Per horizon (and model / method where present), on origins whose role is in `roles` (all
    if None) with a known actual and a zone: n, effective independent n, coverage 40/80/90,
    mean widths, the 80% and 90% interval (Winkler) scores and their mean, and the mean pinball
    loss over P10/P30/P50/P70/P90, all in % of the origin price; `coverage_error` = mean
    |coverage - nominal| over the 80% and 90% bands. `coverage80_lo/hi` and `coverage90_lo/hi`:
    the 95% interval of each coverage on the effective sample size (`coverage_interval`)."""
    frame = zones.filter(pl.col("actual").is_not_null() & pl.col("p10").is_not_null())
    if roles is not None and "role" in frame.columns:
        frame = frame.filter(pl.col("role").is_in(list(roles)))
    keys = [c for c in ("horizon", "model", "method") if c in frame.columns]
    rows = []
    for key, part in frame.sort("origin").group_by(keys, maintain_order=True):
        a, p = part["actual"].to_numpy(), part["price"].to_numpy()
        z = {c: part[c].to_numpy() for c in ZONE_COLUMNS}
        cov = {
            lvl: float(np.mean((z[lo] <= a) & (a <= z[hi])))
            for lvl, lo, hi in ((40, "p30", "p70"), (80, "p10", "p90"), (90, "lo90", "hi90"))
        }
        s80 = interval_score(a, z["p10"], z["p90"], 0.2, price=p)
        s90 = interval_score(a, z["lo90"], z["hi90"], 0.1, price=p)
        quantiles = np.column_stack([z[c] for c in ("p10", "p30", "p50", "p70", "p90")])
        n_eff = _independent_outcomes(part["origin"].to_list(), part["target_date"].to_list())
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "n": part.height,
                "n_effective": n_eff,
                "coverage40": cov[40],
                "coverage80": cov[80],
                "coverage80_lo": coverage_interval(cov[80], n_eff)[0],
                "coverage80_hi": coverage_interval(cov[80], n_eff)[1],
                "coverage90": cov[90],
                "coverage90_lo": coverage_interval(cov[90], n_eff)[0],
                "coverage90_hi": coverage_interval(cov[90], n_eff)[1],
                "coverage_error": (abs(cov[80] - 0.8) + abs(cov[90] - 0.9)) / 2,
                "width80_pct": float(np.mean((z["p90"] - z["p10"]) / p) * 100),
                "width90_pct": float(np.mean((z["hi90"] - z["lo90"]) / p) * 100),
                "interval80_pct": s80,
                "interval90_pct": s90,
                "interval_mean_pct": (s80 + s90) / 2,
                "pinball_pct": pinball_loss(a, quantiles, (0.1, 0.3, 0.5, 0.7, 0.9), price=p),
            }
        )
    return pl.DataFrame(rows) if rows else pl.DataFrame()


# ----------------------------------------------------------------------------- selection


def choose_zone_method(dev_table: pl.DataFrame) -> tuple[str, str]:
    """The pre-registered rule (written before any scored-window number was seen).

    Input: `zone_scores` on the DEVELOPMENT window only (one row per horizon and method; the
    scored window must never be passed here). Among methods with a finite score at each of the
    horizons 1w, 1m, 3m, 6m (12m is excluded: too few independent outcomes), the score is the
    mean interval (Winkler) score over the 80% and 90% levels and those four horizons (eight
    numbers, % of price). The lowest score wins; methods within 1% of it (score <= best * 1.01)
    are tied, and the tie goes to the smallest mean absolute coverage error (|coverage80 - 0.8|
    and |coverage90 - 0.9| over the same eight cells), then the lower score, then the name.
    Returns (method, reason).
    """
    table = dev_table.filter(pl.col("horizon").is_in(list(SELECTION_HORIZONS)))
    summary = []
    for (method,), part in table.group_by(["method"], maintain_order=True):
        present = set(part["horizon"].to_list())
        values = part.select("interval80_pct", "interval90_pct").to_numpy().astype(float)
        if present != set(SELECTION_HORIZONS) or part.height != len(SELECTION_HORIZONS):
            continue
        if not np.all(np.isfinite(values)):
            continue
        cov = part.select(
            (pl.col("coverage80") - 0.8).abs(), (pl.col("coverage90") - 0.9).abs()
        ).to_numpy()
        summary.append((method, float(values.mean()), float(cov.mean())))
    if not summary:
        raise ValueError("no method has development scores at every selection horizon")
    best_score = min(s for _, s, _ in summary)
    tied = [row for row in summary if row[1] <= best_score * (1 + TIE_TOLERANCE)]
    method, score, err = min(tied, key=lambda r: (r[2], r[1], r[0]))
    ranking = ", ".join(f"{m} {s:.3f}" for m, s, _ in sorted(summary, key=lambda r: r[1]))
    tie_note = (
        f"tied within 1% of the best ({', '.join(m for m, _, _ in tied)}): smallest coverage "
        f"error wins ({err:.3f})"
        if len(tied) > 1
        else f"no other method within 1% (coverage error {err:.3f})"
    )
    reason = (
        f"{method}: lowest mean interval score over 80/90% and 1w/1m/3m/6m on the development "
        f"window ({score:.3f}% of price); {tie_note}. Ranking: {ranking}."
    )
    return method, reason
