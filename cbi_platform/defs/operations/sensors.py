"""Sensors: alerts by email, the daily alert digest, failed runs, sensor-driven retraining; and
the daily schedule."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from cbi_platform import clock
from cbi_platform.conditions import FAILED_CHECK, FAILED_RUN, Condition
from cbi_platform.defs.dagster_internals import latest_check_evaluations
from cbi_platform.defs.partitions import HORIZON_KEYS
from cbi_platform.defs.resources import (
    MlflowResource,
    OperationsResource,
)
from cbi_platform.operations.alerting import alert_tick, digest_tick
from cbi_platform.operations.daily import trained_through
from cbi_platform.operations.retraining import plan_retraining
from cbi_platform.release.control import RETRAIN_REQUESTED


def failed_check_conditions(
    instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey], link_base: str
) -> list[Condition]:
    """A condition per blocking check: firing while its latest evaluation failed. Dated by the
    day of the evaluation; under a simulated clock (the soak) by the simulated day the sensor
    reads it on, since the evaluation's timestamp is wall time (a check failed on a simulated
    day would otherwise be dated years after the rest of its alert book)."""
    out = []
    for key, evaluation in latest_check_evaluations(instance, check_keys).items():
        day = (
            dt.datetime.fromtimestamp(evaluation.timestamp).date()
            if evaluation.timestamp is not None and not clock.simulated()
            else clock.today()
        )
        out.append(
            Condition(
                key=f"failed_check/{key.asset_key.to_user_string()}/{key.name}",
                kind=FAILED_CHECK,
                firing=evaluation.failed,
                title=f"blocking check {key.name} on {key.asset_key.to_user_string()} failed",
                as_of=day,
                evidence={"description": evaluation.description, "run_id": evaluation.run_id},
                link=f"{link_base.rstrip('/')}/runs/{evaluation.run_id}",
            )
        )
    return out


def blocking_check_keys(checks) -> list[dg.AssetCheckKey]:
    keys = []
    for check in checks:
        for spec in check.check_specs:
            if spec.blocking:
                keys.append(spec.key)
    return keys


def build_sensors(retrain_job, checks) -> list:
    check_keys = blocking_check_keys(checks)

    @dg.sensor(
        name="alert_sensor",
        minimum_interval_seconds=clock.sensor_interval_seconds(60),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reads the monitors' condition log and the blocking checks; mails each "
        "alert once when it fires and once when it clears (SMTP).",
    )
    def alert_sensor(context: dg.SensorEvaluationContext, operations: OperationsResource):
        conditions = [
            *operations.conditions().latest(),
            *failed_check_conditions(context.instance, check_keys, operations.dagster_url),
        ]
        tick = alert_tick(operations.alert_book(), operations.mailer(), conditions)
        return dg.SkipReason(tick.summary())

    @dg.sensor(
        name="alert_digest_sensor",
        minimum_interval_seconds=clock.sensor_interval_seconds(600),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Once a day (from CBI_DIGEST_HOUR, local time of the daily schedule): one "
        "mail with yesterday's fired, cleared and still-open alerts, their run and playbook "
        "links (JSON cursor + ops.alert_digest: never twice for a day).",
    )
    def alert_digest_sensor(context: dg.SensorEvaluationContext, operations: OperationsResource):
        mailer = operations.mailer()
        tick = digest_tick(
            operations.alert_book(),
            mailer,
            clock.now(ZoneInfo(operations.config().refresh.timezone)).replace(tzinfo=None),
            operations.digest_hour,
            context.cursor,
            subject_prefix=mailer.settings.subject_prefix if mailer else "[CBI ZL]",
            playbook_url=operations.playbook_url,
        )
        return dg.SensorResult(cursor=tick.cursor, skip_reason=tick.summary)

    @dg.run_failure_sensor(
        name="failed_run_alert_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
        monitor_all_code_locations=False,
        description="A failed run raises an alert (resolved by the next successful run of the "
        "same job).",
    )
    def failed_run_alert_sensor(
        context: dg.RunFailureSensorContext, operations: OperationsResource
    ):
        _run_condition(context, operations, firing=True)

    @dg.run_status_sensor(
        name="succeeded_run_alert_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Resolves a failed-run alert when the same job succeeds.",
    )
    def succeeded_run_alert_sensor(
        context: dg.RunStatusSensorContext, operations: OperationsResource
    ):
        _run_condition(context, operations, firing=False)

    @dg.sensor(
        name="retraining_sensor",
        job=retrain_job,
        minimum_interval_seconds=clock.sensor_interval_seconds(60),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Accuracy or coverage degraded -> a retraining run for that horizon "
        "partition only (run_key per condition, horizon and episode; JSON cursor; cooldown). "
        "Drift and correlation breaks inform; they never retrain by themselves.",
    )
    def retraining_sensor(
        context: dg.SensorEvaluationContext,
        operations: OperationsResource,
        mlflow: MlflowResource,
    ):
        config = operations.config().retraining
        plan = plan_retraining(
            operations.conditions().latest(),
            context.cursor,
            horizons=HORIZON_KEYS,
            kinds=config.kinds,
            cooldown_business_days=config.cooldown_business_days,
            run_exists=lambda key: _run_exists(context.instance, key),
            trained_through=served_trained_through(mlflow, operations.horizons),
        )
        audit = operations.audit()
        for r in plan.requests:
            audit.record(
                r.horizon,
                RETRAIN_REQUESTED,
                actor="retraining_sensor",
                reason=r.reason,
                evidence={"run_key": r.run_key, "condition": r.condition_key},
            )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=r.run_key,
                    partition_key=r.horizon,
                    tags={"cbi/retrain_reason": r.reason[:200], "cbi/condition": r.condition_key},
                )
                for r in plan.requests
            ],
            cursor=plan.cursor,
            skip_reason=None
            if plan.requests
            else ("; ".join(plan.deferred) or "nothing to retrain"),
        )

    return [
        alert_sensor,
        alert_digest_sensor,
        failed_run_alert_sensor,
        succeeded_run_alert_sensor,
        retraining_sensor,
    ]


def served_trained_through(mlflow: MlflowResource, horizons) -> dict:
    """The last training date of each horizon's served version (its registry tag)."""
    return trained_through(mlflow.tracker(), horizons)


def _run_exists(instance: dg.DagsterInstance, run_key: str) -> bool:
    """Whether a run was launched for this key: by the daemon (dagster/run_key) or by an
    in-process replay (cbi/run_key)."""
    return any(
        instance.get_run_records(dg.RunsFilter(tags={tag: run_key}), limit=1)
        for tag in ("dagster/run_key", "cbi/run_key")
    )


def _run_condition(context, operations: OperationsResource, firing: bool) -> None:
    run = context.dagster_run
    cond = Condition(
        key=f"failed_run/{run.job_name}",
        kind=FAILED_RUN,
        firing=firing,
        title=f"run of {run.job_name} {'failed' if firing else 'succeeded'}",
        as_of=clock.today(),
        evidence={"run_id": run.run_id, "job": run.job_name},
        link=operations.run_link(run.run_id),
    )
    if firing or cond.key in set(operations.alert_book().open_alerts()["key"].to_list()):
        alert_tick(operations.alert_book(), operations.mailer(), [cond])


def build_schedule(job, cron: str, timezone: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="daily_refresh_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Each business day after the CBOT close: ingest, features, forecasts from "
        "the served versions (no retraining), validation, drift, correlation, shadow.",
    )
