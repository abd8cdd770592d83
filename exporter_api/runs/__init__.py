"""Runs: the export engine, run REST endpoints and the /hubs/runs hub.

`build_runs(config, redis_url=...)` is the seam between the app factory (exporter_api.app) and
this package: its `routes` are mounted at app creation; `lifespan(services)` starts the hub
endpoint and the engine once the app's services exist; `drain()` then `shutdown()` stop it
gracefully (SIGTERM).

Modules: `service` (what a user may do: REST and the hub both use it), `engine` (supervision:
claims, heartbeats, takeover, cancel signals, drain, retention), `lifecycle` (how one run
begins and what its end means), `executor` (running one run), `queue` / `slots` (claims and
connection caps in the state store), `repository` (run trees), `status` (the status rules),
`errors` (the domain's errors; mapped to HTTP in `api`), `files` / `reconcile` (export files),
`writers` (formats, CSV styles, XLSX and split parts of a variant's output),
`downloads` / `zipstream` (serving them), `api` / `operations` (the REST routes and their
OpenAPI description).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import structlog
from starlette.requests import Request
from starlette.routing import BaseRoute

from exporter_api.audit.hooks import RunEndRecorder
from exporter_api.errors import ExporterError
from exporter_api.runs.api import RunsApi
from exporter_api.runs.engine import RunEngine
from exporter_api.runs.files import files_root
from exporter_api.runs.hub import HubPublisher, RunsHub, bind_runs_hub
from exporter_api.runs.operations import runs_operations
from exporter_api.runs.outbox import EventOutbox
from exporter_api.runs.repository import RunRepository
from exporter_api.runs.service import RunService
from signalr_core import HttpTransportType, HubEndpoint, HubOptions, Principal
from signalr_core.auth import AuthRequest
from signalr_core.lifetime import HubLifetimeManager

if TYPE_CHECKING:
    from exporter_api.config import ExportConfig
    from exporter_api.security import AuthenticatedUser
    from exporter_api.security.links import DownloadLinks
    from exporter_api.services import Services

__all__ = ["SESSION_CLAIM", "RunEngine", "RunsComponent", "RunsHub", "build_runs"]

_log = structlog.get_logger("exporter_api.runs")

SESSION_CLAIM = "sid"
"""The hub Principal's claim naming the login session (to close its connections on logout)."""


