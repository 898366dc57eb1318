"""The signed-in buyer's programme and its backtest (/me/programme...).

Every route reads and writes only the signed-in user's own programme: the user comes from the
`current_user` dependency, never from the request's body or path. Writes also pass
`require_csrf`. The backtest is requested, not run, here: POST queues it in the accounts store
(or answers the cached result), the `programme_backtest_sensor` starts the Dagster run, and the
page polls GET until it is ready. The data as-of date is the served forecasts' (what the page
shows); a result for an older date is outdated and a request queues it again.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from cbi_platform.accounts import programmes as pg
from cbi_platform.accounts.store import AccountStore

POLL_SECONDS = 3
TAGS = ["your programme"]


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message, "status": status, **extra},
        status_code=status,
        headers={"cache-control": "no-store"},
    )


def _no_store(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})


def _bounds() -> dict[str, dict[str, Any]]:
    return {
        name: {"min": low, "max": high, "unit": unit, "integer": integer}
        for name, (low, high, unit, integer) in pg.BOUNDS.items()
    }


def _as_of(request: Request) -> str:
    """The served forecasts' as-of date (NotPublished, answered 404, when none)."""
    return str(request.app.state.reader.view().as_of)


def _recommendation(request: Request) -> dict[str, Any] | None:
    try:
        return json.loads(request.app.state.reader.recommendation())
    except LookupError:  # NotPublished: no recommendation logged yet
        return None


def router(home: Path | str, current_user: Callable, require_csrf: Callable) -> APIRouter:
    """The /me/programme routes over `home`'s accounts store; `current_user` and `require_csrf`
    are api.sessions' (create_app passes them)."""
    store = AccountStore.for_home(home)
    routes = APIRouter(tags=TAGS)
    user_dep = Annotated[Any, Depends(current_user)]

    def programme_body(request: Request, user) -> dict[str, Any]:
        programme, is_default = pg.get_programme(store, user.id)
        return {
            "programme": programme.as_json(),
            "default": is_default,
            "programme_hash": pg.programme_hash(programme),
            "bounds": _bounds(),
            "recommendation": pg.scaled_recommendation(_recommendation(request), programme),
        }

    @routes.get("/me/programme")
    def get_programme(request: Request, user: user_dep):
        """Your programme (or the default, `default: true`, until you set one), the fields'
        ranges, and today's recommendation scaled to your volume."""
        return _no_store(programme_body(request, user))

    @routes.put("/me/programme", dependencies=[Depends(require_csrf)])
    def put_programme(request: Request, user: user_dep, body: Annotated[dict[str, Any], Body()]):
        """Set your programme: railcar_lb and railcars_per_window (or total_lb), window_days,
        carry_cents_per_lb_month, max_worst_shortfall_cents. 422 names the bad field."""
        try:
            programme = pg.validate_programme(body)
        except pg.ProgrammeError as exc:
            return _error(422, "invalid_programme", str(exc), field=exc.field)
        pg.set_programme(store, user.id, programme)
        return _no_store(programme_body(request, user))

    def status_body(request: Request, user, view: dict[str, Any], queued: bool | None = None):
        programme, is_default = pg.get_programme(store, user.id)
        body = {**view, "programme": programme.as_json(), "default": is_default}
        body["poll_seconds"] = POLL_SECONDS if view["status"] in ("queued", "running") else None
        if queued is not None:
            body["queued"] = queued
        return body

    @routes.post("/me/programme/backtest", dependencies=[Depends(require_csrf)])
    def request_backtest(request: Request, user: user_dep):
        """Ask for your programme's backtest on today's data: 202 when this queued it, 200 with
        the cached result (ready) or the status of the one already queued or running."""
        programme, _ = pg.get_programme(store, user.id)
        view, queued = pg.request_backtest(store, programme, _as_of(request))
        return _no_store(status_body(request, user, view, queued), 202 if queued else 200)

    @routes.get("/me/programme/backtest")
    def backtest_status(request: Request, user: user_dep):
        """Your programme's backtest: none | queued | running | ready (with the result) |
        failed (with the error); `outdated` when it ran on older data than today's."""
        programme, _ = pg.get_programme(store, user.id)
        view = pg.backtest_status(store, programme, _as_of(request))
        return _no_store(status_body(request, user, view))

    return routes
