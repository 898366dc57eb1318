"""Sign-in for people: the session cookie, CSRF, roles; the routes /session and /me/password.

The cookie `cbi_session` is HttpOnly (no script reads it), SameSite=Strict (no other site's
page sends it), Path=/, and Secure when the request came over https (the request's scheme, or
`X-Forwarded-Proto` when `CBI_TRUST_PROXY=1` says a proxy in front terminates TLS). Every
sign-in makes a new session id (a cookie planted before sign-in is never the session after
it). Every state-changing request of a signed-in person carries the session's CSRF token in
`X-CSRF-Token` (the page keeps it in memory from GET /session).

Dependencies for the routes of a signed-in person (other modules take them as arguments):
`current_user` (401 when not signed in), `require_csrf` (403 without the session's token) and
`require_engineer` (403 for a buyer).

Cost per request: a session lookup is one SQLite/PostgreSQL read, so looked-up sessions are
kept in memory for SESSION_CACHE_S seconds keyed by the id's hash. A sign-out or password
change in this process drops them at once; one in another API process takes effect there
within SESSION_CACHE_S seconds.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cbi_platform.accounts.sessions import MAX_SESSION_ID_LENGTH, Session, Sessions, hash_session_id
from cbi_platform.accounts.store import AccountStore
from cbi_platform.accounts.users import (
    AccountError,
    Clock,
    SignInRefused,
    User,
    Users,
    system_clock,
)
from cbi_platform.api.errors import ApiError

COOKIE = "cbi_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_CACHE_S = 5.0
CACHE_MAX_ENTRIES = 10_000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SignInIn(BaseModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class PasswordChangeIn(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    role: str


class SessionOut(BaseModel):
    user: UserOut
    csrf_token: str
    expires_at: str


def trust_proxy_from_env() -> bool:
    return os.environ.get("CBI_TRUST_PROXY", "") == "1"


class SessionAuth:
    """Users and sessions of one home, with the short in-memory cache of looked-up sessions."""

    def __init__(
        self, home: Path | str, clock: Clock | None = None, trust_proxy: bool | None = None
    ):
        store = AccountStore.for_home(home)
        self.clock = clock or system_clock
        self.users = Users(store, self.clock)
        self.sessions = Sessions(store, self.clock)
        self.trust_proxy = trust_proxy_from_env() if trust_proxy is None else trust_proxy
        self._cache: dict[str, tuple[float, Session | None]] = {}

    async def session_of(self, request: Request) -> Session | None:
        """The request's live session (cached a few seconds), or None."""
        if "cbi_session_obj" in request.scope:
            return request.scope["cbi_session_obj"]
        session_id = request.cookies.get(COOKIE)
        session = None
        if session_id and len(session_id) <= MAX_SESSION_ID_LENGTH:
            session = await self._lookup(hash_session_id(session_id))
        request.scope["cbi_session_obj"] = session
        return session

    async def _lookup(self, id_hash: str) -> Session | None:
        hit = self._cache.get(id_hash)
        now = time.monotonic()
        if hit is not None and now - hit[0] < SESSION_CACHE_S:
            session = hit[1]
            if session is None or session.ends_at() > self.clock():
                return session
        session = await run_in_threadpool(self.sessions.lookup_hash, id_hash)
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[id_hash] = (now, session)
        return session

    def forget(self, id_hash: str | None = None, user_id: int | None = None) -> None:
        """Drop cached sessions: one by hash, or all of a user's."""
        if id_hash is not None:
            self._cache.pop(id_hash, None)
        if user_id is not None:
            for key, (_, s) in list(self._cache.items()):
                if s is not None and s.user.id == user_id:
                    self._cache.pop(key, None)

    def is_https(self, request: Request) -> bool:
        if self.trust_proxy:
            forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
            if forwarded:
                return forwarded.lower() == "https"
        return request.url.scheme == "https"

    def client_address(self, request: Request) -> str:
        if self.trust_proxy:
            forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
            if forwarded:
                return forwarded[:100]
        return request.client.host if request.client else "unknown"


def _auth(request: Request) -> SessionAuth:
    return request.app.state.auth


async def current_session(request: Request) -> Session:
    session = await _auth(request).session_of(request)
    if session is None:
        raise ApiError(
            401, "not_signed_in", "not signed in (or the session ended): sign in with POST /session"
        )
    return session


