"""Runs: the export engine, run REST endpoints and the /hubs/runs hub.

`build_runs(config)` is the seam between the app factory (exporter_api.app) and this package:
its `routes` are mounted at app creation; `lifespan(services)` starts the hub endpoint and the
engine once the app's services exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.routing import BaseRoute

from exporter_api.errors import ExporterError
from exporter_api.runs.api import RunsApi, runs_operations
from exporter_api.runs.engine import RunEngine, files_root
from exporter_api.runs.hub import HubPublisher, RunsHub, bind_runs_hub
from exporter_api.runs.repository import RunRepository
from signalr_core import HubEndpoint, HubOptions, Principal
from signalr_core.auth import AuthRequest

if TYPE_CHECKING:
    from exporter_api.config import ExportConfig
    from exporter_api.security import AuthenticatedUser
    from exporter_api.services import Services

__all__ = ["RunEngine", "RunsComponent", "RunsHub", "build_runs"]


class RunsComponent:
    """Routes and lifespan of the runs feature."""

    def __init__(self, config: ExportConfig, *, hub_options: HubOptions | None = None) -> None:
        self.config = config
        self.hub_endpoint = HubEndpoint(
            bind_runs_hub(self),
            options=hub_options or HubOptions(),
            authenticate=self._authenticate_hub,
        )
        self.routes: list[BaseRoute] = [
            *RunsApi(self).routes(),
            *self.hub_endpoint.routes(config.server.hub_path),
        ]
        self.openapi_operations = runs_operations()
        self._services: Services | None = None
        self._engine: RunEngine | None = None
        self._repository: RunRepository | None = None

    # --- what routes and the hub reach (only while the app runs) -----------------------------

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("the runs component is not started")
        return self._services

    @property
    def engine(self) -> RunEngine:
        if self._engine is None:
            raise RuntimeError("the runs component is not started")
        return self._engine

    @property
    def repository(self) -> RunRepository:
        if self._repository is None:
            raise RuntimeError("the runs component is not started")
        return self._repository

    @property
    def files_root(self) -> Path:
        return files_root(self.services.settings.data_dir)

    async def authenticate(self, request: Request) -> AuthenticatedUser:
        from exporter_api.api.deps import current_user

        return await current_user(request)

    async def session_live(self, session_id: str) -> bool:
        # TokenService has no public per-session check yet (see the report to E1).
        return await self.services.tokens.session_live(session_id)

    async def _authenticate_hub(self, request: AuthRequest) -> Principal | None:
        if request.access_token is None or self._services is None:
            return None
        try:
            user = await self._services.tokens.verify_access_token(request.access_token)
        except ExporterError:
            return None
        return Principal(
            user_id=f"{user.login}@{user.database_id}", name=user.login, claims={"user": user}
        )

    # --- lifespan ----------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, services: Services) -> AsyncIterator[None]:
        self._services = services
        self._repository = RunRepository(services.store)
        engine = RunEngine(
            config=self.config,
            repository=self._repository,
            providers=services.providers,
            credentials=services.vault,
            publisher=HubPublisher(self.hub_endpoint.hub_context),
            files_root=self.files_root,
            exclusive_store=services.store.backend == "sqlite",
        )
        try:
            async with self.hub_endpoint.lifespan(), engine.running():
                self._engine = engine
                yield
        finally:
            self._engine = None
            self._services = None

    async def shutdown(self) -> None:
        """The server stops accepting requests: tell hub clients to reconnect later.

        Hypercorn waits for open requests (WebSockets, SSE streams, polls) before it ends the
        lifespan, so the hub's ``Close(allowReconnect)`` must go out before that wait.
        """
        await self.hub_endpoint.shutdown()


def build_runs(config: ExportConfig) -> RunsComponent:
    return RunsComponent(config)
