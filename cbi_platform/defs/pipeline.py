"""The pipeline as lists: what runs once, what runs per horizon, and the jobs the UI offers."""

import dagster as dg

from cbi_platform.defs.ensemble.assets import ensemble, target_zones
from cbi_platform.defs.evaluation.assets import model_leaderboard
from cbi_platform.defs.features.assets import features
from cbi_platform.defs.features.checks import feature_checks
from cbi_platform.defs.forecasts.assets import forecasts
from cbi_platform.defs.market.assets import market_prices, raw_market_data
from cbi_platform.defs.market.checks import market_checks
from cbi_platform.defs.models.assets import member_models, volatility_forecasts
from cbi_platform.defs.models.checks import model_checks
from cbi_platform.defs.operations.assets import OPERATIONS_ASSETS
from cbi_platform.defs.operations.checks import OPERATIONS_CHECKS
from cbi_platform.defs.partitions import horizon_partitions
from cbi_platform.defs.regimes.assets import detected_regimes, regime_calendar, regime_datasets
from cbi_platform.defs.regimes.checks import regime_checks

# Unpartitioned assets, materialized once per run of the pipeline.
SHARED_ASSETS = [
    raw_market_data,
    market_prices,
    regime_calendar,
    detected_regimes,
    volatility_forecasts,
]
SHARED_CHECKS = [*market_checks, *regime_checks]
# Per-horizon assets, materialized for each partition.
HORIZON_ASSETS = [
    features,
    regime_datasets,
    member_models,
    ensemble,
    target_zones,
    model_leaderboard,
    forecasts,
]
HORIZON_CHECKS = [*feature_checks, *model_checks]

# The daily loop (no retraining): unpartitioned, every horizon in one run.
REFRESH_ASSETS = [raw_market_data, market_prices, *OPERATIONS_ASSETS]

ALL_ASSETS = [*SHARED_ASSETS, *HORIZON_ASSETS, *OPERATIONS_ASSETS]
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
