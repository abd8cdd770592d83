"""`/api/openapi.json`, `/healthz`, `/readyz` and the operations of the auth and catalog routes."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exporter_api.api.auth import LoginRequest, LoginResponse
from exporter_api.api.catalog import DatabasesResponse, ScriptsResponse, StreamsResponse
from exporter_api.api.deps import json_response
from exporter_api.openapi import Operation
from exporter_api.problems import problem


class HealthResponse(msgspec.Struct):
    """The process is alive (``ok``) or ready to take requests (``ready``)."""

    status: str


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
            auth=False,
        ),
        Operation(
            "post",
            "/api/auth/refresh",
            "New access token from the refresh cookie (rotates it)",
            "refresh",
            "auth",
            response=LoginResponse,
            errors=(401, 403),
            auth=False,
        ),
        Operation(
            "post",
            "/api/auth/logout",
            "Revoke the session and clear the cookie",
            "logout",
            "auth",
            status=204,
            auth=False,
        ),
        Operation(
            "get",
            "/api/catalog/databases",
            "Databases for the login form",
            "listDatabases",
            "catalog",
            response=DatabasesResponse,
            auth=False,
        ),
        Operation(
            "get",
            "/api/catalog/streams",
            "Managers and their streams",
            "listStreams",
            "catalog",
            response=StreamsResponse,
            auth=False,
        ),
        Operation(
            "get",
            "/api/catalog/scripts",
            "Groups, scripts and column profiles",
            "listScripts",
            "catalog",
            response=ScriptsResponse,
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
            auth=False,
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
            auth=False,
        ),
    ]


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
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]

__all__ = ["HealthResponse", "auth_and_catalog_operations", "health_operations", "routes"]
