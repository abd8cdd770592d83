"""`/api/openapi.json` and the operations of the auth and catalog routes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exporter_api.api.auth import LoginRequest, LoginResponse
from exporter_api.api.catalog import DatabasesResponse, ScriptsResponse, StreamsResponse
from exporter_api.api.deps import json_response
from exporter_api.openapi import Operation


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


async def openapi_json(request: Request) -> Response:
    document = request.app.state.openapi
    return json_response(document)


routes = [Route("/api/openapi.json", openapi_json, methods=["GET"])]

__all__ = ["auth_and_catalog_operations", "routes"]
