"""Drift monitor: inputs, predictions and drivers of one horizon's model, judged against their own
recent past, reported as one `DRIFT` condition per horizon.

Three parts, each plain numpy/polars/scipy (no Dagster):

- **Feature drift** (`feature_drift`): per feature, the population stability index (`psi`, on
  deciles of the reference) and the two-sample Kolmogorov-Smirnov test (`scipy.stats.ks_2samp`)
  between a reference window (the `reference_rows` rows before the current window) and the
  current window (the last `current_rows` rows; `split_reference_current` cuts them). Nulls and
  non-finite values are ignored; a feature with fewer than `min_rows` values on either side is
  not judged (`drifted` null, `reason` says why). A feature has drifted when BOTH its PSI is at
  least `psi_threshold` AND its KS p-value is below `ks_pvalue`: each alone is unreliable here.
  PSI of a 63-row sample is noisy (for identical distributions its expectation is about
  (bins - 1) * (1/n_current + 1/n_reference) ~ 0.16 with the defaults; measured 0.17, sd 0.09,
  so 10% of pure-noise samples pass 0.25), and the KS p-value assumes independent rows, which
  autocorrelated features (moving averages, volatilities) are not, so it is far too small;
  requiring both cuts the false alarms of each.
- **Prediction drift** (`prediction_drift`): the same PSI and KS on the model's predictions,
  plus the mean shift in reference standard deviations (evidence). Pass predicted returns or
  changes, not price levels (levels drift with the market by construction).
- **Driver drift** (`driver_rank_drift`): SHAP-style contributions (as_of, feature,
  contribution) are grouped into consecutive blocks of `driver_window` forecast dates, ending at
  the latest; features are ranked by mean |contribution| per block. Each block reports its top
  `top_k` features, the share of them that were also in the previous block's top `top_k`
  (`overlap`) and the Spearman rank correlation of all features' importances with the previous
  block (`rank_corr`). Breached (`driver_drift_breached`) when the latest block's overlap is
  below `min_rank_overlap` or its rank correlation below `min_rank_corr`: what drives the
  forecasts has changed, so the model may be leaning on a relation that no longer holds.

`drift_conditions` combines them into one `Condition` "drift/<horizon>", firing when the share
of judged features that drifted is at least `min_drifted_share`, OR the predictions drifted, OR
the drivers' ranking broke.

Settings (`DriftSettings`, loaded from configuration by the caller; defaults and why):

    ======================  =====  ==========================================================
    setting                 dflt   why
    ======================  =====  ==========================================================
    `psi_threshold`         0.25   the conventional "major shift" level of PSI (0.1-0.25 is
                                   "moderate"); a 0.5 sd mean shift of a normal feature gives
                                   ~0.23 in large samples. With the KS rule, iid normal noise
                                   (756 vs 63 rows) is called drifted in ~0.6% of samples
    `psi_bins`              10     deciles of the reference: the usual PSI binning; features
                                   with <= 10 distinct reference values are binned by value
    `ks_pvalue`             0.01   strict, because the rows are autocorrelated (see above)
    `min_drifted_share`     0.25   a quarter of the judged features: one or two features
                                   drifting is normal in a market (a level, a volatility);
                                   a quarter means the inputs as a whole have moved
    `reference_rows`        756    three years of trading days: spans several market states,
                                   so "normal" is not one quiet year
    `current_rows`          63     one quarter: enough rows for PSI with 10 bins (>= 6 a bin)
    `min_rows`              20     below this a feature's PSI/KS are not judged
    `top_k`                 5      the drivers a user sees in the forecast's explanation
    `driver_window`         21     one month of daily forecasts per block: averages out the
                                   day-to-day jitter of per-forecast contributions
    `min_rank_overlap`      0.4    fewer than 2 of the previous top 5 still in the top 5
    `min_rank_corr`         0.3    the importance ranking of all features has lost most of
                                   its relation to the previous month's. A judgement, not a
                                   measurement: there is no history of contributions yet, so
                                   recalibrate both driver thresholds once there is
    `evidence_features`     5      how many features the evidence lists
    ======================  =====  ==========================================================
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from cbi_platform.conditions import DRIFT, Condition

PSI_EPSILON = 1e-4  # floor of a bin's share, so an empty bin does not give log(0)
FEATURE_DRIFT_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.Utf8(),
    "psi": pl.Float64(),
    "ks_stat": pl.Float64(),
    "ks_pvalue": pl.Float64(),
    "n_reference": pl.Int64(),
    "n_current": pl.Int64(),
    "drifted": pl.Boolean(),
    "reason": pl.Utf8(),
}
DRIVER_DRIFT_SCHEMA: dict[str, pl.DataType] = {
    "window_start": pl.Date(),
    "window_end": pl.Date(),
    "n_days": pl.Int64(),
    "top_features": pl.List(pl.Utf8()),
    "overlap": pl.Float64(),
    "rank_corr": pl.Float64(),
}


@dataclass(frozen=True)
class DriftSettings:
    """Thresholds of the drift monitor (defaults explained in the module docstring)."""

    psi_threshold: float = 0.25
    psi_bins: int = 10
    ks_pvalue: float = 0.01
    min_drifted_share: float = 0.25
    reference_rows: int = 756
    current_rows: int = 63
    min_rows: int = 20
    top_k: int = 5
    driver_window: int = 21
    min_rank_overlap: float = 0.4
    min_rank_corr: float = 0.3
    evidence_features: int = 5

    def __post_init__(self) -> None:
        if self.psi_bins < 2 or self.min_rows < 2 or self.top_k < 1 or self.driver_window < 1:
            raise ValueError("psi_bins and min_rows must be >= 2, top_k and driver_window >= 1")
        if not 0 < self.min_drifted_share <= 1 or not 0 < self.ks_pvalue < 1:
            raise ValueError("min_drifted_share must be in (0, 1] and ks_pvalue in (0, 1)")


def _finite(values: Any) -> np.ndarray:
    """A float array of the finite values (nulls, NaN and +-inf dropped)."""
    if isinstance(values, pl.Series):
        values = values.cast(pl.Float64).drop_nulls().to_numpy()
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _bin_shares(reference: np.ndarray, current: np.ndarray, bins: int) -> tuple:
    """Shares of reference and current in bins cut at the reference's quantiles. A reference
    with at most `bins` distinct values is binned by value (each value a bin, plus the gaps
    between them), so ties and constant features are handled."""
    distinct = np.unique(reference)
    if distinct.size <= bins:
        # bin 2i+1 is exactly distinct[i]; bin 2i is the open gap below it (2n: above all)
        def index(x: np.ndarray) -> np.ndarray:
            pos = np.searchsorted(distinct, x, side="left")
            hit = (pos < distinct.size) & (distinct[np.minimum(pos, distinct.size - 1)] == x)
            return 2 * pos + hit

        n_bins = 2 * distinct.size + 1
    else:
        edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))

        def index(x: np.ndarray) -> np.ndarray:
            return np.searchsorted(edges, x, side="right")

        n_bins = edges.size + 1
    ref = np.bincount(index(reference), minlength=n_bins) / reference.size
    cur = np.bincount(index(current), minlength=n_bins) / current.size
    return ref, cur


def psi(reference: Any, current: Any, bins: int = 10) -> float:
    """Population stability index of `current` against `reference` (arrays or series).

    Bins are the reference's quantiles (deciles by default); each share is floored at
    `PSI_EPSILON`; PSI = sum((cur - ref) * ln(cur / ref)). 0 for identical distributions,
    ~0.1 a moderate and >= 0.25 a major shift. Non-finite values are ignored; NaN when either
    side is empty."""
    ref, cur = _finite(reference), _finite(current)
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    p, q = _bin_shares(ref, cur, bins)
    p = np.maximum(p, PSI_EPSILON)
    q = np.maximum(q, PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def _compare(ref: np.ndarray, cur: np.ndarray, settings: DriftSettings) -> dict[str, Any]:
    """PSI, KS and the drifted verdict of two finite samples (or the reason there is none)."""
    out: dict[str, Any] = {
        "psi": None,
        "ks_stat": None,
        "ks_pvalue": None,
        "n_reference": int(ref.size),
        "n_current": int(cur.size),
        "drifted": None,
        "reason": None,
    }
    short = [
        f"{side} has {n} finite values < min_rows {settings.min_rows}"
        for side, n in (("reference", ref.size), ("current", cur.size))
        if n < settings.min_rows
    ]
    if short:
        out["reason"] = "; ".join(short)
        return out
    ks = stats.ks_2samp(ref, cur)
    out["psi"] = psi(ref, cur, settings.psi_bins)
    out["ks_stat"] = float(ks.statistic)
    out["ks_pvalue"] = float(ks.pvalue)
    out["drifted"] = bool(
        out["psi"] >= settings.psi_threshold and out["ks_pvalue"] < settings.ks_pvalue
    )
    return out


def split_reference_current(
    frame: pl.DataFrame, settings: DriftSettings | None = None, date_column: str = "date"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(reference, current): the last `current_rows` rows by `date_column` are current, the
    `reference_rows` rows before them the reference."""
    settings = settings or DriftSettings()
    ordered = frame.sort(date_column)
    n_cur = min(settings.current_rows, ordered.height)
    current = ordered.tail(n_cur)
    before = ordered.head(ordered.height - n_cur)
    return before.tail(settings.reference_rows), current


