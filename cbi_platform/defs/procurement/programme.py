"""The buyer's programme backtest as a Dagster run: a sensor turns each queued row of the
accounts store's `programme_backtests` into a run of `programme_backtest_job` (run_key: the
programme hash, the data as-of date and the request), which backtests the programme with the
frozen policies and writes running → ready | failed back. Thin: the logic is in
`accounts.programmes` and `procurement.programme_backtest`."""

from pathlib import Path

import dagster as dg

from cbi_platform import clock
from cbi_platform.accounts.programmes import (
    BuyerProgramme,
    QueuedBacktest,
    execute_backtest,
    mark_failed,
    queued_backtests,
    running_backtests,
    store_exists,
)
from cbi_platform.accounts.store import AccountStore
from cbi_platform.defs.resources import ForecastStoreResource, MarketSourceResource, PlatformHome
from cbi_platform.procurement.programme import load_config
from cbi_platform.procurement.programme_backtest import backtest_on_home

OP = "programme_backtest"
# The run lane (dagster.yaml: `cbi/lane` = buyer, limit 1; pipeline.py's LANE, which imports
# this package and so cannot be imported here).
BUYER_LANE = {"cbi/lane": "buyer"}
DEAD = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


class ProgrammeBacktestConfig(dg.Config):
    """One queued backtest: the programme's hash, the data as-of date, its request id and
    the five fields the buyer set."""

    programme_hash: str
    as_of: str
    request: str
    railcar_lb: float
    railcars_per_window: int
    window_days: int
    carry_cents_per_lb_month: float
    max_worst_shortfall_cents: float


def run_config(queued: QueuedBacktest) -> dict:
    programme = queued.programme
    return {
        "ops": {
            OP: {
                "config": {
                    "programme_hash": queued.programme_hash,
                    "as_of": queued.as_of,
                    "request": queued.request,
                    "railcar_lb": programme.railcar_lb,
                    "railcars_per_window": programme.railcars_per_window,
                    "window_days": programme.window_days,
                    "carry_cents_per_lb_month": programme.carry_cents_per_lb_month,
                    "max_worst_shortfall_cents": programme.max_worst_shortfall_cents,
                }
            }
        }
    }


@dg.op(
    name=OP,
    out=dg.Out(dg.Nothing),
    description="Backtest one buyer's programme with the frozen policies (his volume, window, "
    "carry; the policy shown by the development rule for his tolerance) and write the result "
    "into the accounts store.",
)
def programme_backtest(
    context: dg.OpExecutionContext,
    config: ProgrammeBacktestConfig,
    home: PlatformHome,
    market_source: MarketSourceResource,
    forecast_store: ForecastStoreResource,
) -> dg.Output:
    programme = BuyerProgramme(
        railcar_lb=config.railcar_lb,
        railcars_per_window=config.railcars_per_window,
        window_days=config.window_days,
        carry_cents_per_lb_month=config.carry_cents_per_lb_month,
        max_worst_shortfall_cents=config.max_worst_shortfall_cents,
    )
    queued = QueuedBacktest(config.programme_hash, programme, config.as_of, config.request)
    store = AccountStore.for_home(home.path)
    warehouse = Path(home.path) / "warehouse.duckdb"

    def compute(p: BuyerProgramme):
        served = forecast_store.store().latest()
        return backtest_on_home(
            warehouse, market_source.target(), served, p.programme(), load_config()
        )

    result = execute_backtest(store, queued, context.run_id, compute)
    context.log.info(
        f"programme {config.programme_hash[:12]}: {result['windows']} windows, "
        f"{result['recommended_policy']} shown, {result['seconds']:.1f}s"
    )
    return dg.Output(
        None,
        metadata={
            "windows": result["windows"],
            "recommended_policy": result["recommended_policy"],
            "as_of": result["as_of"],
            "seconds": result["seconds"],
        },
    )


@dg.job(
    name="programme_backtest_job",
    executor_def=dg.in_process_executor,
    description="A buyer's programme backtest, queued from the API (one lane of its own: "
    "`buyer`, one run at a time); the result goes to the accounts store, not the warehouse.",
    tags=BUYER_LANE,
)
def programme_backtest_job():
    programme_backtest()


@dg.sensor(
    name="programme_backtest_sensor",
    job=programme_backtest_job,
    minimum_interval_seconds=clock.sensor_interval_seconds(10),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Each queued programme backtest (accounts store) -> one programme_backtest_job "
    "run (run_key: programme hash, data as-of date, request); a running one whose run died is "
    "marked failed.",
)
def programme_backtest_sensor(context: dg.SensorEvaluationContext, home: PlatformHome):
    store = AccountStore.for_home(home.path)
    if not store_exists(store):
        return dg.SkipReason(f"no accounts store yet ({store.describe()})")
    for row in running_backtests(store):
        run = context.instance.get_run_by_id(row["run_id"]) if row["run_id"] else None
        if run is not None and run.status in DEAD:
            mark_failed(store, row["programme_hash"], f"run {run.run_id} {run.status.value}")
    queued = queued_backtests(store)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=q.run_key,
                run_config=run_config(q),
                tags={"cbi/programme": q.programme_hash[:16], "cbi/as_of": q.as_of},
            )
            for q in queued
        ],
        skip_reason=None if queued else "no programme backtest queued",
    )