class RunsComponent:
    """Routes and lifespan of the runs feature."""

    def __init__(
        self,
        config: ExportConfig,
        *,
        hub_options: HubOptions | None = None,
        session_check_s: float = 2.0,
        redis_url: str | None = None,
    ) -> None:
        self.config = config
        self.session_check_s = session_check_s
        self._connections: dict[str, str] = {}  # this process's hub connections -> session id
        self._transports: dict[str, str] = {}  # ... -> transport (metrics)
        lifetime_manager: HubLifetimeManager | None = None
        if redis_url:
            from signalr_core.redis import RedisHubLifetimeManager

            # Every instance publishes run events on Redis: a client connected to any instance
            # gets every event of the runs it subscribed to, in the order they were sent.
            # Run events are best effort (the state is in the store), so a send waits at
            # most a second for the backplane to come back instead of slowing every run.
            lifetime_manager = RedisHubLifetimeManager(
                redis_url, channel_prefix="exporter", hub_name="runs", buffer_max_age=1.0
            )
        self.hub_endpoint = HubEndpoint(
            bind_runs_hub(self, config.server.hub),
            options=dataclasses.replace(
                hub_options or HubOptions(), on_slow_consumer=self._slow_consumer
            ),
            authenticate=self._authenticate_hub,
            lifetime_manager=lifetime_manager,
        )
        self.routes: list[BaseRoute] = [
            *RunsApi(self).routes(),
            *self.hub_endpoint.routes(config.server.hub_path),
        ]
        self.openapi_operations = runs_operations()
        self._services: Services | None = None
        self._engine: RunEngine | None = None
        self._repository: RunRepository | None = None
        self._service: RunService | None = None
        self._outbox: EventOutbox | None = None

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
    def service(self) -> RunService:
        if self._service is None:
            raise RuntimeError("the runs component is not started")
        return self._service

    @property
    def repository(self) -> RunRepository:
        if self._repository is None:
            raise RuntimeError("the runs component is not started")
        return self._repository

    @property
    def files_root(self) -> Path:
        return files_root(self.services.settings.data_dir, self.config.output)

    @property
    def links(self) -> DownloadLinks:
        return self.services.links

    async def session_user(self, session_id: str) -> AuthenticatedUser | None:
        return await self.services.tokens.session_user(session_id)

    async def authenticate(self, request: Request) -> AuthenticatedUser:
        from exporter_api.api.deps import current_user

        return await current_user(request)

    async def session_live(self, session_id: str) -> bool:
        return await self.services.tokens.session_live(session_id)

    async def events_caught_up(self) -> None:
        if self._outbox is not None:
            await self._outbox.caught_up()

    def connection_opened(self, connection_id: str, session_id: str, transport: str) -> None:
        self._connections[connection_id] = session_id
        self._transports[connection_id] = transport
        self.services.metrics.hub_connection(transport, +1)

    def _slow_consumer(self, transport: str) -> None:
        if self._services is not None:
            self._services.metrics.slow_consumer(transport)

    def connection_closed(self, connection_id: str) -> None:
        self._connections.pop(connection_id, None)
        transport = self._transports.pop(connection_id, None)
        if transport is not None and self._services is not None:
            self._services.metrics.hub_connection(transport, -1)

    async def _watch_sessions(self) -> None:
        """Close connections whose session ended elsewhere: revoked through another instance
        sharing the state store, or simply expired. Revocations made here close at once."""
        while True:
            await anyio.sleep(self.session_check_s)
            for session_id in set(self._connections.values()):
                try:
                    live = await self.services.tokens.session_live(session_id)
                except Exception as exc:  # the store may be briefly unavailable: next round
                    _log.warning("session_check_failed", error_type=type(exc).__name__)
                    break
                if not live:
                    await self.close_session_connections(session_id, "session_ended")

    async def close_session_connections(self, session_id: str, reason: str) -> None:
        """A revoked session (logout, refresh-token reuse) loses its live hub connections at
        once; they may not reconnect (the token no longer passes ``_authenticate_hub``)."""
        closed = await self.hub_endpoint.hub_context.close_connections(
            where=lambda ctx: (
                ctx.user is not None and ctx.user.claims.get(SESSION_CLAIM) == session_id
            ),
            error="the session has ended, log in again",
            allow_reconnect=False,
        )
        if closed:
            _log.info("hub_connections_closed", session_id=session_id, reason=reason, count=closed)

    async def _authenticate_hub(self, request: AuthRequest) -> Principal | None:
        if request.access_token is None or self._services is None:
            return None
        try:
            user = await self._services.tokens.verify_access_token(request.access_token)
        except ExporterError:
            return None
        # The connection's tasks start from this request's context: its lines carry the login.
        structlog.contextvars.bind_contextvars(login=user.login)
        return Principal(
            user_id=f"{user.login}@{user.database_id}",
            name=user.login,
            claims={"user": user, SESSION_CLAIM: user.session_id},
        )

    # --- lifespan ----------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, services: Services) -> AsyncIterator[None]:
        self._services = services
        self._repository = RunRepository(services.store)
        # The engine never waits for the hub (a Redis outage): its events go through an outbox.
        outbox = self._outbox = EventOutbox(
            HubPublisher(
                self.hub_endpoint.hub_context,
                owners=self._repository.owner if self.config.server.hub.user_feed else None,
                metrics=services.metrics,
            )
        )
        engine = RunEngine(
            config=self.config,
            repository=self._repository,
            providers=services.providers,
            credentials=services.vault,
            publisher=outbox,
            files_root=self.files_root,
            notifier=services.notifier,
            exclusive_store=services.store.backend == "sqlite",
            observer=RunEndRecorder(services.audit, services.metrics, self._repository),
        )
        forget_listener = services.tokens.on_revoked(self.close_session_connections)
        try:
            async with (
                self.hub_endpoint.lifespan(),
                outbox.running(),  # after the engine stops: its last events still go out
                engine.running(),
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(self._watch_sessions)
                self._engine = engine
                self._service = RunService(
                    self._repository, engine, services.links, self.config.output.encoding
                )
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            forget_listener()
            self._outbox = None
            self._engine = None
            self._service = None
            self._services = None

    async def drain(self) -> list[str]:
        """SIGTERM, before ``shutdown()``: claim no new runs, let the active ones go on for up
        to ``server.drain_grace_s``, then hand the rest over to other instances (they resume
        them; nothing is marked Cancelled or Failed). Returns the ids handed over."""
        if self._engine is None:
            return []
        return await self._engine.drain()

    async def shutdown(self) -> None:
        """The server stops accepting requests: tell hub clients to reconnect later.

        Hypercorn waits for open requests (WebSockets, SSE streams, polls) before it ends the
        lifespan, so the hub's ``Close(allowReconnect)`` must go out before that wait.
        """
        await self.hub_endpoint.shutdown()


def build_runs(
    config: ExportConfig, *, redis_url: str | None = None, hub_token_key: bytes | None = None
) -> RunsComponent:
    """The runs feature; with ``redis_url`` its hub scales out over Redis (a backplane).

    ``hub_token_key`` (``serve --workers N``, N > 1): processes share one socket, so a hub
    client's requests reach any of them. The hub then mints self-verifying connection tokens
    (any worker adopts a WebSocket negotiated by another) and offers only WebSockets, the one
    transport that is a single request.
    """
    hub_options = None
    if hub_token_key is not None:
        hub_options = HubOptions(
            transports=HttpTransportType.WEBSOCKETS, connection_token_key=hub_token_key
        )
    return RunsComponent(config, redis_url=redis_url, hub_options=hub_options)
