"""Shadow scoring: the challenger forecasts every day beside the champion, without serving.

The walk-forward record judges a new version on the past; the shadow record judges it on the
days after it was registered, on exactly the targets the champion was judged on. Each day the
publication also issues the challenger's forecast (history `role = "shadow"`); when targets
mature, `shadow_record` pairs the two versions' forecasts for the same origins and targets,
`compare` summarises them (against each other and the random walk), and `decide_with_shadow`
lets a strong shadow record promote a challenger that the walk-forward test alone did not.

The challenger of a horizon (`release.versions.challenger_version`) is the newest registered
version above the champion that was not rolled back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.evaluation.metrics import diebold_mariano, dm_lags, effective_sample_size
from cbi_platform.features.contract import HORIZONS
from cbi_platform.release.control import AUTO_PROMOTE, AuditLog, promote
from cbi_platform.release.gates import Decision
from cbi_platform.release.versions import (
    challenger_version,
    champion_version,
    model_version_label,
)
from cbi_platform.serving.store import SERVED, SHADOW
from cbi_platform.tracking import Tracker, registered_model_name

RECORD_SCHEMA = {
    "as_of": pl.Date,
    "target_date": pl.Date,
    "actual": pl.Float64,
    "champion_forecast": pl.Float64,
    "challenger_forecast": pl.Float64,
    "rw_forecast": pl.Float64,
    "champion_abs_error": pl.Float64,
    "challenger_abs_error": pl.Float64,
    "rw_abs_error": pl.Float64,
    "champion_in90": pl.Boolean,
    "challenger_in90": pl.Boolean,
}

# Shadow verdicts (CombinedDecision.shadow_verdict).
NO_RECORD = "no_record"  # no shadow record, or no matured common outcome yet
INSUFFICIENT = "insufficient"  # fewer matured common outcomes than min_shadow
FAVOURS_CHALLENGER = "favours_challenger"  # better by the margin and DM favours it
NOT_BETTER = "not_better"  # enough outcomes, but not better by the margin or DM does not agree


def _model_rows(history: pl.DataFrame, horizon: str, label: str, prefix: str) -> pl.DataFrame:
    rows = history.filter(
        (pl.col("horizon") == horizon)
        & (pl.col("model_version") == label)
        & pl.col("forecast").is_not_null()
        & pl.col("target_date").is_not_null()
    )
    lo = pl.col("lo90") if "lo90" in rows.columns else pl.lit(None, pl.Float64)
    hi = pl.col("hi90") if "hi90" in rows.columns else pl.lit(None, pl.Float64)
    price = pl.col("price") if "price" in rows.columns else pl.lit(None, pl.Float64)
    return rows.select(
        pl.col("as_of").cast(pl.Date),
        pl.col("target_date").cast(pl.Date),
        pl.col("forecast").cast(pl.Float64).alias(f"{prefix}_forecast"),
        lo.cast(pl.Float64).alias(f"{prefix}_lo90"),
        hi.cast(pl.Float64).alias(f"{prefix}_hi90"),
        price.cast(pl.Float64).alias(f"{prefix}_price"),
    ).unique(subset=["as_of"], keep="last", maintain_order=True)


def shadow_record(
    history: pl.DataFrame,
    prices: pl.DataFrame,
    horizon: str,
    champion: str,
    challenger: str,
) -> pl.DataFrame:
    """The champion's and the challenger's forecasts of the same matured targets, side by side.

    `history` is the forecast history (as_of, horizon, model_version, target_date, forecast,
    lo90, hi90, price; a `role` column, when present, is not needed: the history's key makes a
    version's row per (as_of, horizon) unique, whether it served or shadowed). `champion` and
    `challenger` are version numbers ("3") or history labels ("cbi-zl-1w/v3"). `prices` holds
    the daily closes (date, value).

    Kept: origins both versions forecast, for the same target date, that has matured
    (target_date <= the last price date). The actual is the close on the target date, or the
    last close before it (a holiday), never a later one. The random walk's forecast is the
    close at the origin (the last one on or before it; the history's `price` when the prices
    do not reach back that far). `*_in90`: lo90 <= actual <= hi90 (null without a zone).
    """
    if history.height == 0 or prices.height == 0:
        return pl.DataFrame(schema=RECORD_SCHEMA)
    ours = _model_rows(history, horizon, model_version_label(horizon, champion), "champion")
    theirs = _model_rows(history, horizon, model_version_label(horizon, challenger), "challenger")
    closes = (
        prices.select(pl.col("date").cast(pl.Date), pl.col("value").cast(pl.Float64))
        .drop_nulls()
        .filter(pl.col("value").is_finite())
        .unique(subset=["date"], keep="last")
        .sort("date")
    )
    if closes.height == 0:
        return pl.DataFrame(schema=RECORD_SCHEMA)
    last_close = closes["date"].max()
    paired = (
        ours.join(theirs, on=["as_of", "target_date"], how="inner")
        .filter(pl.col("target_date") <= last_close)
        .sort("target_date")
    )
    paired = paired.join_asof(
        closes.rename({"date": "target_date", "value": "actual"}),
        on="target_date",
        strategy="backward",
    ).sort("as_of")
    paired = paired.join_asof(
        closes.rename({"date": "as_of", "value": "rw_close"}), on="as_of", strategy="backward"
    )
    actual = pl.col("actual")

    def inside(prefix: str) -> pl.Expr:
        lo, hi = pl.col(f"{prefix}_lo90"), pl.col(f"{prefix}_hi90")
        return (
            pl.when(lo.is_null() | hi.is_null())
            .then(pl.lit(None, pl.Boolean))
            .otherwise((lo <= actual) & (actual <= hi))
        )

    return (
        paired.with_columns(
            pl.coalesce("rw_close", "champion_price", "challenger_price").alias("rw_forecast")
        )
        .filter(actual.is_not_null())
        .select(
            "as_of",
            "target_date",
            "actual",
            "champion_forecast",
            "challenger_forecast",
            "rw_forecast",
            (pl.col("champion_forecast") - actual).abs().alias("champion_abs_error"),
            (pl.col("challenger_forecast") - actual).abs().alias("challenger_abs_error"),
            (pl.col("rw_forecast") - actual).abs().alias("rw_abs_error"),
            inside("champion").alias("champion_in90"),
            inside("challenger").alias("challenger_in90"),
        )
        .cast(RECORD_SCHEMA)
        .sort("as_of")
    )


@dataclass(frozen=True)
class ShadowComparison:
    """The shadow record in numbers (None where undefined, e.g. without outcomes).

    `n_independent`: forecasts are issued daily for targets `horizon_days` ahead, so the
    targets of neighbouring origins overlap and their errors are strongly correlated; taking
    every h-th origin gives non-overlapping targets, so about n / h of the n outcomes carry
    independent information (ceil(n / h): at least 1 when n > 0). The DM test accounts for the
    overlap with h - 1 Newey-West lags and is only run with at least two non-overlapping
    windows (n >= 2h): fewer outcomes leave its variance estimate meaningless.
    """

    horizon_days: int
    n: int
    n_independent: int
    mae_champion: float | None
    mae_challenger: float | None
    mae_random_walk: float | None
    rel_mae_champion: float | None  # MAE / random-walk MAE
    rel_mae_challenger: float | None
    mae_improvement: float | None  # 1 - challenger MAE / champion MAE
    dm_stat: float | None  # negative: the challenger's errors are smaller
    dm_pvalue: float | None  # two-sided
    dm_lags: int
    coverage90_champion: float | None
    coverage90_challenger: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def compare(record: pl.DataFrame, horizon_days: int) -> ShadowComparison:
    """Summarise a `shadow_record`: MAEs, ratios to the random walk, the paired DM test
    (challenger vs champion absolute errors, overlapping daily forecasts) and 90% coverage."""
    if horizon_days < 1:
        raise ValueError("horizon_days must be >= 1")
    lags = dm_lags(horizon_days, 1.0)
    n = record.height
    if n == 0:
        return ShadowComparison(
            horizon_days, 0, 0, None, None, None, None, None, None, None, None, lags, None, None
        )
    champ = record["champion_abs_error"].to_numpy().astype(float)
    chall = record["challenger_abs_error"].to_numpy().astype(float)
    rw = record["rw_abs_error"].drop_nulls().to_numpy().astype(float)
    mae_champ, mae_chall = float(champ.mean()), float(chall.mean())
    mae_rw = float(rw.mean()) if rw.size else None
    improvement = 1 - mae_chall / mae_champ if mae_champ > 0 else None
    stat = pvalue = None
    if n >= 2 * (lags + 1):
        dm = diebold_mariano(chall, champ, lags)
        stat, pvalue = _finite(dm.stat), _finite(dm.pvalue)
        if np.isinf(dm.stat):  # a constant, non-zero difference: kept with its sign
            stat = float(dm.stat)

    def coverage(column: str) -> float | None:
        hits = record[column].drop_nulls()
        return float(hits.cast(pl.Float64).mean()) if hits.len() else None

    return ShadowComparison(
        horizon_days=horizon_days,
        n=n,
        n_independent=effective_sample_size(n, horizon_days, 1.0),
        mae_champion=mae_champ,
        mae_challenger=mae_chall,
        mae_random_walk=mae_rw,
        rel_mae_champion=_ratio(mae_champ, mae_rw),
        rel_mae_challenger=_ratio(mae_chall, mae_rw),
        mae_improvement=_finite(improvement),
        dm_stat=stat,
        dm_pvalue=pvalue,
        dm_lags=lags,
        coverage90_champion=coverage("champion_in90"),
        coverage90_challenger=coverage("challenger_in90"),
    )


@dataclass(frozen=True)
class CombinedDecision:
    promote: bool
    reasons: tuple[str, ...]  # each one says how many shadow outcomes were used
    shadow_outcomes_used: int  # matured common outcomes the decision weighed (0: not consulted)
    walk_forward_promote: bool
    shadow_verdict: str  # NO_RECORD | INSUFFICIENT | FAVOURS_CHALLENGER | NOT_BETTER

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "reasons": list(self.reasons)}


def shadow_verdict(
    shadow: ShadowComparison | None, *, min_shadow: int, margin: float, dm_alpha: float
) -> tuple[str, str]:
    """(verdict, explanation) of a shadow record on its own."""
    if shadow is None or shadow.n == 0:
        return NO_RECORD, "no matured shadow outcome common to challenger and champion yet"
    if shadow.n < min_shadow:
        return INSUFFICIENT, (
            f"only {shadow.n} matured shadow outcomes (need {min_shadow}): too few to judge"
        )
    problems = []
    improvement = shadow.mae_improvement
    if improvement is None or improvement < margin:
        shown = "undefined" if improvement is None else f"{improvement:+.1%}"
        problems.append(
            f"shadow MAE {_fmt(shadow.mae_challenger)} vs champion {_fmt(shadow.mae_champion)}: "
            f"{shown} < {margin:.0%}"
        )
    if shadow.dm_pvalue is None or shadow.dm_stat is None:
        problems.append(
            f"DM test not run: {shadow.n} overlapping outcomes are fewer than two "
            f"non-overlapping {shadow.horizon_days}-day windows ({2 * shadow.horizon_days})"
            if shadow.n < 2 * (shadow.dm_lags + 1)
            else "DM test undefined (identical errors)"
        )
    elif not (shadow.dm_stat < 0 and shadow.dm_pvalue < dm_alpha):
        problems.append(
            f"DM test ({shadow.dm_lags} Newey-West lags) does not favour the challenger "
            f"(stat {shadow.dm_stat:.2f}, p {shadow.dm_pvalue:.3f})"
        )
    if problems:
        return NOT_BETTER, "; ".join(problems)
    return FAVOURS_CHALLENGER, (
        f"shadow MAE better by {improvement:.1%} ({_fmt(shadow.mae_challenger)} vs "
        f"{_fmt(shadow.mae_champion)}; ~{shadow.n_independent} independent) and DM favours it "
        f"(p {shadow.dm_pvalue:.3f}, {shadow.dm_lags} lags)"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _used(text: str, count: int) -> str:
    return f"{text} [{count} shadow outcomes used]"


def decide_with_shadow(
    walk_forward: Decision,
    shadow: ShadowComparison | None,
    *,
    min_shadow: int = 20,
    margin: float = 0.10,
    dm_alpha: float = 0.10,
) -> CombinedDecision:
    """Promotion on the walk-forward record, or failing that on the shadow record.

    The rule (monotone: the shadow record can only add evidence for promotion, never veto):
    1. the walk-forward decision promotes -> promote (the shadow record is not consulted);
    2. the challenger failed its own gates (leakage, coverage, MASE defined) -> never promote;
    3. otherwise promote when the shadow record has >= `min_shadow` matured common outcomes,
       the challenger's shadow MAE is lower than the champion's by >= `margin`, and the DM
       test (h - 1 Newey-West lags, so it needs n >= 2h) favours it at `dm_alpha`.
    Every reason says how many shadow outcomes the decision used.
    """
    verdict, why = shadow_verdict(shadow, min_shadow=min_shadow, margin=margin, dm_alpha=dm_alpha)
    wf = tuple(f"walk-forward: {r}" for r in walk_forward.reasons)
    if walk_forward.promote:
        reasons = (*wf, "promoted on the walk-forward record; shadow record not consulted")
        return CombinedDecision(True, tuple(_used(r, 0) for r in reasons), 0, True, verdict)
    if walk_forward.failed_gates:
        reasons = (*wf, "the challenger failed its own gates: the shadow record cannot promote it")
        return CombinedDecision(False, tuple(_used(r, 0) for r in reasons), 0, False, verdict)
    used = shadow.n if shadow is not None else 0
    if verdict == FAVOURS_CHALLENGER:
        reasons = (*wf, f"promoted on the shadow record: {why}")
    else:
        reasons = (*wf, f"not promoted on the shadow record: {why}")
    return CombinedDecision(
        verdict == FAVOURS_CHALLENGER, tuple(_used(r, used) for r in reasons), used, False, verdict
    )


# ---- the daily review: shadow evidence, and promotion on it


@dataclass
class ShadowOutcome:
    horizon: str
    champion: str | None
    challenger: str | None
    comparison: dict[str, Any] | None
    decision: dict[str, Any] | None
    promoted: bool = False


def shadow_review(
    tracker: Tracker,
    history: pl.DataFrame,
    target: pl.DataFrame,
    audit: AuditLog,
    *,
    horizons: Sequence[str],
    min_outcomes: int,
    margin: float,
    dm_alpha: float,
    auto_promote: bool,
) -> list[ShadowOutcome]:
    """Champion against challenger on the same matured targets; with `auto_promote`, a
    challenger the combined rule favours is promoted (an audit row says why). The thresholds
    are the `shadow` section of monitoring.yaml."""
    outcomes = []
    for horizon in horizons:
        name = registered_model_name(horizon)
        champion = champion_version(tracker, horizon)
        challenger = challenger_version(tracker, horizon) if champion else None
        if champion is None or challenger is None:
            outcomes.append(ShadowOutcome(horizon, champion, challenger, None, None))
            continue
        tags = tracker.version_tags(name, challenger)
        failed = tuple(json.loads(tags.get("failed_gates", "[]")))
        walk_forward = Decision(
            promote=False,  # it was not promoted when registered (else it would be champion)
            reasons=failed or ("not promoted on the walk-forward record",),
            failed_gates=failed,
        )
        shadowed = (
            history.filter(pl.col("role").is_in([SERVED, SHADOW])) if history.height else history
        )
        record = shadow_record(
            shadowed, target.select("date", "value"), horizon, champion, challenger
        )
        comparison = compare(record, HORIZONS[horizon]) if record.height else None
        decision = decide_with_shadow(
            walk_forward,
            comparison,
            min_shadow=min_outcomes,
            margin=margin,
            dm_alpha=dm_alpha,
        )
        outcome = ShadowOutcome(
            horizon,
            champion,
            challenger,
            comparison.as_dict() if comparison else None,
            decision.as_dict(),
        )
        if decision.promote and auto_promote:
            promote(
                tracker,
                audit,
                horizon,
                challenger,
                actor="shadow_comparison",
                reason="; ".join(decision.reasons),
                evidence=outcome.comparison,
                action=AUTO_PROMOTE,
            )
            outcome.promoted = True
        outcomes.append(outcome)
    return outcomes
