"""The API's response shapes (pydantic): what /docs shows and what every payload is checked
against once, when the snapshot behind it changes. The forecast response is derived from the
one forecast record (`cbi_platform.serving.record`); the horizons come from `settings`."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, create_model

from cbi_platform import settings
from cbi_platform.serving.record import Column, record_columns
from cbi_platform.settings import HORIZON_KEYS, HORIZON_NAMES, HORIZONS

# The path parameter's enum, built from the one horizon type (a named schema in /docs).
Horizon = StrEnum("Horizon", {key: key for key in HORIZON_KEYS})
Horizon.__doc__ = "Forecast horizons: trading days after the as-of date (5, 21, 63, 126, 252)."


class ErrorOut(BaseModel):
    error: str = Field(description="a short machine-readable code")
    message: str = Field(description="what went wrong, in words")
    status: int


# ---- the forecast response, derived from the forecast record (cbi_platform.serving.record) ----

# The record's fields the forecast response carries, in the record's order.
FORECAST_COLUMNS: tuple[Column, ...] = tuple(c for c in record_columns() if c.api)
# The nested objects of the response: group -> (schema name, schema doc, the field's description).
FORECAST_GROUPS: dict[str, tuple[str, str | None, str | None]] = {
    "target_zones": (
        "TargetZones",
        "The buyer's target zones: the forecast distribution's 10/30/50/70/90th percentiles.",
        None,
    ),
    "zone90": ("Range", None, "the 90% zone (lo90..hi90)"),
    "band": ("Band", None, "the band of the statement, with its achieved probability"),
}


def _api_field(column: Column) -> tuple[Any, Any]:
    """The response field of one record column: nullable unless the view never sends null (an
    older history row may lack a value), optional if the column was added after the first
    release."""
    kind = Horizon if column.python_type == settings.Horizon else column.python_type
    kind = kind if column.always else kind | None
    default = None if column.added and not column.always else ...
    return kind, Field(default, description=column.doc)


def _forecast_model() -> type[BaseModel]:
    top: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for column in FORECAST_COLUMNS:
        group, _, name = column.api.rpartition(".")
        if not group:
            top[name] = _api_field(column)
            continue
        if group not in FORECAST_GROUPS:
            raise ValueError(f"record field {column.name}: unknown response group {group!r}")
        if group not in groups:
            groups[group] = {}
            top[group] = None  # keeps the group where its first field sits
        groups[group][name] = _api_field(column)
    for group, fields in groups.items():
        schema_name, doc, description = FORECAST_GROUPS[group]
        nested = create_model(schema_name, __doc__=doc, **fields)
        top[group] = (nested, Field(..., description=description))
    # What the API adds to the record: the horizon's length, the unit, the random-walk flag.
    top["horizon_days"] = (int, Field(..., description="trading days after as_of"))
    top["unit"] = (str, "c/lb")
    top["served_is_random_walk"] = (
        bool,
        Field(..., description="the served forecast is the random walk (no model is used)"),
    )
    return create_model("ForecastOut", **top)


ForecastOut = _forecast_model()
TargetZones = ForecastOut.model_fields["target_zones"].annotation
Range = ForecastOut.model_fields["zone90"].annotation
Band = ForecastOut.model_fields["band"].annotation


class PredictionsOut(BaseModel):
    as_of: dt.date
    unit: str = "c/lb"
    forecasts: list[ForecastOut]


class RegimeOut(BaseModel):
    as_of: dt.date
    regime: str | None
    outlook: str | None = Field(description="the classifier's regime probabilities in words")
    probabilities: dict[str, float]
    text: str


class DriverOut(BaseModel):
    feature: str
    description: str
    value: float | None
    contribution_pct: float | None = Field(description="% of price this driver moves the forecast")
    direction: str = Field(description="up, down or none")
    model: str | None
    used: bool = Field(description="false: from a model the served forecast does not use")


class ExplainOut(BaseModel):
    horizon: Horizon
    as_of: dt.date
    model_version: str | None
    served_is_random_walk: bool
    summary: str
    note: str | None
    drivers: list[DriverOut]


class HorizonPerformance(BaseModel):
    horizon: Horizon
    n: int = Field(description="matured served forecasts scored")
    mape: float | None = Field(description="percent")
    rw_mape: float | None = Field(description="the random walk's MAPE on the same forecasts")
    mae: float | None
    rw_mae: float | None
    rel_mae: float | None = Field(description="MAE / random-walk MAE (below 1 beats it)")
    mase: float | None
    coverage80: float | None = Field(description="share of actuals inside P10..P90")
    coverage90: float | None = Field(description="share of actuals inside the 90% zone")
    n_zones: int
    first_target_date: dt.date | None
    last_target_date: dt.date | None
    verdict: str


class PerformanceOut(BaseModel):
    as_of: dt.date
    closes_through: dt.date | None
    source: str
    horizons: list[HorizonPerformance]


class RecommendationOut(BaseModel):
    as_of: dt.date
    policy: str
    action: str
    buy_lb: float | None
    price: float | None
    window_start: dt.date | None
    window_end: dt.date | None
    days_left: int | None
    remaining_lb: float | None
    total_lb: float | None
    reason: str | None
    text: str | None = Field(description="the recommendation with its backtested record")
    record: dict[str, Any] | None
    forecast_versions: dict[str, Any]
    logged_at: dt.datetime | None


class BacktestOut(BaseModel):
    recommended_policy: str | None
    recommended: dict[str, Any] | None
    policies: list[dict[str, Any]]
    report_path: str
    report_exists: bool
    plot_path: str
    plot_exists: bool


class Close(BaseModel):
    date: dt.date
    price: float


class HistoryOut(BaseModel):
    unit: str = "c/lb"
    source: str
    closes: list[Close]


class HealthOut(BaseModel):
    status: str = Field(description="ok, stale or no_data")
    message: str
    as_of: dt.date | None
    data_last_date: dt.date | None
    data_reference_date: dt.date | None
    business_days_behind: int | None
    max_business_days_behind: int
    last_forecast_at: dt.datetime | None
    last_refresh_at: dt.datetime | None = Field(
        description="when the daily refresh last judged data freshness (condition log)"
    )


class HorizonOut(BaseModel):
    key: Horizon
    days: int = Field(description="trading days after the as-of date")
    name: str = Field(description="the horizon in words, e.g. 1 month")


class MetaOut(BaseModel):
    """What the page lays itself out by: the horizons and the target-zone levels."""

    horizons: list[HorizonOut] = Field(description="every horizon, shortest first")
    zone_levels: list[str] = Field(description="the target zones' fields, lowest first")


def meta() -> MetaOut:
    """The page's metadata, from the one horizon table and the one forecast record."""
    return MetaOut(
        horizons=[HorizonOut(key=h, days=HORIZONS[h], name=HORIZON_NAMES[h]) for h in HORIZON_KEYS],
        zone_levels=[
            c.api.split(".", 1)[1] for c in FORECAST_COLUMNS if c.api.startswith("target_zones.")
        ],
    )