def feature_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    features: list[str],
    settings: DriftSettings | None = None,
) -> pl.DataFrame:
    """One row per feature (in the given order): feature, psi, ks_stat, ks_pvalue,
    n_reference, n_current (finite values used), drifted (null when not judged) and reason
    (why not judged: a missing or non-numeric column, or fewer than `min_rows` values)."""
    settings = settings or DriftSettings()
    rows = []
    for name in features:
        missing = [
            side
            for side, df in (("reference", reference), ("current", current))
            if name not in df.columns
        ]
        if missing:
            rows.append({"feature": name, "reason": f"missing from {' and '.join(missing)}"})
            continue
        if not (reference.schema[name].is_numeric() and current.schema[name].is_numeric()):
            rows.append({"feature": name, "reason": "not numeric"})
            continue
        result = _compare(_finite(reference[name]), _finite(current[name]), settings)
        rows.append({"feature": name, **result})
    return pl.DataFrame(rows, schema=FEATURE_DRIFT_SCHEMA)


def prediction_drift(
    reference: np.ndarray, current: np.ndarray, settings: DriftSettings | None = None
) -> dict[str, Any]:
    """PSI, KS, mean shift and verdict for the model's predictions (returns, not levels).

    Keys: psi, ks_stat, ks_pvalue, mean_shift_sd ((mean current - mean reference) / sd of the
    reference; None when that sd is 0), n_reference, n_current, drifted (None when either side
    has fewer than `min_rows` finite values) and reason."""
    settings = settings or DriftSettings()
    ref, cur = _finite(reference), _finite(current)
    out = _compare(ref, cur, settings)
    shift = None
    if ref.size >= 2 and cur.size >= 1:
        sd = float(np.std(ref, ddof=1))
        if sd > 0:
            shift = float((cur.mean() - ref.mean()) / sd)
    out["mean_shift_sd"] = shift
    return out


