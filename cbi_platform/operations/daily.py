"""One day of operations, Dagster-free: what the operations assets (and `cbi replay`) call.

refresh -> validation against actuals -> drift -> correlation breaks. (The shadow comparison,
which may promote, is the release room's: `cbi_platform.release.shadow.shadow_review`.) Each
monitor returns its tables and its `Condition`s; the assets record the conditions in the
condition log, where the alert and retraining sensors read them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from cbi_platform.conditions import STALE_DATA, Condition
from cbi_platform.features.contract import DATE, HORIZONS, feature_columns, horizon_frame
from cbi_platform.market.schema import target_series
from cbi_platform.operations import correlation, drift, validation
from cbi_platform.operations.config import MonitoringConfig
from cbi_platform.operations.refresh import Perturbation, RefreshResult, refresh_horizon
from cbi_platform.release.versions import served_version
from cbi_platform.serving.store import SERVED
from cbi_platform.tracking import Tracker, registered_model_name


def detected_regimes_now(target: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, float]]:
    """Regime labels (trailing data only) and the next-month outlook, for today's forecasts."""
    from cbi_platform.regimes.detected import label_regimes, regime_outlook

    dates, prices = target["date"], target["value"].to_numpy()
    labels = label_regimes(dates, prices)
    return labels, regime_outlook(dates, prices, labels["regime"])


def refresh(
    tracker: Tracker,
    market_prices: pl.DataFrame,
    features: pl.DataFrame,
    *,
    target_symbol: str,
    data_reference_date: dt.date,
    cache: Path,
    horizons: Sequence[str] = tuple(HORIZONS),
    perturb: Perturbation | None = None,
) -> RefreshResult:
    target = target_series(market_prices, target_symbol)
    regimes, outlook = detected_regimes_now(target)
    result = RefreshResult(as_of=target["date"][-1])
    for horizon in horizons:
        frame = horizon_frame(features, horizon)
        if frame.height == 0:
            raise ValueError(f"refresh: no feature rows for horizon {horizon}")
        result.horizons.append(
            refresh_horizon(
                tracker,
                horizon,
                frame,
                target,
                regimes,
                regime_outlook=outlook,
                data_reference_date=data_reference_date,
                cache=cache,
                perturb=perturb,
            )
        )
    return result


# ---- validation against actuals


def version_tags(tracker: Tracker, horizon: str, version: str | None) -> dict[str, str]:
    if version is None:
        return {}
    return tracker.version_tags(registered_model_name(horizon), version)


def served_tag(tracker: Tracker, horizon: str, tag: str) -> str | None:
    """A registry tag of the version that serves the horizon (the champion, else the newest)."""
    version = served_version(tracker, horizon)
    value = version_tags(tracker, horizon, version).get(tag)
    return value if value not in (None, "", "nan") else None


def achieved_coverage(tracker: Tracker, horizons: Sequence[str]) -> dict[str, float]:
    """90% coverage each served version achieved in validation (its walk-forward tag)."""
    values = {h: served_tag(tracker, h, "coverage90") for h in horizons}
    return {h: float(v) for h, v in values.items() if v is not None}


def trained_through(tracker: Tracker, horizons: Sequence[str]) -> dict[str, dt.date]:
    """The last training date of each horizon's served version (its registry tag)."""
    values = {h: served_tag(tracker, h, "trained_through") for h in horizons}
    return {h: dt.date.fromisoformat(v) for h, v in values.items() if v is not None}


def stale_condition(
    target: pl.DataFrame, reference_date: dt.date, max_behind: int, link: str | None = None
) -> Condition:
    last = target["date"].max()
    behind = int(np.busday_count(last, reference_date)) if last < reference_date else 0
    return Condition(
        key="stale_data/target",
        kind=STALE_DATA,
        firing=behind > max_behind,
        title=f"target's last close {last} is {behind} business day(s) behind {reference_date}",
        as_of=reference_date,
        evidence={
            "last_close": str(last),
            "reference": str(reference_date),
            "behind": behind,
            "max_business_days_behind": max_behind,
        },
        link=link,
    )


@dataclass
class ValidationReport:
    scored: pl.DataFrame
    summary: pl.DataFrame
    by_regime: pl.DataFrame
    by_move: pl.DataFrame
    by_driver: pl.DataFrame
    rolling: pl.DataFrame
    regime_monitor: pl.DataFrame
    conditions: list[Condition] = field(default_factory=list)


