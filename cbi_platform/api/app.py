"""The buyer-facing forecast API and the buyer's page (FastAPI).

A reader: every answer comes from the published snapshots under the home (`HomeReader`),
held in memory until a file changes; nothing here builds SQL. Data endpoints need an API key
(`X-API-Key: <key>` or `Authorization: Bearer <key>`: machines) or a signed-in session's
cookie (people: `sessions`); /health, /meta, /docs and the page's static files are open, and
the page itself holds no data. The buyer's own rows (users, sessions, programmes, alerts) are
written to the accounts store (`cbi_platform.accounts`), never to a DuckDB file.

The one exception to "a reader": an engineer may answer an open alert (POST /alerts/ack,
/alerts/snooze, /alerts/unsnooze). These need a key like the data endpoints, record the key's
name as who answered, and write through the alert book (`AlertBook.acknowledge` ...: a short
write under the store's lock, then a snapshot), the only requests that open a DuckDB file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from cbi_platform.accounts.users import User
from cbi_platform.api import buyer_mail, insight_routes, programme, schemas
from cbi_platform.api.cache import SnapshotReadError
from cbi_platform.api.data import HomeReader
from cbi_platform.api.errors import ApiError
from cbi_platform.api.keys import ApiKey, verify_key
from cbi_platform.api.release import ReleaseControl, release_control_for_home
from cbi_platform.api.release import router as release_router
from cbi_platform.api.sessions import (
    SAFE_METHODS,
    SessionAuth,
    csrf_ok,
    current_user,
    require_csrf,
)
from cbi_platform.api.sessions import router as session_router
from cbi_platform.api.views import NotPublished
from cbi_platform.operations.alerts import AlertAnswerError, AlertBook, playbook_link
from cbi_platform.storage import StoreBusyError

STATIC_DIR = Path(__file__).with_name("static")
log = logging.getLogger("cbi_platform.api")

# The page loads only its own files; no inline script, so a stored key cannot be read by
# injected markup. /docs (Swagger UI, loaded by FastAPI from a CDN) is left out of it.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
OPEN_DOCS = ("/docs", "/redoc")
ERROR_RESPONSES = {
    401: {"model": schemas.ErrorOut, "description": "no API key"},
    403: {"model": schemas.ErrorOut, "description": "unknown or revoked API key"},
    404: {"model": schemas.ErrorOut, "description": "nothing published yet"},
}
ANSWER_RESPONSES = {
    **ERROR_RESPONSES,
    404: {"model": schemas.ErrorOut, "description": "unknown alert key"},
    409: {"model": schemas.ErrorOut, "description": "the alert is not open / not answered"},
    422: {"model": schemas.ErrorOut, "description": "invalid request (e.g. a day in the past)"},
}
ANSWER_STATUS = {"unknown_alert": 404, "not_open": 409, "nothing_to_remove": 409, "invalid": 422}


class SecurityHeaders:
    """Pure ASGI middleware (no per-request task overhead): adds the headers above."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = list(COMMON_HEADERS)
        if not scope["path"].startswith(OPEN_DOCS):
            extra.append((b"content-security-policy", PAGE_CSP.encode()))

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(
    status: int, code: str, message: str, headers: dict | None = None, field: str | None = None
) -> JSONResponse:
    body = {"error": code, "message": message, "status": status}
    if field is not None:
        body["field"] = field
    return JSONResponse(
        body,
        status_code=status,
        headers={"cache-control": "no-store", **(headers or {})},
    )


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
BEARER = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class SessionCaller:
    """A signed-in person calling a data endpoint (instead of a machine's key)."""

    name: str
    user: User


