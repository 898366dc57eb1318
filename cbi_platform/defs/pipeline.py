"""The pipeline as lists: what runs once, what runs per horizon, and the jobs the UI offers."""

import dagster as dg

from cbi_platform.defs.deploy.assets import vertex_deployment
from cbi_platform.defs.ensemble.assets import ensemble, target_zones
from cbi_platform.defs.evaluation.assets import model_leaderboard
from cbi_platform.defs.features.assets import features
from cbi_platform.defs.features.checks import feature_checks
from cbi_platform.defs.forecasts.assets import forecasts
from cbi_platform.defs.market.assets import market_prices, raw_market_data
from cbi_platform.defs.market.checks import market_checks
from cbi_platform.defs.models.assets import (
    MEMBER_GROUP_ASSETS,
    MEMBERS_STATISTICAL,
    member_models,
    neural_volatility,
    volatility_forecasts,
)
from cbi_platform.defs.models.checks import model_checks
from cbi_platform.defs.operations.assets import OPERATIONS_ASSETS
from cbi_platform.defs.operations.checks import OPERATIONS_CHECKS
from cbi_platform.defs.partitions import horizon_partitions
from cbi_platform.defs.procurement.assets import (
    decision_forecasts,
    procurement_backtest,
    procurement_recommendation,
)
from cbi_platform.defs.regimes.assets import detected_regimes, regime_calendar, regime_datasets
from cbi_platform.defs.regimes.checks import regime_checks
from cbi_platform.defs.sentiment.assets import SENTIMENT_IN_FEATURES, news_sentiment

# News scoring runs in the pipeline (once per run, and in the daily refresh) only when
# sentiment.yaml puts news in some horizon's features; otherwise news_sentiment is defined (UI,
# `dg.materialize`) but nothing waits on it.
SENTIMENT_ASSETS = [news_sentiment]
SENTIMENT_RUN_ASSETS = SENTIMENT_ASSETS if SENTIMENT_IN_FEATURES else []

# Unpartitioned assets, materialized once per run of the pipeline.
SHARED_ASSETS = [
    raw_market_data,
    market_prices,
    *SENTIMENT_RUN_ASSETS,
    regime_calendar,
    detected_regimes,
    volatility_forecasts,
    neural_volatility,
]
SHARED_CHECKS = [*market_checks, *regime_checks]
# Per-horizon assets, materialized for each partition: the features and members, then the
# ensemble and the registered version built on them.
MEMBER_STAGE_ASSETS = [features, regime_datasets, *MEMBER_GROUP_ASSETS, member_models]
FORECAST_STAGE_ASSETS = [ensemble, target_zones, model_leaderboard, forecasts]
HORIZON_ASSETS = [*MEMBER_STAGE_ASSETS, *FORECAST_STAGE_ASSETS]
HORIZON_CHECKS = [*feature_checks, *model_checks]
# What `make run` materializes for all horizons in one run before the per-horizon stages: the
# features (and their blocking checks), then the statistical members, fitted once per origin
# for every horizon.
RANGE_ASSETS = [features, regime_datasets, MEMBERS_STATISTICAL]
RANGE_CHECKS = [*feature_checks]

# Procurement: the daily decision forecasts of the policies' horizons (partitioned), then the
# backtest of every policy over the buying windows (unpartitioned).
DECISION_ASSETS = [decision_forecasts]
BACKTEST_ASSETS = [procurement_backtest]

# The daily loop (no retraining): unpartitioned, every horizon in one run; it ends with today's
# procurement recommendation from the forecasts it served.
REFRESH_ASSETS = [
    raw_market_data,
    market_prices,
    *SENTIMENT_RUN_ASSETS,
    *OPERATIONS_ASSETS,
    procurement_recommendation,
]

ALL_ASSETS = [
    *SHARED_ASSETS,
    *HORIZON_ASSETS,
    *OPERATIONS_ASSETS,
    *DECISION_ASSETS,
    *BACKTEST_ASSETS,
    procurement_recommendation,
    *[a for a in SENTIMENT_ASSETS if a not in SENTIMENT_RUN_ASSETS],
    # Deploys the champions to Vertex AI when configured; in no job (materialize it by hand or
    # from a schedule of your own after promotions).
    vertex_deployment,
]
ALL_CHECKS = [*SHARED_CHECKS, *HORIZON_CHECKS, *OPERATIONS_CHECKS]

market_data_job = dg.define_asset_job(
    "market_data_job",
    selection=dg.AssetSelection.assets(*SHARED_ASSETS),
    description="Load, validate and check market data (runs once, unpartitioned).",
)
horizon_job = dg.define_asset_job(
    "horizon_job",
    selection=dg.AssetSelection.assets(*HORIZON_ASSETS),
    partitions_def=horizon_partitions,
    description="Features, regime datasets and models for one horizon partition.",
)
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets(*SHARED_ASSETS, *HORIZON_ASSETS),
    partitions_def=horizon_partitions,
    description="Retrain the horizon partitions a sensor asked for: market data, then "
    "walk-forward, ensemble, zones, registration and promotion gates (a challenger that fails "
    "to beat the champion is shadowed).",
)
# One run, one process (a separate process per step costs seconds each): the 30 s target.
daily_refresh_job = dg.define_asset_job(
    "daily_refresh_job",
    selection=dg.AssetSelection.assets(*REFRESH_ASSETS),
    executor_def=dg.in_process_executor,
    description="Each business day: ingest the new day, recompute features, forecast from the "
    "served versions (no retraining), validate matured forecasts, drift, correlation, shadow.",
)
JOBS = [market_data_job, horizon_job, retrain_job, daily_refresh_job]