def validate(
    history: pl.DataFrame,
    target: pl.DataFrame,
    *,
    as_of: dt.date,
    achieved: Mapping[str, float],
    config: MonitoringConfig,
    link: str | None = None,
) -> ValidationReport:
    settings = config.validation
    scored = validation.score_matured(history, target.select("date", "value"), role=SERVED)
    served = history.filter(pl.col("role") == SERVED) if history.height else history
    current = (
        served.sort("as_of")["regime"].drop_nulls()[-1]
        if served.height and served["regime"].drop_nulls().len()
        else None
    )
    conditions = [
        *validation.accuracy_conditions(scored, as_of, settings, link),
        *validation.coverage_conditions(scored, as_of, achieved, settings, link),
    ]
    monitor = pl.DataFrame()
    if current is not None and scored.height:
        monitor = validation.regime_coverage_monitor(scored, current, achieved, settings)
        conditions += validation.regime_conditions(scored, as_of, current, achieved, settings, link)
    return ValidationReport(
        scored=scored,
        summary=validation.summary(scored, ["horizon"]),
        by_regime=validation.summary(scored, ["horizon", "regime"]),
        by_move=validation.summary(scored, ["horizon", "move_bucket"]),
        by_driver=validation.summary(scored, ["horizon", "top_driver"]),
        rolling=validation.rolling_summary(scored, settings.window),
        regime_monitor=monitor,
        conditions=conditions,
    )


# ---- drift


def _contributions(history: pl.DataFrame) -> pl.DataFrame:
    rows = []
    for as_of, detail in history.select("as_of", "drivers_detail").iter_rows():
        items = json.loads(detail) if isinstance(detail, str) else (detail or [])
        for item in items:
            if item.get("contribution_pct") is not None:
                rows.append((as_of, item["feature"], float(item["contribution_pct"])))
    return pl.DataFrame(
        rows,
        schema={"as_of": pl.Date, "feature": pl.Utf8, "contribution": pl.Float64},
        orient="row",
    )


@dataclass
class DriftReport:
    features: pl.DataFrame  # per horizon and feature
    predictions: pl.DataFrame  # per horizon
    drivers: pl.DataFrame  # per horizon and window
    conditions: list[Condition] = field(default_factory=list)


def drift_report(
    features: pl.DataFrame,
    history: pl.DataFrame,
    reference_predictions: pl.DataFrame,
    trained_through: Mapping[str, dt.date],
    *,
    as_of: dt.date,
    config: MonitoringConfig,
    link: str | None = None,
) -> DriftReport:
    """Per horizon: features after the served version's training end against the rows it
    trained on; served forecasts (log returns) against its walk-forward forecasts
    (`reference_predictions`: horizon, forecast_logret); driver ranks over rolling windows."""
    settings = config.drift
    tables, preds, drivers, conditions = [], [], [], []
    for horizon, end in trained_through.items():
        frame = horizon_frame(features, horizon).sort(DATE)
        names = feature_columns(frame)
        reference = frame.filter(pl.col(DATE) <= end).tail(settings.reference_rows)
        current = frame.filter(pl.col(DATE) > end).tail(settings.current_rows)
        table = None
        if current.height >= settings.min_rows:
            table = drift.feature_drift(reference, current, names, settings)
            tables.append(table.with_columns(horizon=pl.lit(horizon)))
        served = (
            history.filter((pl.col("horizon") == horizon) & (pl.col("role") == SERVED))
            if history.height
            else history
        )
        served_after = served.filter(pl.col("as_of") > end) if served.height else served
        prediction = None
        ref = reference_predictions.filter(pl.col("horizon") == horizon)["forecast_logret"]
        if served_after.height >= settings.min_rows and ref.len() >= settings.min_rows:
            logrets = np.log(served_after["forecast"].to_numpy() / served_after["price"].to_numpy())
            prediction = drift.prediction_drift(ref.drop_nulls().to_numpy(), logrets, settings)
            preds.append(
                {
                    "horizon": horizon,
                    **{
                        k: v
                        for k, v in prediction.items()
                        if isinstance(v, int | float | bool | str)
                    },
                }
            )
        driver_table = None
        if served.height:
            contributions = _contributions(served)
            if contributions.height:
                driver_table = drift.driver_rank_drift(contributions, settings)
                if driver_table.height:
                    drivers.append(
                        driver_table.with_columns(
                            horizon=pl.lit(horizon),
                            top_features=pl.col("top_features").list.join(", "),
                        )
                    )
        if table is None and prediction is None:
            continue  # too few rows since training: nothing judged (no condition)
        conditions += drift.drift_conditions(
            horizon, as_of, table, prediction, driver_table, settings, link
        )
    return DriftReport(
        features=pl.concat(tables, how="diagonal_relaxed") if tables else pl.DataFrame(),
        predictions=pl.DataFrame(preds) if preds else pl.DataFrame(),
        drivers=pl.concat(drivers, how="diagonal_relaxed") if drivers else pl.DataFrame(),
        conditions=conditions,
    )


# ---- correlation breaks


def correlation_report(
    market_prices: pl.DataFrame,
    target_symbol: str,
    *,
    as_of: dt.date,
    config: MonitoringConfig,
    link: str | None = None,
) -> tuple[dict[str, correlation.PairResult], list[Condition]]:
    results = correlation.monitor_correlations(
        market_prices, target=target_symbol, settings=config.correlation, as_of=as_of
    )
    return results, correlation.correlation_conditions(results, as_of, link)


