"""Engineers promote and roll back through the API (issue 22 §1), as `cbi promote` /
`cbi rollback` do: the same release control functions, the same audit row, with the signed-in
engineer's email as who. Sessions with the engineer role only (an API key, a machine's, cannot:
a person answers for a serving change), and the session's CSRF token on every request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cbi_platform.accounts.users import User
from cbi_platform.api.errors import ApiError
from cbi_platform.api.schemas import Horizon
from cbi_platform.api.sessions import require_csrf, require_engineer
from cbi_platform.release.control import AuditLog, ServingControlError, promote, rollback
from cbi_platform.tracking import Tracker

# () -> (the MLflow tracker, the audit log): built per request, as the CLI builds them per call.
ReleaseControl = Callable[[], tuple[Tracker, AuditLog]]
VERSION_PATTERN = r"^[A-Za-z0-9_./-]{1,60}$"


def release_control_for_home(home: Path | str, env: Mapping[str, str] | None = None):
    """The registry and audit log of the home, where `cbi promote` finds them (the
    `mlflow` and `operations` resources: MLFLOW_TRACKING_URI or the home's mlflow.db)."""
    env = os.environ if env is None else env
    home = Path(home)

    def control() -> tuple[Tracker, AuditLog]:
        uri = env.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        return Tracker(uri, home / "mlartifacts"), AuditLog(home / "operations.duckdb")

    return control


class PromoteIn(BaseModel):
    horizon: Horizon
    version: str = Field(pattern=VERSION_PATTERN, description="e.g. 3, v3 or cbi-zl-1m/v3")
    reason: str = Field(min_length=1, max_length=500)
    force: bool = Field(
        default=False, description="serve a version that failed its gates (recorded)"
    )


class RollbackIn(BaseModel):
    horizon: Horizon
    reason: str = Field(min_length=1, max_length=500)
    to_version: str | None = Field(default=None, pattern=VERSION_PATTERN)
    force: bool = False


class ReleaseOut(BaseModel):
    changed: bool
    horizon: str
    model: str
    from_version: str | None
    to_version: str
    message: str
    audit_seq: int | None


def router(control: ReleaseControl) -> APIRouter:
    routes = APIRouter(tags=["release"], dependencies=[Depends(require_csrf)])

    def _run(do) -> ReleaseOut:
        try:
            result = do()
        except ServingControlError as exc:
            raise ApiError(409, "release_refused", str(exc)) from exc
        return ReleaseOut(
            changed=result.changed,
            horizon=result.horizon,
            model=result.model,
            from_version=result.from_version,
            to_version=result.to_version,
            message=result.message,
            audit_seq=int(result.audit["seq"]) if result.audit else None,
        )

    @routes.post("/release/promote", response_model=ReleaseOut)
    async def promote_version(
        body: PromoteIn, engineer: Annotated[User, Depends(require_engineer)]
    ):
        """Serve a registered version (engineers; writes an audit row with your email)."""

        def do():
            tracker, audit = control()
            return promote(
                tracker,
                audit,
                body.horizon.value,
                body.version,
                actor=engineer.email,
                reason=body.reason,
                force=body.force,
            )

        return await run_in_threadpool(_run, do)

    @routes.post("/release/rollback", response_model=ReleaseOut)
    async def rollback_version(
        body: RollbackIn, engineer: Annotated[User, Depends(require_engineer)]
    ):
        """Serve the previous champion, or `to_version` (engineers; writes an audit row)."""

        def do():
            tracker, audit = control()
            return rollback(
                tracker,
                audit,
                body.horizon.value,
                actor=engineer.email,
                reason=body.reason,
                to_version=body.to_version,
                force=body.force,
            )

        return await run_in_threadpool(_run, do)

    return routes
