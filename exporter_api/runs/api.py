"""Runs REST: start, list, read, cancel, and download files (one, or all as a streamed ZIP).

Every endpoint answers 404 for a run that is not the caller's, exactly as for a run that does
not exist, so run ids of other users cannot be probed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from exporter_api.api import deps
from exporter_api.api.deps import json_response, read_json
from exporter_api.audit import hooks as audit
from exporter_api.errors import (
    Conflict,
    ExporterError,
    Forbidden,
    NotFound,
    TooManyRequests,
)
from exporter_api.openapi import BEARER, SIGNED_LINK, Operation
from exporter_api.runs.downloads import Downloads
from exporter_api.runs.errors import (
    DatabaseNotConfigured,
    RunAlreadyFinished,
    RunError,
    RunNotFound,
    TooManyActiveRuns,
)
from exporter_api.runs.models import (
    FILE_ID_PATTERN,
    RUN_ID_PATTERN,
    FileId,
    GroupSelection,
    RunCreated,
    RunCreateRequest,
    RunFiles,
    RunId,
    RunList,
    RunState,
    ScriptSelection,
    Selection,
)
from exporter_api.runs.repository import RunRepository
from exporter_api.runs.selection import plan_run
from exporter_api.runs.service import RunService, owns, sign_files, state_for
from exporter_api.runs.writers.formats import MEDIA_TYPES, format_of
from exporter_api.security.links import ZIP_TARGET, DownloadLinks, LinkExpired, LinkInvalid

if TYPE_CHECKING:
    from exporter_api.config import ExportConfig
    from exporter_api.security import AuthenticatedUser
    from exporter_api.services import Services

__all__ = ["RunsApi", "http_error", "owns", "runs_operations", "sign_files", "state_for"]

_ULID = re.compile(RUN_ID_PATTERN)
_FILE_ID = re.compile(FILE_ID_PATTERN)
_NO_STORE = {"Cache-Control": "private, no-store"}  # bodies carry signed download links


class RunsBackend(Protocol):
    """What the routes need from the component (available once the app has started)."""

    config: ExportConfig

    @property
    def services(self) -> Services: ...

    @property
    def service(self) -> RunService: ...

    @property
    def repository(self) -> RunRepository: ...

    @property
    def files_root(self) -> Path: ...

    @property
    def links(self) -> DownloadLinks: ...

    async def authenticate(self, request: Request) -> AuthenticatedUser: ...

    async def session_user(self, session_id: str) -> AuthenticatedUser | None: ...


def http_error(exc: RunError) -> ExporterError:
    """The one mapping of the run domain's errors to HTTP (problem JSON)."""
    if isinstance(exc, RunNotFound):
        return NotFound(exc.detail)
    if isinstance(exc, RunAlreadyFinished):
        return Conflict(exc.detail)
    if isinstance(exc, TooManyActiveRuns):
        return TooManyRequests(exc.detail, retry_after_s=exc.retry_after_s)
    if isinstance(exc, DatabaseNotConfigured):
        return NotFound(exc.detail)
    return ExporterError(exc.detail)


