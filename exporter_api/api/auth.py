"""`/api/auth`: login with database credentials, refresh (rotation), logout."""

from __future__ import annotations

import contextlib
from typing import Annotated
from urllib.parse import urlsplit

import anyio
import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exporter_api.api.deps import bearer_token, json_response, read_json, services
from exporter_api.audit import hooks as audit
from exporter_api.errors import (
    BadRequest,
    DatabaseUnavailable,
    Forbidden,
    InvalidCredentials,
    Unauthorized,
)
from exporter_api.problems import problem_response
from exporter_api.security.tokens import IssuedTokens

_log = structlog.get_logger("exporter_api.api.auth")

REFRESH_COOKIE = "exporter_refresh"
COOKIE_PATH = "/api/auth"


MAX_USERNAME = 128
MAX_PASSWORD = 1024
MAX_ID = 128
# Unicode category Cc (C0, DEL, C1): never part of a login or an id. A password may hold any
# other character, but NUL cannot be sent to any database.
_CONTROL = r"\x00-\x1f\x7f-\x9f"


def _whole(body: str) -> str:
    """A pattern matching whole strings only: Python's ``$`` also matches before a final
    newline, which the lookahead refuses (the same in JSON Schema's ECMA dialect)."""
    return rf"^{body}$(?![\s\S])"


Username = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_USERNAME,
        pattern=_whole(rf"[^{_CONTROL}]*[^\s{_CONTROL}][^{_CONTROL}]*"),
        description="The database account: not blank, no control characters",
    ),
]
Password = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD, pattern=_whole(r"[^\x00]*"))
]
CatalogId = Annotated[str, msgspec.Meta(max_length=MAX_ID, pattern=_whole(rf"[^{_CONTROL}]*"))]


class LoginRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Checked field by field by msgspec (400 naming the field); the ids then against the
    catalog (the document lists the catalog's ids)."""

    db_username: Username
    db_password: Password
    database_id: CatalogId
    manager_id: CatalogId
    stream_id: CatalogId

    def __repr__(self) -> str:  # never the password, even in a debugger or a traceback
        return (
            f"LoginRequest(db_username={self.db_username!r}, db_password='***', "
            f"database_id={self.database_id!r}, manager_id={self.manager_id!r}, "
            f"stream_id={self.stream_id!r})"
        )


class UserDto(msgspec.Struct, rename="camel"):
    login: str
    database_id: str
    manager_id: str
    stream_id: str


class LoginResponse(msgspec.Struct, rename="camel"):
    access_token: str
    user: UserDto


def _token_response(request: Request, issued: IssuedTokens) -> Response:
    user = issued.user
    response = json_response(
        LoginResponse(
            access_token=issued.access_token,
            user=UserDto(user.login, user.database_id, user.manager_id, user.stream_id),
        ),
        headers={"Cache-Control": "no-store"},
    )
    svc = services(request)
    response.set_cookie(
        REFRESH_COOKIE,
        issued.refresh_token,
        max_age=svc.config.server.refresh_ttl_s,
        path=COOKIE_PATH,
        # https seen here (TLS ending at a trusted proxy: X-Forwarded-Proto) => Secure too.
        secure=svc.settings.cookie_secure or request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


def _clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        REFRESH_COOKIE,
        path=COOKIE_PATH,
        secure=services(request).settings.cookie_secure or request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# The provider's own connect timeout bounds a login; this covers closing the connection after.
_LOGIN_GRACE_S = 10.0


async def login(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, LoginRequest)
    config = svc.config
    database = config.database(body.database_id)
    if database is None:
        raise BadRequest(f"unknown database {body.database_id!r}", field="databaseId")
    manager = config.manager(body.manager_id)
    if manager is None:
        raise BadRequest(f"unknown manager {body.manager_id!r}", field="managerId")
    if all(s.id != body.stream_id for s in manager.streams):
        raise BadRequest(
            f"unknown stream {body.stream_id!r} for manager {body.manager_id!r}", field="streamId"
        )
    key = svc.throttle.key(database.id, body.db_username, _client(request))
    time_limit_s = database.connect_timeout_s + _LOGIN_GRACE_S
    who = audit.LoginOf(body.db_username, database.id, manager.id, body.stream_id)
    # The reservation is taken before the database is asked (429 beyond the limit) and the
    # database call is bounded by the reservation's time limit: parallel attempts stay exact.
    async with audit.login_attempt(svc, request, who, key, time_limit_s) as attempt:
        try:
            with anyio.fail_after(time_limit_s):
                await svc.providers[database.id].verify_login(body.db_username, body.db_password)
        except InvalidCredentials:
            await audit.login(svc, request, who, await attempt.failed(), "invalid_credentials")
            _log.info(
                "login_failed",
                login=body.db_username,
                database_id=database.id,
                reason="invalid_credentials",
            )
            raise
        except (DatabaseUnavailable, TimeoutError) as exc:
            _log.warning(
                "login_failed",
                login=body.db_username,
                database_id=database.id,
                reason="database_unavailable",
            )
            await audit.login(svc, request, who, False, "database_unavailable")
            if isinstance(exc, TimeoutError):
                raise DatabaseUnavailable(
                    f"database {database.id} did not answer in time"
                ) from None
            raise
        await attempt.succeeded()
    issued = await svc.tokens.create_session(
        body.db_username, database.id, manager.id, body.stream_id, body.db_password
    )
    _log.info(
        "login_succeeded",
        login=body.db_username,
        database_id=database.id,
        session_id=issued.user.session_id,
    )
    await audit.login(svc, request, who, False, session_id=issued.user.session_id)
    return _token_response(request, issued)


def _check_same_origin(request: Request) -> None:
    """Refresh rides on a cookie: demand proof that the page itself sent the request.

    Browsers send `Origin` on every POST made by script; it must name this host (the scheme is
    not compared, so a TLS-terminating proxy in front does not matter) or a configured CORS
    origin. Clients without `Origin` (curl, tests) send `X-Requested-With`, which a cross-site
    form cannot set.
    """
    origin = request.headers.get("origin")
    if origin is None:
        if request.headers.get("x-requested-with"):
            return
        raise Forbidden("a same-origin request is required (Origin or X-Requested-With header)")
    parts = urlsplit(origin)
    host = request.headers.get("host", "").lower()
    allowed = {o.lower().rstrip("/") for o in services(request).config.server.cors_origins}
    if origin != "null" and (
        parts.netloc.lower() == host or f"{parts.scheme}://{parts.netloc}".lower() in allowed
    ):
        return
    raise Forbidden("cross-origin refresh requests are refused")


async def refresh(request: Request) -> Response:
    _check_same_origin(request)
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise Unauthorized("no refresh cookie")
    try:
        issued = await services(request).tokens.refresh(token)
    except Unauthorized as exc:
        response = problem_response(exc, instance=request.url.path)
        _clear_cookie(request, response)
        return response
    return _token_response(request, issued)


async def logout(request: Request) -> Response:
    svc = services(request)
    # The cookie's session and the Bearer token's session: both are the caller's (they differ
    # only when a client mixes sessions), and both end here.
    session_ids: set[str] = set()
    token = request.cookies.get(REFRESH_COOKIE)
    if token and (from_cookie := await svc.tokens.session_of_refresh_token(token)):
        session_ids.add(from_cookie)
    if access := bearer_token(request):
        with contextlib.suppress(Unauthorized):
            session_ids.add((await svc.tokens.verify_access_token(access)).session_id)
    for session_id in sorted(session_ids):
        await audit.logout(svc, request, session_id)
        await svc.tokens.revoke_session(session_id, "logout")
    response = Response(status_code=204)
    _clear_cookie(request, response)
    return response


routes = [
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/refresh", refresh, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
]

__all__ = ["REFRESH_COOKIE", "LoginRequest", "LoginResponse", "UserDto", "routes"]