# ---- alerts: the open alerts and the engineer's answers ----


class AlertOut(BaseModel):
    key: str
    kind: str
    horizon: str | None
    title: str
    opened_as_of: dt.date
    last_seen_as_of: dt.date
    link: str | None = Field(description="the Dagster run behind the latest judgement")
    playbook: str = Field(description="what to do: the playbook entry of its kind")
    status: str = Field(description="open | acknowledged | snoozed")
    answered_by: str | None = None
    answer_until: dt.date | None = None
    answer_reason: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


class AcknowledgeIn(BaseModel):
    key: str = Field(min_length=1, max_length=200, description="e.g. accuracy/1w")
    reason: str = Field(min_length=1, max_length=2000)


class SnoozeIn(AcknowledgeIn):
    until: dt.date = Field(description="the last snoozed day (not in the past)")


class AlertAnswerOut(BaseModel):
    key: str
    action: str = Field(description="acknowledge | snooze | unsnooze")
    by: str = Field(description="the name of the API key that answered")
    reason: str
    until: dt.date | None
    opened_as_of: dt.date = Field(description="the episode answered: the day it fired")
    answered_at: dt.datetime


# ---- the buyer's insight (issue 22 §3, §4, §7): past zones, market intelligence, notices ----


class PastZone(BaseModel):
    origin: dt.date = Field(description="the day the forecast was made")
    target_date: dt.date
    actual_date: dt.date = Field(description="the close the realised price comes from")
    price: float | None = Field(description="the close at the origin")
    p10: float | None
    p30: float | None
    p50: float | None
    p70: float | None
    p90: float | None
    actual: float = Field(description="the realised price at the target date")


class HitRateOut(BaseModel):
    band: str = Field(description="the zone, e.g. P30–P70")
    nominal: float = Field(description="the share a well-calibrated zone holds")
    held: int = Field(description="matured forecasts whose realised price lay inside")
    n: int = Field(description="the last n matured forecasts counted")
    n_effective: int = Field(description="non-overlapping outcomes among them")
    share: float | None
    low: float | None = Field(description="95% Wilson interval on n_effective outcomes")
    high: float | None
    sentence: str


class CalibrationOut(BaseModel):
    """What past forecasts said, and what happened, at one horizon."""

    horizon: Horizon
    horizon_days: int
    unit: str = "c/lb"
    source: str = Field(description="served | walk_forward | none")
    label: str = Field(description="where the zones come from, in words")
    n_matured: int
    hit_rates: list[HitRateOut]
    summary: str = Field(description="the chart in words (its text alternative)")
    method: str
    zones: list[PastZone]


class NoticeOut(BaseModel):
    kind: str = Field(description="provisional | stale | random_walk")
    label: str
    sentence: str = Field(description="why, in one plain sentence")


class HorizonNotices(BaseModel):
    horizon: Horizon
    notices: list[NoticeOut]


class NoticesOut(BaseModel):
    """What the buyer must never misread, per served horizon."""

    as_of: dt.date | None
    health_status: str = Field(description="ok, stale or no_data (as /health)")
    horizons: list[HorizonNotices]


class IntelligenceItem(BaseModel):
    key: str = Field(description="regime, volatility, correlation_<pair>, cot or news")
    title: str
    status: str = Field(
        description="ok | not_in_data | not_configured | not_published (why there is no value)"
    )
    as_of: dt.date | None = Field(description="the date the value describes")
    stale: bool
    freshness: str = Field(description="the as-of date and whether it is current, in words")
    text: str = Field(description="the value in one or two plain sentences")
    detail: dict[str, Any] = Field(default_factory=dict)


class IntelligenceOut(BaseModel):
    """Market intelligence: each item with its own freshness."""

    reference_date: dt.date | None = Field(description="the day freshness is judged against")
    items: list[IntelligenceItem]
