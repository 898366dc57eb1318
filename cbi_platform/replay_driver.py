"""The Dagster side of `cbi replay`: the pipeline's selections, the sensors and the resources,
run in-process against one ephemeral instance (`operations.replay` stays orchestrator-free)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import dagster as dg

from cbi_platform.defs.operations.sensors import build_sensors
from cbi_platform.defs.pipeline import ALL_CHECKS, HORIZON, REFRESH, SHARED_STAGE, retrain_job
from cbi_platform.defs.resources import build_resources
from cbi_platform.operations.replay import ReplaySettings, RetrainingTick, RetrainRequest
from cbi_platform.runner import materialize

_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class DagsterReplayDriver:
    """`operations.replay.ReplayDriver` on Dagster: the runs `cbi run` makes (shared stage, a
    horizon's pipeline, the daily refresh) and the production sensors, ticked in-process."""

    def __init__(self, settings: ReplaySettings):
        self.settings = settings
        self.instance = dg.DagsterInstance.ephemeral()
        self._sensors = {s.name: s for s in build_sensors(retrain_job, ALL_CHECKS)}
        self._day: dt.date | None = None
        self._resources: dict[str, Any] = {}

    def resources(self, through: dt.date) -> dict[str, Any]:
        if through != self._day:
            self._day, self._resources = through, _resources(self.settings, through)
        return self._resources

    def train_shared(self, through: dt.date, tags: Mapping[str, str]) -> str | None:
        return self._run(SHARED_STAGE, through, tags=tags)

    def train_horizon(self, through: dt.date, horizon: str, tags: Mapping[str, str]) -> str | None:
        return self._run(HORIZON, through, horizon, tags)

    def refresh(self, day: dt.date) -> str | None:
        return self._run(REFRESH, day, tags={"cbi/replay_day": day.isoformat()})

    def alert_tick(self, day: dt.date) -> None:
        self._tick("alert_sensor", day, None)

    def retraining_tick(self, day: dt.date, cursor: str | None) -> RetrainingTick:
        out = self._tick("retraining_sensor", day, cursor)
        return RetrainingTick(
            cursor=out.cursor,
            requests=[
                RetrainRequest(run_key=r.run_key, horizon=r.partition_key, tags=dict(r.tags))
                for r in out.run_requests or []
            ],
        )

    def _tick(self, name: str, day: dt.date, cursor: str | None):
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            resources=self.resources(day),
            sensor_name=name,
        ) as context:
            return self._sensors[name](context)

    def _run(
        self,
        selection: dg.AssetSelection,
        through: dt.date,
        partition: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str | None:
        result = materialize(
            selection,
            partition,
            resources=self.resources(through),
            instance=self.instance,
            raise_on_error=False,
            tags=dict(tags or {}),
            run_config=_QUIET,
        )
        return None if result.success else _failure(result)


def _resources(settings: ReplaySettings, through: dt.date) -> dict[str, Any]:
    # A replay is a rehearsal: its results never go to the production results dataset.
    env = {**settings.env, "CBI_HOME": str(settings.home), "CBI_RESULTS": "none"}
    if settings.smtp:
        env.update(
            CBI_SMTP_HOST=settings.smtp[0],
            CBI_SMTP_PORT=str(settings.smtp[1]),
            CBI_SMTP_SECURITY="none",
            CBI_SMTP_SENDER="cbi-replay@localhost",
            CBI_SMTP_RECIPIENTS="buyer@localhost",
        )
    resources = build_resources(env)
    updates: dict[str, Any] = dict(settings.protocol_overrides)
    if settings.model_kinds:
        updates["model_kinds"] = list(settings.model_kinds)
    # New instances (Dagster builds a resource from its config, not from edited attributes).
    for key, changes in (
        ("market_source", {"replay_through": through.isoformat()}),
        ("protocol", updates),
        (
            "operations",
            {"horizons": list(settings.horizons), "planted_bias": settings.planted_bias},
        ),
    ):
        resource = resources[key]
        resources[key] = type(resource)(**{**_config_of(resource), **changes})
    return resources


def _config_of(resource: dg.ConfigurableResource) -> dict[str, Any]:
    return {
        name: getattr(resource, name)
        for name in type(resource).model_fields
        if getattr(resource, name) is not None
    }


def _failure(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            err = event.step_failure_data.error
            cause = err.cause.message if err and err.cause else (err.message if err else "")
            return f"{event.step_key}: {cause.strip()[:300]}"
    return "unknown failure"