def _mapped(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except RunError as exc:
            raise http_error(exc) from None

    return endpoint


class RunPath(msgspec.Struct, rename="camel"):
    run_id: RunId


class RunFilePath(msgspec.Struct, rename="camel"):
    run_id: RunId
    file_id: FileId


class RunListQuery(msgspec.Struct):
    """``GET /api/runs``: decoded by `read_query`, so the document shows what is checked."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=100, description="Page size")] = 20
    cursor: Annotated[RunId, msgspec.Meta(description="nextCursor of the previous page")] | None = (
        None
    )


# The contract's example (section 7.1), valid against the demo catalog.
RUN_REQUEST_EXAMPLE = RunCreateRequest(
    mode="AllGroups",
    selection=Selection(
        groups=[
            GroupSelection(
                group_id="g-sales",
                scripts=[
                    ScriptSelection(
                        script_id="s-orders",
                        export_mode="CustomColumns",
                        selected_column_item_ids=["order_id", "customer"],
                    )
                ],
            )
        ]
    ),
)
RUN_CREATED_EXAMPLE = RunCreated(run_id="01KB5Q4ZK8M3T2V6W9YB0C1DEF", status="Queued")


def _run_link(operation_id: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": {"runId": "$response.body#/runId"}}


# What a file is served as, by its format (CSV, gzip-compressed CSV, XLSX).
FILE_MEDIA_TYPES = tuple(dict.fromkeys(MEDIA_TYPES.values()))
_BINARY = {"type": "string", "format": "binary"}


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": {"type": "string"}}


_ATTACHMENT = {"Content-Disposition": _header("attachment, with the file's name")}
_FILE_HEADERS = {
    "X-Content-SHA256": _header("SHA-256 of the whole file, hex (as sha256 in the listing)"),
    "Accept-Ranges": _header("bytes"),
}
_RANGE = {
    "name": "Range",
    "in": "header",
    "required": False,
    "description": "bytes=<first>-<last>: resume an interrupted download (206)",
    "schema": {"type": "string"},
}

# A run's state and its file list both name its files: the downloads follow from either.
_FILE_LINKS = {
    "DownloadRunFile": {
        "operationId": "downloadRunFile",
        "parameters": {
            "runId": "$response.body#/runId",
            "fileId": "$response.body#/files/0/fileId",
        },
    },
    "DownloadRunZip": _run_link("downloadRunZip"),
}


def runs_operations() -> list[Operation]:
    """OpenAPI descriptions of the routes below (merged into /api/openapi.json by the app)."""
    download = (BEARER, SIGNED_LINK)
    return [
        Operation(
            "post",
            "/api/runs",
            "Start an export run",
            "createRun",
            "runs",
            request=RunCreateRequest,
            response=RunCreated,
            status=201,
            errors=(400, 401, 404, 413, 429),
            request_example=RUN_REQUEST_EXAMPLE,
            response_example=RUN_CREATED_EXAMPLE,
            response_headers={
                "Location": {
                    "description": "The new run: /api/runs/{runId}",
                    "required": True,
                    "schema": {"type": "string"},
                }
            },
            links={
                "GetRun": _run_link("getRun"),
                "CancelRun": _run_link("cancelRun"),
                "ListRunFiles": _run_link("listRunFiles"),
            },
            description="The selection is checked against the catalog (unknown ids, a mode that"
            " does not fit the enabled groups or scripts, a CustomColumns script without"
            " columns: 400 naming the field); a user has at most"
            " server.max_active_runs_per_user active runs (429).",
        ),
        Operation(
            "get",
            "/api/runs",
            "The caller's runs, newest first",
            "listRuns",
            "runs",
            response=RunList,
            errors=(400, 401),
            query=RunListQuery,
        ),
        Operation(
            "get",
            "/api/runs/{runId}",
            "Full state of a run (for a page reload)",
            "getRun",
            "runs",
            response=RunState,
            errors=(401, 404),
            path_params=RunPath,
            links=_FILE_LINKS,
        ),
        Operation(
            "post",
            "/api/runs/{runId}/cancel",
            "Cancel a run",
            "cancelRun",
            "runs",
            response=RunState,
            status=202,
            errors=(401, 404, 409),
            path_params=RunPath,
        ),
        Operation(
            "get",
            "/api/runs/{runId}/files",
            "Files of a run",
            "listRunFiles",
            "runs",
            response=RunFiles,
            errors=(401, 404),
            path_params=RunPath,
            links=_FILE_LINKS,
        ),
        Operation(
            "get",
            "/api/runs/{runId}/files/{fileId}",
            "Download one file",
            "downloadRunFile",
            "runs",
            response="binary",
            response_content_type=FILE_MEDIA_TYPES,
            response_headers={**_ATTACHMENT, **_FILE_HEADERS},
            errors=(401, 403, 404, 416, 429),
            error_headers={416: {"Content-Range": _header("bytes */<size of the file>")}},
            more_responses={
                206: {
                    "description": "The byte range asked for (one range; several: the whole file)",
                    "headers": {
                        **_ATTACHMENT,
                        **_FILE_HEADERS,
                        "Content-Range": _header("bytes <first>-<last>/<size>"),
                    },
                    "content": {t: {"schema": _BINARY} for t in FILE_MEDIA_TYPES},
                }
            },
            path_params=RunFilePath,
            headers=(_RANGE,),
            security=download,
        ),
        Operation(
            "get",
            "/api/runs/{runId}/files.zip",
            "Download every file as a ZIP",
            "downloadRunZip",
            "runs",
            response="binary",
            response_content_type="application/zip",
            response_headers=_ATTACHMENT,
            errors=(401, 403, 404, 429),
            path_params=RunPath,
            security=download,
        ),
    ]


class RunsApi:
    def __init__(self, backend: RunsBackend) -> None:
        self.backend = backend
        self.downloads = Downloads(backend.config.server.max_downloads_per_user)

    def routes(self) -> list[BaseRoute]:
        return [
            # One route per path, so a wrong method gets a 405 with the full `Allow` header.
            Route("/api/runs", _mapped(self.runs), methods=["GET", "POST"]),
            Route("/api/runs/{run_id}", _mapped(self.get_run), methods=["GET"]),
            Route("/api/runs/{run_id}/cancel", _mapped(self.cancel_run), methods=["POST"]),
            Route("/api/runs/{run_id}/files", _mapped(self.list_files), methods=["GET"]),
            Route("/api/runs/{run_id}/files.zip", self.download_zip, methods=["GET"]),
            Route("/api/runs/{run_id}/files/{file_id}", self.download_file, methods=["GET"]),
        ]

    async def _own_run(self, request: Request) -> tuple[AuthenticatedUser, str]:
        user = await self.backend.authenticate(request)
        run_id = request.path_params["run_id"]
        if not _ULID.match(run_id) or not owns(await self.backend.repository.owner(run_id), user):
            raise NotFound("run not found")
        return user, run_id

    @staticmethod
    def _signed(request: Request) -> bool:
        """A signed link without a Bearer token (a token, when sent, is what is checked: a link
        of another user's session is then a 404 like any other run of theirs)."""
        return "sig" in request.query_params and "authorization" not in request.headers

    async def _own_run_by_link(
        self, request: Request, target: str
    ) -> tuple[AuthenticatedUser, str]:
        """The run of a signed download link (``?sig=``) for ``target``, checked like a token:
        forged links, links of another file or run, expired links and ended sessions are 403
        (the signature is checked before the run is looked up: nothing about it is told)."""
        run_id = request.path_params["run_id"]
        sig = request.query_params["sig"]
        if not _ULID.match(run_id):
            raise NotFound("run not found")
        try:
            session_id = self.backend.links.open(sig, run_id, target)
        except LinkInvalid:
            raise Forbidden("the download link is not valid for this file") from None
        except LinkExpired:
            raise Forbidden("the download link has expired; list the files again") from None
        user = await self.backend.session_user(session_id)
        if user is None:
            raise Forbidden("the session of this download link has ended")
        structlog.contextvars.bind_contextvars(login=user.login)
        if not owns(await self.backend.repository.owner(run_id), user):
            raise NotFound("run not found")
        return user, run_id

    async def runs(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.create_run(request)
        return await self.list_runs(request)

    async def create_run(self, request: Request) -> Response:
        user = await self.backend.authenticate(request)
        config = self.backend.config
        body = await read_json(request, RunCreateRequest, config.server.max_body_bytes)
        plan = plan_run(body, config)
        state = await self.backend.service.start(user, plan)
        await audit.run_started(self.backend.services, request, user, state)
        return json_response(
            RunCreated(run_id=state.run_id, status=state.status),
            201,
            {"Location": f"/api/runs/{state.run_id}"},
        )

    async def list_runs(self, request: Request) -> Response:
        user = await self.backend.authenticate(request)
        query = deps.read_query(request, RunListQuery)
        page = await self.backend.service.list(user, limit=query.limit, cursor=query.cursor)
        return json_response(page)

    async def get_run(self, request: Request) -> Response:
        user = await self.backend.authenticate(request)
        state = await self.backend.service.state(user, request.path_params["run_id"])
        return json_response(state, headers=_NO_STORE)

    async def cancel_run(self, request: Request) -> Response:
        user = await self.backend.authenticate(request)
        state = await self.backend.service.cancel(user, request.path_params["run_id"])
        await audit.run_cancelled(self.backend.services, request, user, state)
        return json_response(state, 202, headers=_NO_STORE)

    async def list_files(self, request: Request) -> Response:
        user = await self.backend.authenticate(request)
        files = await self.backend.service.files(user, request.path_params["run_id"])
        return json_response(files, headers=_NO_STORE)

    def _media_type(self, name: str) -> str:
        fmt = format_of(name)
        if fmt != "csv":
            return MEDIA_TYPES[fmt]
        charset = "windows-1251" if self.backend.config.output.encoding == "cp1251" else "utf-8"
        return f"text/csv; charset={charset}"

    async def download_file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        if self._signed(request):
            user, run_id = await self._own_run_by_link(request, file_id)
        else:
            user, run_id = await self._own_run(request)
        stored = (
            await self.backend.repository.file(run_id, file_id) if _FILE_ID.match(file_id) else None
        )
        if stored is None:
            raise NotFound("file not found")
        signed = self._signed(request)
        await audit.download(self.backend.services, request, user, run_id, [stored], signed=signed)
        return await self.downloads.file(
            (user.login, user.database_id),
            self.backend.files_root / run_id,
            stored,
            self._media_type(stored.name),
            request.headers.get("range"),
        )

    async def download_zip(self, request: Request) -> Response:
        if signed := self._signed(request):
            user, run_id = await self._own_run_by_link(request, ZIP_TARGET)
        else:
            user, run_id = await self._own_run(request)
        files = await self.backend.repository.files(run_id)
        await audit.download(
            self.backend.services, request, user, run_id, files, zipped=True, signed=signed
        )
        return self.downloads.zip(
            (user.login, user.database_id), run_id, self.backend.files_root / run_id, files
        )
