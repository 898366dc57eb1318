"""The buyer's mail endpoints (issue 22 §5-§6): his digest cadence, his price alerts, and the
unsubscribe link of every mail (a page with one button; one-click POST for mail clients).

`router(home, current_user, require_csrf)` takes the sign-in dependencies as arguments (the
shared contract of `api.sessions`): every `/me/...` route reads or changes the signed-in user's
rows only; another user's alert id answers 404 like a missing one, so ids do not leak. Writes
need the CSRF dependency. `/unsubscribe` is open: the token in the link is the credential.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from cbi_platform.accounts import digest, price_alerts
from cbi_platform.accounts.store import AccountStore

NO_STORE = {"cache-control": "no-store"}


class DigestIn(BaseModel):
    cadence: Literal["daily", "weekly", "off"] = Field(
        description="daily: each new as-of date; weekly: the first as-of date of each week"
    )


class DigestOut(BaseModel):
    cadence: str
    last_sent_as_of: str | None


class AlertIn(BaseModel):
    side: Literal["below", "above"]
    level: float | None = Field(default=None, description="a fixed level in c/lb (> 0)")
    horizon: Literal["1w", "1m", "3m", "6m", "12m"] | None = Field(
        default=None, description="a zone rule's horizon (with zone)"
    )
    zone: Literal["p10", "p30", "p50", "p70", "p90"] | None = Field(
        default=None, description="a zone rule: the day's served zone level"
    )
    note: str | None = Field(default=None, max_length=price_alerts.MAX_NOTE)


class AlertOut(BaseModel):
    id: int
    kind: str
    side: str
    level: float | None
    horizon: str | None
    zone: str | None
    note: str | None
    description: str
    created_at: str
    last_side: str | None


class AlertsOut(BaseModel):
    alerts: list[AlertOut]
    max_alerts: int


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message, "status": status, **extra},
        status_code=status,
        headers=NO_STORE,
    )


def _page(title: str, text: str, status: int = 200) -> HTMLResponse:
    e = html.escape
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/static/app.css"></head><body>'
        f'<main class="card unsubscribe"><h1>{e(title)}</h1><p>{e(text)}</p>'
        '<p><a href="/">Open the ZL page</a></p></main></body></html>'
    )
    return HTMLResponse(body, status_code=status, headers=NO_STORE)


def router(home: Path, current_user, require_csrf) -> APIRouter:
    """The routes, over the accounts store of `home`."""
    store = AccountStore.for_home(home)
    routes = APIRouter(tags=["buyer mail"])
    signed_in = Depends(current_user)  # a default, not Annotated: these are closures
    writes = [Depends(require_csrf)]

    @routes.get("/me/digest", response_model=DigestOut)
    def get_digest(user: Any = signed_in):
        """Your digest: its cadence ('off' until you choose one) and the last as-of date sent."""
        return DigestOut(**digest.subscription(store, user.id))

    @routes.put("/me/digest", response_model=DigestOut, dependencies=writes)
    def put_digest(body: DigestIn, user: Any = signed_in):
        """Choose daily, weekly or off."""
        return DigestOut(**digest.set_cadence(store, user.id, body.cadence))

    @routes.get("/me/alerts", response_model=AlertsOut)
    def get_alerts(user: Any = signed_in):
        """Your active price alerts."""
        return AlertsOut(
            alerts=[a.as_json() for a in price_alerts.list_alerts(store, user.id)],
            max_alerts=price_alerts.MAX_ALERTS_PER_USER,
        )

    @routes.post("/me/alerts", response_model=AlertOut, status_code=201, dependencies=writes)
    def post_alert(body: AlertIn, user: Any = signed_in):
        """A price alert: a fixed level (side + level) or a zone rule (side + horizon + zone)."""
        try:
            alert = price_alerts.add_alert(
                store, user.id, body.side, body.level, body.horizon, body.zone, body.note
            )
        except price_alerts.PriceAlertError as exc:
            return _error(
                exc.status,
                "invalid_request" if exc.status == 422 else "too_many_alerts",
                str(exc),
                details=[{"where": f"body.{exc.field}", "problem": str(exc)}],
            )
        return JSONResponse(alert.as_json(), status_code=201, headers=NO_STORE)

    @routes.delete("/me/alerts/{alert_id}", status_code=204, dependencies=writes)
    def delete_alert(alert_id: int, user: Any = signed_in):
        """Remove one of your alerts (404 when you have no such alert)."""
        if not price_alerts.remove_alert(store, user.id, alert_id):
            return _error(404, "not_found", f"you have no price alert {alert_id}")
        return Response(status_code=204, headers=NO_STORE)

    def _unsubscribe(token: str) -> HTMLResponse:
        said = digest.unsubscribe(store, token)
        if said is None:
            return _page(
                "Link not recognised",
                "This unsubscribe link is not valid. Change your mail on the ZL page instead.",
                404,
            )
        return _page("Unsubscribed", said)

    @routes.get("/unsubscribe", response_class=HTMLResponse)
    def unsubscribe(token: Annotated[str, Query(min_length=8, max_length=200)]):
        """The link in a mail: a page with one button that unsubscribes (POST). Opening the
        link changes nothing, so a mail scanner that follows links cannot unsubscribe anyone."""
        e = html.escape
        body = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Unsubscribe</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="stylesheet" href="/static/app.css"></head><body>'
            '<main class="card unsubscribe"><h1>Unsubscribe</h1>'
            "<p>Stop the mail this link came with (the digest, or this price alert)?</p>"
            f'<form method="post" action="/unsubscribe?token={e(token, quote=True)}">'
            '<button type="submit">Unsubscribe</button></form>'
            '<p><a href="/">Open the ZL page</a></p></main></body></html>'
        )
        return HTMLResponse(body, headers=NO_STORE)

    @routes.post("/unsubscribe", response_class=HTMLResponse)
    def unsubscribe_one_click(token: Annotated[str, Query(min_length=8, max_length=200)]):
        """Stops the digest (or removes the price alert) the token came with: the page's
        button, and RFC 8058 one-click unsubscribe (List-Unsubscribe-Post, what a mail client's
        own unsubscribe button sends). Open (the token is the credential) and idempotent."""
        return _unsubscribe(token)

    return routes
