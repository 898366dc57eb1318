"""The one Definitions object the Dagster UI and `cbi` load."""

import dagster as dg

from cbi_platform.defs.operations.sensors import build_schedule, build_sensors
from cbi_platform.defs.pipeline import ALL_ASSETS, ALL_CHECKS, JOBS, daily_refresh_job, retrain_job
from cbi_platform.defs.resources import build_resources

_resources = build_resources()
_refresh = _resources["operations"].config().refresh

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=JOBS,
    sensors=build_sensors(retrain_job, ALL_CHECKS),
    schedules=[build_schedule(daily_refresh_job, _refresh.cron, _refresh.timezone)],
    resources=_resources,
)
