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

ALL_ASSETS = [*SHARED_ASSETS, *HORIZON_ASSETS]
ALL_CHECKS = [*SHARED_CHECKS, *HORIZON_CHECKS]

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
JOBS = [market_data_job, horizon_job]
