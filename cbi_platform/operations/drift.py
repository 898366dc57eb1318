"""Drift monitor: inputs, predictions and drivers of one horizon's model, judged against their own
recent past, reported as one `DRIFT` condition per horizon.

Three parts, each plain numpy/polars/scipy (no Dagster):

- **Feature drift** (`feature_drift`): per feature, the two-sample Kolmogorov-Smirnov statistic
  (the largest gap between the two empirical CDFs; `ks_stat`) between a reference window (the
  `reference_rows` rows before the current window, or before training end) and the current
  window (the last `current_rows` rows; `split_reference_current` cuts them), judged against a
  threshold calibrated on the reference itself (`calibrate`): the reference is cut into chunks
  as long as the current window (consecutive rows, one every `chunk_stride` rows, the last
  chunk ending at the reference's last row), each chunk's KS statistic against the rest of the
  reference (the reference without that chunk, as the current window is not part of the
  reference either) is computed, and the feature's `threshold` is the `chunk_quantile` of
  those chunk statistics, never below `ks_floor`. A feature has drifted when its current
  statistic EXCEEDS its threshold: the current quarter is further from the reference than any
  quarter of the reference was from the rest of it. So a slowly wandering feature (a moving
  average, a volatility, a price level) gets a high threshold from its own wandering, and a
  noisy-but-stable one a low threshold. Nulls and non-finite values are ignored; a feature with
  fewer than `min_rows` values on either side, or a reference too short for one chunk plus
  `min_rows` other values, is not judged (`drifted` null, `reason` says why). PSI (`psi`, on
  reference deciles) and the KS p-value are kept as evidence only: the p-value treats
  autocorrelated daily rows as independent draws and is far too small (the old rule,
  PSI >= 0.25 and p < 0.01, called 90% of stationary AR(1) features with phi 0.98 drifted and
  fired on 21 of 45 simulator features, 23 of 34 real ZL features, as soon as judged), and PSI
  saturates for a window outside the reference's range (its open top decile scores the same as
  a window inside the top decile), where KS reaches 1.
- **Feature share** (`drift_conditions`): the share of judged features that drifted is likewise
  calibrated. For each reference chunk, the share of features whose chunk statistic exceeds
  their threshold recomputed without the chunks that overlap it (leave-overlap-out, so a
  chunk is not judged by its own maximum) gives `chunk_share`, the `chunk_quantile` of those
  shares; features fire together (the simulator's and the market's inputs are a few prices
  seen through many transforms), and the reference shows how many do in a normal quarter. The
  features part fires when the share is at least `min_drifted_share` (a floor) AND above
  `chunk_share`.
- **One feature far outside its own range** (`single_feature_factor`, None = off): the
  features part also fires when one feature's KS statistic exceeds its own threshold by this
  factor (evidence `extreme`, the features that did, and `max_ratio`). The share rule cannot
  see a single broken feed (one feature of 45 is far below any share), and one feature above
  its plain threshold is common (a few % of features each quarter), so the factor is chosen
  on the development period by `benchmarks/monitors.py` (the false-alarm budget, then the
  fastest detection of a one-feature level shift of 2 sd); its value and evidence are in
  `monitoring.yaml`.
- **Prediction drift** (`prediction_drift`): the same calibrated KS on the model's predicted
  log returns (reference: the served version's walk-forward forecasts, in origin order;
  current: its served forecasts after training end), plus PSI, the p-value and the mean shift
  in reference standard deviations (evidence). Chunks are as long as the current sample but at
  most half the reference (walk-forward forecasts are one per origin, so fewer): shorter
  chunks are noisier, which only raises the threshold. Pass returns, not price levels.
- **Driver drift** (`driver_rank_drift`): SHAP-style contributions (as_of, feature,
  contribution) are grouped into consecutive blocks of `driver_window` forecast dates, ending at
  the latest; features are ranked by mean |contribution| per block. Each block reports its top
  `top_k` features, the share of them that were also in the previous block's top `top_k`
  (`overlap`) and the Spearman rank correlation of all features' importances with the previous
  block (`rank_corr`). Breached (`driver_drift_breached`) when the latest block's overlap is
  below `min_rank_overlap` or its rank correlation below `min_rank_corr`: what drives the
  forecasts has changed, so the model may be leaning on a relation that no longer holds.

`drift_conditions` combines them into one `Condition` "drift/<horizon>", firing when the
features part fires, OR the predictions drifted, OR the drivers' ranking broke; the evidence
carries the thresholds used.

Measured (independent stationary AR(1) features, phi 0.98, unit innovations; 756 reference rows
and the 63 rows that continue the same process; defaults): a feature is called drifted in 4.6%
of cases (the old rule: 90%). The condition fires in 0.5% / 4.5% / 1% of seeds with 8 / 12 /
16 such features (200 / 200 / 100 seeds; the old rule: 100%). With a level shift of 2
reference sd in every feature, a feature is caught in 46% of cases (a phi 0.98 feature wanders
that far on its own in three years) and the condition fires in 77% / 94% / 94% of seeds: a
shift of many features is what it is built to catch. Comparing a chunk with the whole
reference (itself included) understates its statistic: 8.3% of stationary features drifted;
the 0.95 quantile instead of the max: 10%. On the simulator's 1m features (reference the 756
rows before a date, current the next 63) at nine dates without regime windows (2004-2017) the
old rule called 23-34 of 43-45 features drifted and fired at every date; this one 0-4 at eight
dates, and 16 of 43 at 2006-09-01, a fast fall of ZL (21-day returns to -19%, the reference's
1st percentile -10.5%) that fires the condition.

Settings (`DriftSettings`, loaded from configuration by the caller; defaults and why):

    ======================  =====  ==========================================================
    setting                 dflt   why
    ======================  =====  ==========================================================
    `chunk_stride`          21     one month between chunk starts: 34 overlapping quarter
                                   chunks in three years. Strides 10 / 5 / 1 lower the false
                                   alarms of a stable feature a little (3.6 / 3.4 / 3.3%) but
                                   catch fewer 2 sd shifts (44 / 43 / 42%) and cost more
    `chunk_quantile`        1.0    the largest chunk statistic: there are only ~12 disjoint
                                   quarters in three years, so any lower quantile is the
                                   second- or third-largest of a dozen and a stable feature
                                   exceeds it in 1 of 10 quarters (measured above)
    `ks_floor`              0.25   lowest threshold: a nearly constant reference gives chunk
                                   statistics near 0, and noise would fire. Independent
                                   normal rows (63 vs 756) give KS >= 0.25 in ~0.2% of
                                   samples (the 1% critical value is 0.21)
    `min_drifted_share`     0.25   floor of the feature share: one or two features drifting
                                   is normal in a market (a level, a volatility); a quarter
                                   means the inputs as a whole have moved
    `psi_bins`              10     deciles of the reference for the PSI evidence; features
                                   with <= 10 distinct reference values are binned by value
    `reference_rows`        756    three years of trading days: spans several market states,
                                   so "normal" is not one quiet year, and gives the chunks
    `current_rows`          63     one quarter, and so the chunk length
    `min_rows`              20     below this a feature (or a chunk's rest) is not judged
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

import dataclasses
import datetime as dt
import math
import warnings
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
    "threshold": pl.Float64(),
    "n_chunks": pl.Int64(),
    "chunk_share": pl.Float64(),
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

    chunk_stride: int = 21
    chunk_quantile: float = 1.0
    ks_floor: float = 0.25
    min_drifted_share: float = 0.25
    single_feature_factor: float | None = 1.25
    min_episode_days: int = 5
    psi_bins: int = 10
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
        if not 0 < self.min_drifted_share <= 1 or not 0 < self.ks_floor < 1:
            raise ValueError("min_drifted_share must be in (0, 1] and ks_floor in (0, 1)")
        if self.min_episode_days < 1:
            raise ValueError("min_episode_days must be >= 1")
        if self.single_feature_factor is not None and not self.single_feature_factor >= 1:
            raise ValueError("single_feature_factor must be >= 1 or None (off)")
        if self.chunk_stride < 1 or not 0 < self.chunk_quantile <= 1:
            raise ValueError("chunk_stride must be >= 1 and chunk_quantile in (0, 1]")


def _as_float(values: Any) -> np.ndarray:
    """A float array in row order, nulls as NaN."""
    if isinstance(values, pl.Series):
        values = values.cast(pl.Float64).fill_null(float("nan")).to_numpy()
    return np.asarray(values, dtype=float).ravel()


def _finite(values: Any) -> np.ndarray:
    """A float array of the finite values (nulls, NaN and +-inf dropped)."""
    arr = _as_float(values)
    return arr[np.isfinite(arr)]


def chunk_starts(n_rows: int, chunk_rows: int, stride: int) -> np.ndarray:
    """First rows of the calibration chunks: every `stride` rows back from the chunk that ends
    at the last row, oldest first (empty when `chunk_rows` exceeds `n_rows`)."""
    if chunk_rows < 1 or chunk_rows > n_rows:
        return np.zeros(0, dtype=int)
    return np.arange(n_rows - chunk_rows, -1, -stride)[::-1]


def _ks_against_rest(ordered: np.ndarray, sorted_chunk: np.ndarray) -> float:
    """The two-sample KS statistic of a chunk against the rest of a sample that contains it
    (`ordered`: the whole sample, sorted): the rest's CDF is the whole's minus the chunk's."""
    n_all, n_chunk = ordered.size, sorted_chunk.size
    all_cdf = np.searchsorted(ordered, ordered, side="right")
    chunk_cdf = np.searchsorted(sorted_chunk, ordered, side="right")
    rest_cdf = (all_cdf - chunk_cdf) / (n_all - n_chunk)
    return float(np.max(np.abs(chunk_cdf / n_chunk - rest_cdf)))