def driver_rank_drift(
    contributions: pl.DataFrame, settings: DriftSettings | None = None
) -> pl.DataFrame:
    """Per block of `driver_window` consecutive forecast dates (blocks end at the latest date;
    an incomplete oldest block is dropped): window_start, window_end, n_days, top_features
    (the `top_k` features by mean |contribution|, largest first), overlap (share of the
    previous block's top features still in this one) and rank_corr (Spearman correlation of
    every feature's mean |contribution| with the previous block's, a feature absent from a
    block counting 0). overlap and rank_corr are null for the first block."""
    settings = settings or DriftSettings()
    data = contributions.select(
        pl.col("as_of").cast(pl.Date), "feature", pl.col("contribution").cast(pl.Float64)
    ).filter(pl.col("contribution").is_finite())
    dates = data["as_of"].unique().sort()
    n_blocks = dates.len() // settings.driver_window
    if n_blocks == 0:
        return pl.DataFrame(schema=DRIVER_DRIFT_SCHEMA)
    used = dates.tail(n_blocks * settings.driver_window)
    block_of = pl.DataFrame(
        {"as_of": used, "block": np.arange(used.len()) // settings.driver_window}
    )
    importance = (
        data.join(block_of, on="as_of", how="inner")
        .group_by("block", "feature")
        .agg(pl.col("contribution").abs().mean().alias("importance"))
        .pivot(on="block", index="feature", values="importance", sort_columns=True)
        .fill_null(0.0)
        .sort("feature")
    )
    features = importance["feature"].to_list()
    rows, previous = [], None
    for block in range(n_blocks):
        days = block_of.filter(pl.col("block") == block)["as_of"]
        values = importance[str(block)].to_numpy()
        order = sorted(range(len(features)), key=lambda i: (-values[i], features[i]))
        top = [features[i] for i in order[: settings.top_k]]
        overlap = rank_corr = None
        if previous is not None:
            prev_values, prev_top = previous
            overlap = len(set(top) & set(prev_top)) / max(len(prev_top), 1)
            if len(features) >= 2 and np.ptp(values) > 0 and np.ptp(prev_values) > 0:
                rank_corr = float(stats.spearmanr(values, prev_values).statistic)
        rows.append(
            {
                "window_start": days.min(),
                "window_end": days.max(),
                "n_days": days.len(),
                "top_features": top,
                "overlap": overlap,
                "rank_corr": rank_corr,
            }
        )
        previous = (values, top)
    return pl.DataFrame(rows, schema=DRIVER_DRIFT_SCHEMA)


def driver_drift_breached(frame: pl.DataFrame, settings: DriftSettings | None = None) -> bool:
    """True when the latest block's overlap is below `min_rank_overlap` or its rank
    correlation below `min_rank_corr` (False with fewer than two blocks)."""
    settings = settings or DriftSettings()
    if frame.height < 2:
        return False
    last = frame.row(frame.height - 1, named=True)
    low_overlap = last["overlap"] is not None and last["overlap"] < settings.min_rank_overlap
    low_corr = last["rank_corr"] is not None and last["rank_corr"] < settings.min_rank_corr
    return bool(low_overlap or low_corr)


def _num(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    return value


def _feature_evidence(table: pl.DataFrame, settings: DriftSettings) -> dict[str, Any]:
    judged = table.filter(pl.col("drifted").is_not_null())
    n_drifted = int(judged["drifted"].sum())
    share = n_drifted / judged.height if judged.height else None
    top = (
        judged.sort(["drifted", "psi"], descending=True)
        .head(settings.evidence_features)
        .select("feature", "psi", "ks_stat", "ks_pvalue", "drifted")
    )
    return {
        "judged": judged.height,
        "drifted": n_drifted,
        "share": _num(share),
        "not_judged": table.height - judged.height,
        "top": [
            {k: _num(v, 6 if k == "ks_pvalue" else 4) for k, v in r.items()}
            for r in top.iter_rows(named=True)
        ],
    }


def drift_conditions(
    horizon: str,
    as_of: dt.date,
    feature_table: pl.DataFrame | None,
    prediction: dict[str, Any] | None,
    driver_table: pl.DataFrame | None,
    settings: DriftSettings | None = None,
    link: str | None = None,
) -> list[Condition]:
    """One `Condition` "drift/<horizon>" from the three parts' results: `feature_table` from
    `feature_drift`, `prediction` from `prediction_drift`, `driver_table` from
    `driver_rank_drift` (any may be None: not monitored). Fires when the share of judged
    features that drifted is >= `min_drifted_share`, or the predictions drifted, or the driver
    ranking broke. Evidence (JSON-ready) says which parts fired and lists the features with
    the highest PSI (drifted first) with their PSI and KS numbers."""
    settings = settings or DriftSettings()
    fired: list[str] = []
    evidence: dict[str, Any] = {"horizon": horizon}
    if feature_table is not None:
        feats = _feature_evidence(feature_table, settings)
        evidence["features"] = feats
        if feats["share"] is not None and feats["share"] >= settings.min_drifted_share:
            fired.append("features")
    if prediction is not None:
        evidence["prediction"] = {k: _num(v) for k, v in prediction.items()}
        if prediction.get("drifted") is True:
            fired.append("prediction")
    if driver_table is not None and driver_table.height:
        last = driver_table.row(driver_table.height - 1, named=True)
        prev = driver_table["top_features"][-2].to_list() if driver_table.height > 1 else None
        evidence["drivers"] = {
            "window_end": last["window_end"].isoformat(),
            "top_features": list(last["top_features"]),
            "previous_top_features": prev,
            "overlap": _num(last["overlap"]),
            "rank_corr": _num(last["rank_corr"]),
        }
        if driver_drift_breached(driver_table, settings):
            fired.append("drivers")
    evidence["fired"] = fired
    parts = []
    if "features" in evidence:
        f = evidence["features"]
        parts.append(f"{f['drifted']}/{f['judged']} features drifted")
    if "prediction" in fired:
        parts.append("predictions drifted")
    if "drivers" in fired:
        parts.append("top drivers changed")
    summary = ", ".join(parts) if parts else "nothing monitored"
    title = f"{'Drift' if fired else 'No drift'} ({horizon}): {summary}"
    return [
        Condition(
            key=f"drift/{horizon}",
            kind=DRIFT,
            firing=bool(fired),
            title=title,
            as_of=as_of,
            horizon=horizon,
            evidence=evidence,
            link=link,
        )
    ]
