"""The API's response shapes (pydantic): what /docs shows and what every payload is checked
against once, when the snapshot behind it changes."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Horizon(StrEnum):
    """Forecast horizons: trading days after the as-of date (5, 21, 63, 126, 252)."""

    one_week = "1w"
    one_month = "1m"
    three_months = "3m"
    six_months = "6m"
    twelve_months = "12m"


class ErrorOut(BaseModel):
    error: str = Field(description="a short machine-readable code")
    message: str = Field(description="what went wrong, in words")
    status: int


class TargetZones(BaseModel):
    """The buyer's target zones: the forecast distribution's 10/30/50/70/90th percentiles."""

    p10: float | None
    p30: float | None
    p50: float | None
    p70: float | None
    p90: float | None


class Range(BaseModel):
    low: float | None
    high: float | None


class Band(BaseModel):
    low: float | None
    high: float | None
    probability: float | None = Field(None, description="achieved probability (0-1)")
    nominal_probability: float | None = None


class ForecastOut(BaseModel):
    horizon: Horizon
    horizon_days: int
    as_of: dt.date
    target_date: dt.date | None
    unit: str = "c/lb"
    price: float | None = Field(description="the last close at as_of")
    forecast: float | None = Field(description="the point forecast of the price level")
    target_zones: TargetZones
    zone90: Range = Field(description="the 90% zone (lo90..hi90)")
    statement: str | None = Field(description="the probability statement in words")
    band: Band = Field(description="the band of the statement, with its achieved probability")
    p50_note: str | None = None
    regime: str | None
    provisional: bool
    failed_gates: list[str]
    model_version: str | None
    served_is_random_walk: bool
    data_last_date: dt.date | None
    created_at: dt.datetime | None


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