def chunk_statistics(reference: Any, chunk_rows: int, settings: DriftSettings) -> np.ndarray:
    """KS statistic of each calibration chunk (`chunk_starts`) of `reference` (row order;
    nulls and non-finite values are skipped) against the rest of the reference; NaN for a chunk
    with fewer than `min_rows` finite values or a rest with fewer than `min_rows`."""
    values = _as_float(reference)
    finite = np.isfinite(values)
    ordered = np.sort(values[finite])
    starts = chunk_starts(values.size, chunk_rows, settings.chunk_stride)
    out = np.full(starts.size, np.nan)
    for i, start in enumerate(starts):
        chunk = values[start : start + chunk_rows]
        chunk = np.sort(chunk[np.isfinite(chunk)])
        if chunk.size >= settings.min_rows and ordered.size - chunk.size >= settings.min_rows:
            out[i] = _ks_against_rest(ordered, chunk)
    return out


def chunk_threshold(statistics: np.ndarray, settings: DriftSettings) -> float | None:
    """`chunk_quantile` of the finite chunk statistics, at least `ks_floor` (None: none)."""
    finite = statistics[np.isfinite(statistics)]
    if finite.size == 0:
        return None
    return max(settings.ks_floor, float(np.quantile(finite, settings.chunk_quantile)))


