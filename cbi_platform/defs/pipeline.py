"""The pipeline as selections: what runs once, what runs per horizon, and the jobs the UI offers.

Stages are `dg.AssetSelection`s over groups and the asset graph, not hand-kept lists, so a new
asset joins its stage by its group (a new step in group `forecasts` runs in the forecast stage)
and the jobs, `cbi run` and `cbi replay` all read the one definition here. A selection brings
the checks of the assets it selects.
"""

import dagster as dg

from cbi_platform.defs.deploy.assets import vertex_deployment
from cbi_platform.defs.ensemble.assets import ensemble, target_zones
from cbi_platform.defs.ensemble.checks import ensemble_checks
from cbi_platform.defs.evaluation.assets import model_leaderboard
from cbi_platform.defs.features.assets import features
from cbi_platform.defs.features.checks import feature_checks
from cbi_platform.defs.forecasts.assets import forecasts, registered_version
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
from cbi_platform.defs.sentiment.assets import news_sentiment
from cbi_platform.defs.versions import with_code_versions

# The inventory the Definitions load (the shape of the pipeline is in the selections below).
# vertex_deployment deploys the champions to Vertex AI when configured; it is in no job
# (materialize it by hand or from a schedule of your own after promotions).
UNVERSIONED_ASSETS = [
    raw_market_data,
    market_prices,
    news_sentiment,
    regime_calendar,
    detected_regimes,
    volatility_forecasts,
    neural_volatility,
    features,
    regime_datasets,
    *MEMBER_GROUP_ASSETS,
    member_models,
    ensemble,
    target_zones,
    model_leaderboard,
    registered_version,
    forecasts,
    *OPERATIONS_ASSETS,
    decision_forecasts,
    procurement_backtest,
    procurement_recommendation,
    vertex_deployment,
]
# Every asset with its code version (defs/versions.py): what the UI, the jobs and `cbi run` load.
ALL_ASSETS = with_code_versions(UNVERSIONED_ASSETS)
ALL_CHECKS = [
    *market_checks,
    *regime_checks,
    *feature_checks,
    *model_checks,
    *ensemble_checks,
    *OPERATIONS_CHECKS,
]

MARKET = dg.AssetSelection.groups("market")
# What reads outside the platform (the source's prices and news): `cbi run` re-reads it every
# time; its data version is a hash of the content, so the same delivery leaves the rest fresh.
SOURCE = dg.AssetSelection.assets(raw_market_data)
# News scoring runs in the pipeline (once per run, and in the daily refresh) only when
# sentiment.yaml puts news in some horizon's features, i.e. when the features read it;
# otherwise news_sentiment is defined (UI, `dg.materialize`) but nothing waits on it.
NEWS = dg.AssetSelection.assets(features).upstream(depth=1, include_self=False) - MARKET

# Per-horizon (partitioned) stages: the features and everything in features/regimes/models
# built on them (regime datasets, walk-forward members), then the ensemble, evaluation and the
# registered, served forecast.
MEMBER_STAGE = dg.AssetSelection.assets(features).downstream() & dg.AssetSelection.groups(
    "features", "regimes", "models"
)
FORECAST_STAGE = dg.AssetSelection.groups("ensemble", "evaluation", "forecasts")
HORIZON = MEMBER_STAGE | FORECAST_STAGE
# What `make run` materializes for all horizons in one run before the per-horizon stages: the
# features (and their blocking checks) and regime datasets, then the statistical members,
# fitted once per origin for every horizon.
RANGE_STAGE = (MEMBER_STAGE - dg.AssetSelection.groups("models")) | dg.AssetSelection.assets(
    MEMBERS_STATISTICAL
)

# Unpartitioned inputs, materialized once per run: market data, news when used, the regimes
# and the volatility models.
SHARED = (MARKET | NEWS | dg.AssetSelection.groups("regimes", "models")) - HORIZON
# The operating monitors' checks (freshness is judged against today) run in the daily loop; the
# training stages of `cbi run` and `cbi replay` leave them out.
MONITOR_CHECKS = dg.AssetSelection.checks(*OPERATIONS_CHECKS)
SHARED_STAGE = SHARED - MONITOR_CHECKS

# Procurement: the daily decision forecasts of the policies' horizons (partitioned), then the
# backtest of every policy over the buying windows (unpartitioned).
DECISION = dg.AssetSelection.assets(decision_forecasts)
BACKTEST = dg.AssetSelection.assets(procurement_backtest)

# The daily loop (no retraining): unpartitioned, every horizon in one run; it ends with today's
# procurement recommendation from the forecasts it served.
REFRESH = (
    MARKET
    | NEWS
    | dg.AssetSelection.groups("operations")
    | dg.AssetSelection.assets(procurement_recommendation)
)

# Run lanes (dagster.yaml's tag_concurrency_limits on `cbi/lane`: one run per lane at a time,
# lanes side by side; job tags go on every run of the job, sensor-launched ones included).
# training: the jobs that rebuild the shared inputs (market data, regimes, volatility models)
# and train, so two of them would do the same work twice and compete for CPU and the gpu pool;
# market_data_job is here too because it rebuilds exactly the shared part a retrain rebuilds.
# refresh: the daily loop. It also writes market data, but a refresh and a retrain may overlap:
# each warehouse store is one locked transaction (last writer wins, both from the same
# source), and a retrain changes what the refresh serves only by promoting a new version (the
# refresh serves, per horizon, the version served when it reads it).
LANE = "cbi/lane"
TRAINING_LANE = {LANE: "training"}
REFRESH_LANE = {LANE: "refresh"}
# buyer: a buyer's programme backtest, one at a time beside the others: it reads the warehouse
# (short locked reads) and writes only the accounts store. BUYER_LANE is defined beside its job
# in defs/procurement/programme.py (this module imports that package, so it cannot import this).

market_data_job = dg.define_asset_job(
    "market_data_job",
    selection=SHARED,
    description="Load, validate and check market data (runs once, unpartitioned).",
    tags=TRAINING_LANE,
)
horizon_job = dg.define_asset_job(
    "horizon_job",
    selection=HORIZON,
    partitions_def=horizon_partitions,
    description="Features, regime datasets and models for one horizon partition.",
    tags=TRAINING_LANE,
)
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=SHARED | HORIZON,
    partitions_def=horizon_partitions,
    description="Retrain the horizon partitions a sensor asked for: market data, then "
    "walk-forward, ensemble, zones, registration and promotion gates (a challenger that fails "
    "to beat the champion is shadowed).",
    tags=TRAINING_LANE,
)
# One run, one process (a separate process per step costs seconds each): the 30 s target.
daily_refresh_job = dg.define_asset_job(
    "daily_refresh_job",
    selection=REFRESH,
    executor_def=dg.in_process_executor,
    description="Each business day: ingest the new day, recompute features, forecast from the "
    "served versions (no retraining), validate matured forecasts, drift, correlation, shadow.",
    tags=REFRESH_LANE,
)
JOBS = [market_data_job, horizon_job, retrain_job, daily_refresh_job]