async def require_key(
    request: Request,
    key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> ApiKey | SessionCaller:
    """The caller: a key record (machines), or a signed-in person's session cookie (the page).
    401 without either; 403 for an unknown or revoked key, and for a cookie write without the
    session's CSRF token or by a buyer."""
    presented = key or (credentials.credentials if credentials else None)
    if not presented:
        session = await request.app.state.auth.session_of(request)
        if session is not None:
            if request.method not in SAFE_METHODS:
                # A person's write here is an engineer's (answering an operating alert).
                if not csrf_ok(session, request):
                    raise ApiError(403, "csrf", "missing or wrong X-CSRF-Token header")
                if session.user.role != "engineer":
                    raise ApiError(403, "engineer_only", "this action is for engineers only")
            return SessionCaller(session.user.email, session.user)
        raise ApiError(
            401,
            "missing_key",
            "sign in, or send an API key as the X-API-Key header (or Authorization: "
            "Bearer); create one with `cbi keys create --name NAME`",
            headers={"www-authenticate": "Bearer"},
        )
    reader: HomeReader = request.app.state.reader
    record = verify_key(reader.keys.get() or (), presented)
    if record is None:
        raise ApiError(403, "unknown_key", "unknown API key")
    if not record.active:
        raise ApiError(403, "revoked_key", "this API key was revoked")
    return record


def _max_business_days_behind() -> int:
    from cbi_platform.operations.config import load_monitoring

    return load_monitoring(os.environ.get("CBI_MONITORING")).refresh.max_business_days_behind


def create_app(
    home: Path | str,
    max_business_days_behind: int | None = None,
    clock: Callable[[], dt.datetime] | None = None,
    release_control: ReleaseControl | None = None,
) -> FastAPI:
    """The API and the page over the platform home `home` (the folder `make run` writes).
    `clock` (tests): the accounts' clock for sessions and lock-outs; `release_control`: where
    engineers' promote/rollback find the registry and audit log (default: the home's)."""
    if max_business_days_behind is None:
        max_business_days_behind = _max_business_days_behind()
    reader = HomeReader(Path(home), max_business_days_behind)
    app = FastAPI(
        title="CBI ZL forecast API",
        version="1",
        description=(
            "Forecasts of the CBOT soybean-oil (ZL) price level at 1w, 1m, 3m, 6m and 12m with "
            "target zones (P10-P90), probability statements, drivers, the detected regime, "
            "accuracy next to the random walk and the procurement recommendation. Data "
            "endpoints need an API key (`X-API-Key` header or `Authorization: Bearer`; create "
            "one with `cbi keys create --name NAME`) or a signed-in session (POST /session)."
        ),
    )
    app.state.reader = reader
    app.state.auth = SessionAuth(home, clock)
    app.add_middleware(SecurityHeaders)
    app.include_router(session_router())
    app.include_router(release_router(release_control or release_control_for_home(home)))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.code, exc.message, exc.headers, exc.field)

    @app.exception_handler(NotPublished)
    async def _not_published(request: Request, exc: NotPublished):
        return _error(404, "not_published", str(exc))

    @app.exception_handler(SnapshotReadError)
    async def _unreadable(request: Request, exc: SnapshotReadError):
        log.error("snapshot unreadable: %s", exc)
        return _error(503, "snapshot_unreadable", f"{exc}; retry shortly")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return _error(404, "not_found", "no such endpoint or file: see /docs")
        if exc.status_code == 405:
            return _error(
                405,
                "method_not_allowed",
                "method not allowed: see /docs for the methods each path takes",
            )
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        details = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        message = "; ".join(f"{d['where']}: {d['problem']}" for d in details) or "invalid request"
        return JSONResponse(
            {"error": "invalid_request", "message": message, "status": 422, "details": details},
            status_code=422,
            headers={"cache-control": "no-store"},
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal", "internal error; the server log has the details")

    keyed = {"dependencies": [Depends(require_key)], "responses": ERROR_RESPONSES}
    app.include_router(insight_routes.router(reader, keyed))  # issue 22 §3, §4, §7

    @app.get("/forecast/{horizon}", response_model=schemas.ForecastOut, tags=["forecasts"], **keyed)
    async def forecast(horizon: schemas.Horizon):
        """The served forecast at one horizon: price level, target zones, the statement."""
        view = reader.view()
        view.require(horizon.value)
        return _json(view.forecast_json[horizon.value])

    @app.get("/predictions", response_model=schemas.PredictionsOut, tags=["forecasts"], **keyed)
    async def predictions():
        """The served forecast at every horizon."""
        return _json(reader.view().predictions_json)

    @app.get("/regime/current", response_model=schemas.RegimeOut, tags=["forecasts"], **keyed)
    async def regime():
        """The detected market regime (trailing data only) and the one-month outlook."""
        return _json(reader.view().regime_json)

    @app.get("/explain/{horizon}", response_model=schemas.ExplainOut, tags=["forecasts"], **keyed)
    async def explain(horizon: schemas.Horizon):
        """The drivers of the served forecast in words, largest % contribution first."""
        view = reader.view()
        view.require(horizon.value)
        return _json(view.explain_json[horizon.value])

    @app.get("/history", response_model=schemas.HistoryOut, tags=["forecasts"], **keyed)
    def history(
        limit: Annotated[int, Query(ge=1, le=5000, description="the last N closes")] = 260,
    ):
        """Recent closes: the price at each as-of date of the served history."""
        return _json(reader.view().history_json(limit))

    @app.get(
        "/monitoring/performance",
        response_model=schemas.PerformanceOut,
        tags=["monitoring"],
        **keyed,
    )
    def performance():
        """Matured served forecasts against the actual price, next to the random walk."""
        return _json(reader.view().performance_json)

    @app.get(
        "/recommendation", response_model=schemas.RecommendationOut, tags=["procurement"], **keyed
    )
    async def recommendation():
        """Today's procurement recommendation (the latest row of the recommendation log)."""
        return _json(reader.recommendation())

    @app.get("/backtest", response_model=schemas.BacktestOut, tags=["procurement"], **keyed)
    async def backtest():
        """Every policy's backtested record, and where the report and plot are."""
        return _json(reader.backtest())

    app.include_router(programme.router(home, current_user, require_csrf))

    playbook_url = os.environ.get("CBI_PLAYBOOK_URL", "docs/PLAYBOOK.md")
    book = AlertBook(Path(home) / "operations.duckdb")  # builds nothing until written

    @app.get("/alerts", response_model=schemas.AlertsOut, tags=["alerts"], **keyed)
    def alerts():
        """The open alerts, each with its playbook link and its answer (acknowledged or
        snoozed, by whom, until when)."""
        rows = []
        for r in book.open_alerts_answered().iter_rows(named=True):
            rows.append(
                {
                    **{k: r[k] for k in ("key", "kind", "horizon", "title", "link", "status")},
                    "opened_as_of": r["opened_as_of"],
                    "last_seen_as_of": r["last_seen_as_of"],
                    "playbook": playbook_link(r["kind"], playbook_url),
                    "answered_by": r["answered_by"] if r["status"] != "open" else None,
                    "answer_until": r["answer_until"] if r["status"] == "snoozed" else None,
                    "answer_reason": r["answer_reason"] if r["status"] != "open" else None,
                    "evidence": json.loads(r["evidence"]) if r["evidence"] else {},
                }
            )
        return schemas.AlertsOut(alerts=rows)

    def _answer(do) -> schemas.AlertAnswerOut:
        try:
            answer = do()
        except AlertAnswerError as exc:
            raise ApiError(ANSWER_STATUS.get(exc.code, 422), exc.code, str(exc)) from exc
        except StoreBusyError as exc:
            raise ApiError(503, "store_busy", f"{exc}; retry shortly") from exc
        return schemas.AlertAnswerOut(
            key=answer.key,
            action=answer.action,
            by=answer.by,
            reason=answer.reason,
            until=answer.until,
            opened_as_of=answer.opened_as_of,
            answered_at=answer.answered_at,
        )

    answering = {"response_model": schemas.AlertAnswerOut, "tags": ["alerts"]}
    answering["responses"] = ANSWER_RESPONSES

    @app.post("/alerts/ack", **answering)
    def acknowledge(
        body: schemas.AcknowledgeIn, caller: Annotated[ApiKey | SessionCaller, Depends(require_key)]
    ):
        """Acknowledge an open alert: no further mail for this episode (recorded, with the
        caller's key name as who)."""
        return _answer(lambda: book.acknowledge(body.key, by=caller.name, reason=body.reason))

    @app.post("/alerts/snooze", **answering)
    def snooze(
        body: schemas.SnoozeIn, caller: Annotated[ApiKey | SessionCaller, Depends(require_key)]
    ):
        """Snooze an open alert until a day (inclusive): no mail for it until then."""
        return _answer(
            lambda: book.snooze(body.key, body.until, by=caller.name, reason=body.reason)
        )

    @app.post("/alerts/unsnooze", **answering)
    def unsnooze(
        body: schemas.AcknowledgeIn, caller: Annotated[ApiKey | SessionCaller, Depends(require_key)]
    ):
        """Remove an alert's acknowledgement or snooze: it mails again."""
        return _answer(lambda: book.unsnooze(body.key, by=caller.name, reason=body.reason))

    @app.get("/health", response_model=schemas.HealthOut, tags=["health"])
    async def health():
        """Data freshness (open, 200 even when stale: read `status`)."""
        return _json(reader.health())

    meta_json = schemas.meta().model_dump_json().encode()

    @app.get("/meta", response_model=schemas.MetaOut, tags=["health"])
    async def meta():
        """The horizons (key, trading days, words) and target-zone levels the page lays out by
        (open: platform constants, no data)."""
        return _json(meta_json)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    app.include_router(buyer_mail.router(Path(home), current_user, require_csrf))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def app_from_env() -> FastAPI:
    """`uvicorn --factory cbi_platform.api.app:app_from_env`: the home of $CBI_HOME."""
    from cbi_platform.settings import home_path

    return create_app(home_path(os.environ))
