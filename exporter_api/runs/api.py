"""Runs REST: start, list, read, cancel, and download files (one, or all as a streamed ZIP).

Every endpoint answers 404 for a run that is not the caller's, exactly as for a run that does
not exist, so run ids of other users cannot be probed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

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
from exporter_api.runs.downloads import Downloads, OnServed
from exporter_api.runs.errors import (
    DatabaseNotConfigured,
    RunAlreadyFinished,
    RunError,
    RunNotFound,
    TooManyActiveRuns,
)
from exporter_api.runs.filerecords import StoredFile
from exporter_api.runs.models import (
    FILE_ID_PATTERN,
    RUN_ID_PATTERN,
    RunCreated,
    RunCreateRequest,
)
from exporter_api.runs.operations import RunListQuery
from exporter_api.runs.repository import RunRepository
from exporter_api.runs.selection import plan_run
from exporter_api.runs.service import RunService, owns, served_media_type, sign_files, state_for
from exporter_api.security.links import ZIP_TARGET, DownloadLinks, LinkExpired, LinkInvalid

if TYPE_CHECKING:
    from exporter_api.config import ExportConfig
    from exporter_api.security import AuthenticatedUser
    from exporter_api.services import Services

__all__ = ["RunsApi", "http_error", "owns", "sign_files", "state_for"]

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

    def _recorded(
        self,
        request: Request,
        user: AuthenticatedUser,
        run_id: str,
        files: list[StoredFile],
        *,
        zipped: bool = False,
    ) -> OnServed:
        """The download's audit record and metric, made once it is served (not when refused)."""
        return functools.partial(
            audit.download,
            self.backend.services,
            request,
            user,
            run_id,
            files,
            zipped=zipped,
            signed=self._signed(request),
        )

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
        return await self.downloads.file(
            (user.login, user.database_id),
            self.backend.files_root / run_id,
            stored,
            served_media_type(stored, self.backend.config.output.encoding),
            request.headers.get("range"),
            on_served=self._recorded(request, user, run_id, [stored]),
        )

    async def download_zip(self, request: Request) -> Response:
        if self._signed(request):
            user, run_id = await self._own_run_by_link(request, ZIP_TARGET)
        else:
            user, run_id = await self._own_run(request)
        files = await self.backend.repository.files(run_id)
        return self.downloads.zip(
            (user.login, user.database_id),
            run_id,
            self.backend.files_root / run_id,
            files,
            on_served=self._recorded(request, user, run_id, files, zipped=True),
        )