async def current_user(request: Request) -> User:
    """The signed-in person; 401 when there is no live session."""
    return (await current_session(request)).user


def csrf_ok(session: Session, request: Request) -> bool:
    presented = request.headers.get(CSRF_HEADER, "")
    return bool(presented) and hmac.compare_digest(
        presented.encode("utf-8", "replace"), session.csrf_token.encode()
    )


async def require_csrf(request: Request) -> None:
    """Every state-changing request of a signed-in person: 403 without the session's token."""
    session = await current_session(request)
    if not csrf_ok(session, request):
        raise ApiError(
            403,
            "csrf",
            f"missing or wrong {CSRF_HEADER} header: reload the page (GET /session gives the "
            "token)",
        )


async def require_engineer(request: Request) -> User:
    """An engineer's session; 403 for a buyer."""
    user = await current_user(request)
    if user.role != "engineer":
        raise ApiError(403, "engineer_only", "this action is for engineers only")
    return user


def _session_body(session: Session) -> dict:
    u = session.user
    return {
        "user": {"id": u.id, "email": u.email, "name": u.name, "role": u.role},
        "csrf_token": session.csrf_token,
        "expires_at": session.ends_at().astimezone(dt.UTC).isoformat(),
    }


def _with_cookie(auth: SessionAuth, request: Request, session_id: str, session: Session):
    response = JSONResponse(_session_body(session), headers={"cache-control": "no-store"})
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int((session.expires_at - session.created_at).total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=auth.is_https(request),
    )
    return response


def _account_error(exc: AccountError) -> ApiError:
    if isinstance(exc, SignInRefused):
        headers = {"retry-after": str(exc.retry_after_s)} if exc.retry_after_s else None
        return ApiError(exc.status, exc.code, str(exc), headers=headers)
    return ApiError(exc.status, exc.code, str(exc), field=exc.field)


def router() -> APIRouter:
    """POST/GET/DELETE /session and POST /me/password (the app holds `state.auth`)."""
    routes = APIRouter(tags=["sign-in"])

    @routes.post("/session", response_model=SessionOut)
    async def sign_in(body: SignInIn, request: Request):
        """Sign in with email and password: sets the session cookie (a new id every time) and
        answers the user and the CSRF token for writes."""
        auth = _auth(request)
        try:
            user = await run_in_threadpool(
                auth.users.authenticate, body.email, body.password, auth.client_address(request)
            )
        except AccountError as exc:
            raise _account_error(exc) from exc
        planted = request.cookies.get(COOKIE)
        if planted and len(planted) <= MAX_SESSION_ID_LENGTH:
            old = hash_session_id(planted)
            await run_in_threadpool(auth.sessions.destroy, old)
            auth.forget(old)
        session_id, session = await run_in_threadpool(auth.sessions.create, user)
        return _with_cookie(auth, request, session_id, session)

    @routes.get("/session", response_model=SessionOut)
    async def who_am_i(session: Annotated[Session, Depends(current_session)]):
        """The signed-in user and the session's CSRF token; 401 when not signed in."""
        return JSONResponse(_session_body(session), headers={"cache-control": "no-store"})

    @routes.delete("/session", dependencies=[Depends(require_csrf)])
    async def sign_out(request: Request, session: Annotated[Session, Depends(current_session)]):
        """Sign out: the session ends on the server and the cookie is cleared."""
        auth = _auth(request)
        await run_in_threadpool(auth.sessions.destroy, session.id_hash)
        auth.forget(session.id_hash)
        response = JSONResponse({"signed_out": True}, headers={"cache-control": "no-store"})
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=auth.is_https(request)
        )
        return response

    @routes.post("/me/password", response_model=SessionOut, dependencies=[Depends(require_csrf)])
    async def change_password(
        body: PasswordChangeIn,
        request: Request,
        session: Annotated[Session, Depends(current_session)],
    ):
        """Change one's password (needs the current one): every session of the user ends, and
        this browser gets a new one."""
        auth = _auth(request)
        try:
            user = await run_in_threadpool(
                auth.users.change_password,
                session.user.id,
                body.current_password,
                body.new_password,
            )
        except AccountError as exc:
            raise _account_error(exc) from exc
        auth.forget(user_id=user.id)
        session_id, new_session = await run_in_threadpool(auth.sessions.create, user)
        return _with_cookie(auth, request, session_id, new_session)

    return routes