def chunk_rows_for(n_reference: int, n_current: int) -> int:
    """Calibration chunk length: the current sample's, at most half the reference."""
    return min(n_current, n_reference // 2)


def chunk_share(
    statistics: np.ndarray, starts: np.ndarray, chunk_rows: int, settings: DriftSettings
) -> float | None:
    """The calibrated feature share: `statistics` is features x chunks (`chunk_statistics`
    rows, chunks starting at `starts`). For each chunk, the share of features (with a statistic
    there) whose statistic exceeds their threshold from the chunks that do not overlap it; the
    `chunk_quantile` of those shares. None when no chunk has a share."""
    statistics = np.atleast_2d(statistics)
    if statistics.size == 0:
        return None
    shares = []
    finite = np.isfinite(statistics)
    for c in range(starts.size):
        others = np.abs(starts - starts[c]) >= chunk_rows
        rest = statistics[:, others]
        has_rest = np.isfinite(rest).any(axis=1) if rest.size else np.zeros(len(rest), bool)
        usable = has_rest & finite[:, c]
        if not usable.any():
            continue
        # chunk_threshold per feature, vectorised: the quantile of its other chunks, floored
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows are not usable
            if settings.chunk_quantile >= 1.0:
                level = np.nanmax(rest[usable], axis=1)
            else:
                level = np.nanquantile(rest[usable], settings.chunk_quantile, axis=1)
        thresholds = np.maximum(settings.ks_floor, level)
        shares.append(float(np.mean(statistics[usable, c] > thresholds)))
    if not shares:
        return None
    return float(np.quantile(shares, settings.chunk_quantile))


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


def _compare(
    ref: np.ndarray, cur: np.ndarray, threshold: float | None, settings: DriftSettings
) -> dict[str, Any]:
    """PSI, KS and the drifted verdict (KS above `threshold`) of two finite samples, or the
    reason there is none."""
    out: dict[str, Any] = {
        "psi": None,
        "ks_stat": None,
        "ks_pvalue": None,
        "n_reference": int(ref.size),
        "n_current": int(cur.size),
        "drifted": None,
        "reason": None,
        "threshold": threshold,
    }
    short = [
        f"{side} has {n} finite values < min_rows {settings.min_rows}"
        for side, n in (("reference", ref.size), ("current", cur.size))
        if n < settings.min_rows
    ]
    if short:
        out["reason"] = "; ".join(short)
        return out
    ks = stats.ks_2samp(ref, cur, method="asymp")  # the p-value is evidence only
    out["psi"] = psi(ref, cur, settings.psi_bins)
    out["ks_stat"] = float(ks.statistic)
    out["ks_pvalue"] = float(ks.pvalue)
    if threshold is None:
        out["reason"] = (
            f"reference ({ref.size} finite values) too short to calibrate: no chunk with "
            f"min_rows {settings.min_rows} values and as many beside it"
        )
        return out
    out["drifted"] = bool(out["ks_stat"] > threshold)
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
    calibration: dict | None = None,
) -> pl.DataFrame:
    """One row per feature (in the given order): feature, psi, ks_stat, ks_pvalue,
    n_reference, n_current (finite values used), drifted (ks_stat above threshold; null when
    not judged), reason (why not judged: a missing or non-numeric column, fewer than `min_rows`
    values, a reference too short to calibrate), threshold (calibrated on `reference`'s chunks,
    in row order: pass it sorted by date), n_chunks (chunks with a statistic) and chunk_share
    (the calibrated feature share, the same on every row; null when not calibrated).

    `calibration`: an optional dict that keeps each feature's chunk statistics between calls
    with the SAME reference (keyed by feature and chunk length), so judging one served version
    day after day calibrates once; pass a new dict for another reference."""
    settings = settings or DriftSettings()
    rows_per_chunk = chunk_rows_for(reference.height, current.height)
    starts = chunk_starts(reference.height, rows_per_chunk, settings.chunk_stride)
    rows, judged_statistics = [], []
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
        key = (name, rows_per_chunk)
        chunks = None if calibration is None else calibration.get(key)
        if chunks is None:
            chunks = chunk_statistics(reference[name], rows_per_chunk, settings)
            if calibration is not None:
                calibration[key] = chunks
        threshold = chunk_threshold(chunks, settings)
        result = _compare(_finite(reference[name]), _finite(current[name]), threshold, settings)
        if result["drifted"] is not None:
            judged_statistics.append(chunks)
        n_chunks = int(np.isfinite(chunks).sum())
        rows.append({"feature": name, **result, "n_chunks": n_chunks})
    share = (
        chunk_share(np.array(judged_statistics), starts, rows_per_chunk, settings)
        if judged_statistics
        else None
    )
    return pl.DataFrame(rows, schema=FEATURE_DRIFT_SCHEMA).with_columns(
        chunk_share=pl.lit(share, dtype=pl.Float64)
    )


