"""The soak's sensor (issue 21): a daily refresh per simulated business day (CBI_CLOCK_FILE).
Only in the Definitions when the clock is simulated; it stands in for the cron schedule, which
follows the real calendar."""

import dagster as dg

from cbi_platform import clock
from cbi_platform.operations.soak import soak_tick


def build_soak_sensor(refresh_job) -> dg.SensorDefinition:
    @dg.sensor(
        name="soak_day_sensor",
        job=refresh_job,
        minimum_interval_seconds=3,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Soak only: reads the simulated clock (CBI_CLOCK_FILE) and requests one "
        "daily refresh per business day (run_key = the day: never twice, even across daemon "
        "restarts), tagged cbi/soak_day.",
    )
    def soak_day_sensor(context: dg.SensorEvaluationContext):
        tick = soak_tick(clock.today(), context.cursor)
        requests = [dg.RunRequest(run_key=tick.run_key, tags=tick.tags)] if tick.run_key else []
        return dg.SensorResult(
            run_requests=requests,
            cursor=tick.cursor,
            skip_reason=None if requests else tick.reason,
        )

    return soak_day_sensor
