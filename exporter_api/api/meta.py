"""`/api/openapi.json`, `/api/docs`, `/healthz`, `/readyz` and the operations of the auth and
catalog routes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from exporter_api.api.auth import LoginRequest, LoginResponse, UserDto
from exporter_api.api.catalog import (
    ColumnItemDto,
    ColumnsProfileDto,
    DatabasesResponse,
    GroupDto,
    ScriptDto,
    ScriptsResponse,
    StreamsResponse,
)
from exporter_api.api.deps import json_response
from exporter_api.errors import NotFound
from exporter_api.openapi import ANONYMOUS, BEARER, REFRESH_COOKIE_AUTH, Operation
from exporter_api.problems import problem

if TYPE_CHECKING:
    from exporter_api.config import ExportConfig


class HealthResponse(msgspec.Struct):
    """The process is alive (``ok``) or ready to take requests (``ready``)."""

    status: str


# The contract's examples (section 7.1); the login one is the demo catalog's.
LOGIN_EXAMPLE = LoginRequest(
    db_username="USER1",
    db_password="******",  # noqa: S106  # the contract's placeholder
    database_id="db-test",
    manager_id="m1",
    stream_id="s1",
)
LOGIN_RESPONSE_EXAMPLE = LoginResponse(
    access_token="eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",  # noqa: S106  # a placeholder
    user=UserDto(login="USER1", database_id="db-test", manager_id="m1", stream_id="s1"),
)
SCRIPTS_EXAMPLE = ScriptsResponse(
    groups=[
        GroupDto(
            id="g-sales",
            display_name="Sales",
            scripts=[
                ScriptDto(
                    id="s-orders",
                    display_name="Orders export",
                    execution_lane=0,
                    columns_profile_id="orders_cols",
                )
            ],
        )
    ],
    columns_profiles=[
        ColumnsProfileDto(
            id="orders_cols",
            items=[
                ColumnItemDto(id="order_id", label="OrderId"),
                ColumnItemDto(id="customer", label="Customer"),
            ],
        )
    ],
)

_REQUESTED_WITH = {
    "name": "X-Requested-With",
    "in": "header",
    "required": False,
    "description": "Proof of a same-origin request for clients that send no Origin header"
    " (any value; a cross-site form cannot set it). Without it and without a same-origin"
    " Origin, refresh is refused with 403.",
    "schema": {"type": "string", "minLength": 1},
}


def login_schema(config: ExportConfig) -> dict[str, dict[str, Any]]:
    """What the login checks its ids against (the catalog), for the LoginRequest schema: the
    ids as enums, and each manager with its own streams."""

    def ids(values: Iterable[str]) -> dict[str, Any]:
        return {"type": "string", "enum": sorted(set(values))}

    return {
        "LoginRequest": {
            "properties": {
                "databaseId": ids(d.id for d in config.databases),
                "managerId": ids(m.id for m in config.managers),
                "streamId": ids(s.id for m in config.managers for s in m.streams),
            },
            "anyOf": [
                {
                    "properties": {
                        "managerId": {"const": m.id},
                        "streamId": ids(s.id for s in m.streams),
                    }
                }
                for m in config.managers
            ],
        }
    }


def auth_and_catalog_operations() -> list[Operation]:
    return [
        Operation(
            "post",
            "/api/auth/login",
            "Log in with database credentials",
            "login",
            "auth",
            request=LoginRequest,
            response=LoginResponse,
            errors=(400, 401, 413, 429, 503),
            security=(),
            request_example=LOGIN_EXAMPLE,
            response_example=LOGIN_RESPONSE_EXAMPLE,
            response_headers={
                "Set-Cookie": {
                    "description": "The HttpOnly refresh cookie (exporter_refresh, path /api/auth)",
                    "schema": {"type": "string"},
                }
            },
            description="streamId must be one of managerId's streams. Repeated failures for one"
            " user and client are locked out for a while (429 with Retry-After).",
        ),
        Operation(
            "post",
            "/api/auth/refresh",
            "New access token from the refresh cookie (rotates it)",
            "refresh",
            "auth",
            response=LoginResponse,
            errors=(401, 403),
            security=(REFRESH_COOKIE_AUTH,),
            headers=(_REQUESTED_WITH,),
            response_example=LOGIN_RESPONSE_EXAMPLE,
        ),
        Operation(
            "post",
            "/api/auth/logout",
            "Revoke the session and clear the cookie",
            "logout",
            "auth",
            status=204,
            security=(ANONYMOUS, BEARER, REFRESH_COOKIE_AUTH),
            description="Ends the session of the refresh cookie and of the Bearer token, when"
            " sent; always 204.",
        ),
        Operation(
            "get",
            "/api/catalog/databases",
            "Databases for the login form",
            "listDatabases",
            "catalog",
            response=DatabasesResponse,
            security=(),
        ),
        Operation(
            "get",
            "/api/catalog/streams",
            "Managers and their streams",
            "listStreams",
            "catalog",
            response=StreamsResponse,
            security=(),
        ),
        Operation(
            "get",
            "/api/catalog/scripts",
            "Groups, scripts and column profiles",
            "listScripts",
            "catalog",
            response=ScriptsResponse,
            response_example=SCRIPTS_EXAMPLE,
        ),
    ]


def health_operations() -> list[Operation]:
    return [
        Operation(
            "get",
            "/healthz",
            "Liveness: the process answers (no dependency is checked)",
            "healthz",
            "health",
            response=HealthResponse,
            security=(),
        ),
        Operation(
            "get",
            "/readyz",
            "Readiness: not draining, state store, Redis (when configured) and the files"
            " directory usable; 503 problem JSON naming what failed",
            "readyz",
            "health",
            response=HealthResponse,
            errors=(503,),
            security=(),
        ),
    ]


_STATIC = Path(__file__).resolve().parent.parent / "static"
_DOCS_PAGE = _STATIC / "api-docs.html"
_DOCS_BUNDLE = _STATIC / "vendor" / "swagger-ui" / "swagger-ui-bundle.js"
# The page runs this origin's scripts only (no inline script, no CDN, no validator badge).
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'"
)


async def api_docs(request: Request) -> Response:
    """Swagger UI on /api/openapi.json, from the vendored swagger-ui-dist (`make assets`)."""
    if not (_DOCS_PAGE.is_file() and _DOCS_BUNDLE.is_file()):
        raise NotFound("the API documentation page is not installed: run `make assets`")
    return FileResponse(
        _DOCS_PAGE,
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": DOCS_CSP},
    )


async def openapi_json(request: Request) -> Response:
    document = request.app.state.openapi
    return json_response(document)


_NO_STORE = {"Cache-Control": "no-store"}


async def healthz(request: Request) -> Response:
    return json_response(HealthResponse("ok"), headers=_NO_STORE)


async def readyz(request: Request) -> Response:
    failures = await request.app.state.health.failures()
    if failures:
        return problem(
            503,
            "Service Unavailable",
            "not ready: " + "; ".join(failures),
            instance=request.url.path,
            headers=_NO_STORE,
        )
    return json_response(HealthResponse("ready"), headers=_NO_STORE)


routes = [
    Route("/api/openapi.json", openapi_json, methods=["GET"]),
    Route("/api/docs", api_docs, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]

__all__ = [
    "HealthResponse",
    "auth_and_catalog_operations",
    "health_operations",
    "login_schema",
    "routes",
]