def prediction_drift(
    reference: np.ndarray, current: np.ndarray, settings: DriftSettings | None = None
) -> dict[str, Any]:
    """Calibrated KS verdict, PSI and mean shift for the model's predictions (returns, not
    levels; `reference` in time order, as chunks of it calibrate the threshold).

    Keys: psi, ks_stat, ks_pvalue, n_reference, n_current, drifted (ks_stat above threshold;
    None when either side has fewer than `min_rows` finite values or the reference is too
    short to calibrate), reason, threshold, n_chunks and mean_shift_sd ((mean current - mean
    reference) / sd of the reference; None when that sd is 0)."""
    settings = settings or DriftSettings()
    ref, cur = _finite(reference), _finite(current)
    chunks = chunk_statistics(ref, chunk_rows_for(ref.size, cur.size), settings)
    out = _compare(ref, cur, chunk_threshold(chunks, settings), settings)
    out["n_chunks"] = int(np.isfinite(chunks).sum())
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
    calibrated = None
    if "chunk_share" in table.columns and table.height:
        calibrated = table["chunk_share"].drop_nulls().max()
    fired = share is not None and share >= settings.min_drifted_share
    fired = fired and (calibrated is None or share > calibrated)
    ratios = judged.filter(pl.col("threshold") > 0).with_columns(
        ratio=pl.col("ks_stat") / pl.col("threshold")
    )
    max_ratio = float(ratios["ratio"].max()) if ratios.height else None
    extreme = []
    factor = settings.single_feature_factor
    if factor is not None and max_ratio is not None and max_ratio > factor:
        extreme = ratios.filter(pl.col("ratio") > factor).sort("ratio", descending=True)
        extreme = extreme["feature"].to_list()
    top = (
        judged.with_columns(margin=pl.col("ks_stat") - pl.col("threshold"))
        .sort(["drifted", "margin"], descending=True)
        .head(settings.evidence_features)
        .select("feature", "ks_stat", "threshold", "psi", "ks_pvalue", "drifted")
    )
    return {
        "judged": judged.height,
        "drifted": n_drifted,
        "share": _num(share),
        "not_judged": table.height - judged.height,
        "min_drifted_share": settings.min_drifted_share,
        "chunk_share": _num(calibrated),
        "fired": bool(fired),
        "max_ratio": _num(max_ratio),
        "single_feature_factor": factor,
        "extreme": extreme,
        "thresholds": {
            "chunk_quantile": settings.chunk_quantile,
            "chunk_stride": settings.chunk_stride,
            "ks_floor": settings.ks_floor,
        },
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
    features that drifted is at least `min_drifted_share` and above the calibrated
    `chunk_share`, or the predictions drifted, or the driver ranking broke. Evidence
    (JSON-ready) says which parts fired, the share thresholds and settings used, and lists the
    features furthest above their thresholds (drifted first) with KS, threshold, PSI and
    p-value."""
    settings = settings or DriftSettings()
    fired: list[str] = []
    evidence: dict[str, Any] = {"horizon": horizon}
    if feature_table is not None:
        feats = _feature_evidence(feature_table, settings)
        evidence["features"] = feats
        if feats.pop("fired"):
            fired.append("features")
        if feats["extreme"]:
            fired.append("feature")
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
        if "feature" in fired:
            parts.append(f"{', '.join(f['extreme'][:3])} far outside its own range")
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


def hold_episodes(
    conditions: list[Condition], judged: pl.DataFrame, settings: DriftSettings | None = None
) -> list[Condition]:
    """Hysteresis for drift: a drift episode stays open for at least `min_episode_days`
    judgement days. `judged`: the earlier judgements (the condition log's key, as_of, seq,
    firing). A non-firing drift condition whose key has fired on each of its last k judgement
    days, 0 < k < min_episode_days, is kept firing (evidence `held_days`), so a drift share that
    dips under its level for a day does not resolve and re-open the alert. Drift is judged
    against a reference that a retrain replaces, so its statistic has no history worth
    replaying; the logged judgements are that history."""
    settings = settings or DriftSettings()
    if settings.min_episode_days <= 1 or judged.is_empty():
        return list(conditions)
    out = []
    for condition in conditions:
        if condition.kind != DRIFT or condition.firing:
            out.append(condition)
            continue
        past = (
            judged.filter((pl.col("key") == condition.key) & (pl.col("as_of") < condition.as_of))
            .sort("as_of", "seq")
            .group_by("as_of", maintain_order=True)
            .last()
        )
        streak = 0
        for firing in reversed(past["firing"].to_list()):
            if not firing:
                break
            streak += 1
        if 0 < streak < settings.min_episode_days:
            evidence = {**condition.evidence, "held_days": streak}
            evidence["held"] = (
                f"open {streak} of at least {settings.min_episode_days} judgement days"
            )
            condition = dataclasses.replace(
                condition,
                firing=True,
                title=f"Drift ({condition.horizon}) held open ({streak} of "
                f"{settings.min_episode_days} days): {condition.title}",
                evidence=evidence,
            )
        out.append(condition)
    return out
