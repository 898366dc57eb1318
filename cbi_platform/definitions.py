"""The one Definitions object the Dagster UI and `cbi` load."""

import dagster as dg

from cbi_platform import clock
from cbi_platform.defs.distributed import (
    horizon_job_celery,
    route_pool_to_queue,
    shared_data_job_celery,
)
from cbi_platform.defs.operations.buyer_mail import build_buyer_mail_sensors
from cbi_platform.defs.operations.sensors import build_schedule, build_sensors
from cbi_platform.defs.operations.soak import build_soak_sensor
from cbi_platform.defs.pipeline import ALL_ASSETS, ALL_CHECKS, JOBS, daily_refresh_job, retrain_job
from cbi_platform.defs.procurement.programme import (
    programme_backtest_job,
    programme_backtest_sensor,
)
from cbi_platform.defs.resources import build_resources

_resources = build_resources()
_refresh = _resources["operations"].config().refresh

if clock.simulated():
    # The soak (CBI_CLOCK_FILE): the simulated calendar's sensor replaces the cron schedule,
    # which would refresh on the real calendar's days.
    _day_loop = {"sensors": [build_soak_sensor(daily_refresh_job)], "schedules": []}
else:
    _day_loop = {
        "sensors": [],
        "schedules": [build_schedule(daily_refresh_job, _refresh.cron, _refresh.timezone)],
    }

defs = dg.Definitions(
    # gpu-pool assets carry the celery queue tag `gpu` (other executors ignore it).
    assets=route_pool_to_queue(ALL_ASSETS),
    asset_checks=ALL_CHECKS,
    jobs=[*JOBS, shared_data_job_celery, horizon_job_celery, programme_backtest_job],
    sensors=[
        *build_sensors(retrain_job, ALL_CHECKS),
        *build_buyer_mail_sensors(),
        *_day_loop["sensors"],
        programme_backtest_sensor,
    ],
    schedules=_day_loop["schedules"],
    resources=_resources,
)
