"""`create_app(settings)`: the Starlette application; every resource is made in its lifespan."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Protocol

import anyio
import structlog
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route, request_response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Scope

from exporter_api.api import auth, catalog, meta
from exporter_api.audit import AuditTrail, JsonLinesSink
from exporter_api.config import ExportConfig, Settings, load_config
from exporter_api.errors import ConfigError, NotFound
from exporter_api.health import Health
from exporter_api.metrics import METRICS_TOKEN_ENV, Metrics, MetricsAccess, metrics_route
from exporter_api.notify import LocalNotifier, Notifier, PostgresNotifier
from exporter_api.openapi import build_openapi
from exporter_api.problems import exception_handlers, problem
from exporter_api.providers import DatabaseProvider, create_provider
from exporter_api.proxy import ProxyHeadersMiddleware
from exporter_api.security.keys import (
    JWT_KEY_ENV,
    JWT_KEY_FILE,
    VAULT_KEY_ENV,
    VAULT_KEY_FILE,
    KeyRing,
    load_keys,
)
from exporter_api.security.links import DownloadLinks
from exporter_api.security.throttle import LoginThrottle
from exporter_api.security.tokens import TokenService
from exporter_api.security.vault import CredentialVault
from exporter_api.services import Services
from exporter_api.store import open_store

_log = structlog.get_logger("exporter_api.app")

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATE_URL_ENV = "EXPORTER_STATE_URL"
REDIS_URL_ENV = "EXPORTER_REDIS_URL"
_PURGE_INTERVAL_S = 600


async def _index(request: Request) -> Response:
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        raise NotFound("the console is not installed (exporter_api/static/index.html)")
    return FileResponse(index, headers={"Cache-Control": "no-cache"})


class _ConsoleFiles(StaticFiles):
    """The console's files. They keep their names across releases, so the browser revalidates
    them on every load (a cheap 304 through ETag / Last-Modified); the vendored SignalR client
    changes only with its package and is kept for a day."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        vendored = Path(full_path).parent.name == "vendor"
        response.headers["Cache-Control"] = "public, max-age=86400" if vendored else "no-cache"
        return response


def _gzip(app: ASGIApp) -> GZipMiddleware:
    """Text assets go compressed to browsers that accept it (API bodies and downloads do not)."""
    return GZipMiddleware(app, minimum_size=512)


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, but a refused preflight is problem JSON like every error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {
            k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
        }
        return problem(
            response.status_code,
            "Bad Request",
            bytes(response.body).decode("utf-8", "replace"),
            headers=headers,
        )


def state_url(settings: Settings, config: ExportConfig) -> str | None:
    return settings.state_url or os.environ.get(STATE_URL_ENV) or config.server.state_url or None


def _key_rings(
    settings: Settings, config: ExportConfig, config_dir: Path, *, shared_store: bool
) -> tuple[KeyRing, KeyRing]:
    """(JWT keys, vault keys): Settings' own, else `exporter_api.security.keys.load_keys`."""
    keys_dir = (config_dir / config.server.keys_dir) if config.server.keys_dir else None
    rings: list[KeyRing] = []
    for given, file_name, env_name in (
        (settings.jwt_key, JWT_KEY_FILE, JWT_KEY_ENV),
        (settings.vault_key, VAULT_KEY_FILE, VAULT_KEY_ENV),
    ):
        rings.append(
            KeyRing((given,))
            if given
            else load_keys(
                file_name,
                env_name,
                shared_store=shared_store,
                keys_dir=keys_dir,
                data_dir=settings.data_dir,
            )
        )
    return rings[0], rings[1]


def hub_token_key(jwt_keys: KeyRing) -> bytes:
    """The hub's connection token key under ``--workers``: derived from the JWT signing key
    every worker shares (a labelled HMAC, so the signing key itself is never used for it)."""
    return hmac.new(
        jwt_keys.current, b"exporter-api hub connection tokens", hashlib.sha256
    ).digest()


def redis_url(settings: Settings, config: ExportConfig) -> str | None:
    """The hub backplane: ``--redis-url``, ``EXPORTER_REDIS_URL`` or ``[server] redis_url``."""
    return settings.redis_url or os.environ.get(REDIS_URL_ENV) or config.server.redis_url or None


def files_dir(settings: Settings, config: ExportConfig) -> Path:
    """Where exported files live (``[output] files_dir``): what ``/readyz`` checks."""
    from exporter_api.runs.files import files_root

    return files_root(settings.data_dir, config.output)


class Feature(Protocol):
    """What `exporter_api.runs.build_runs(config)` returns: routes plus a lifespan."""

    routes: list[BaseRoute]

    def lifespan(self, services: Services) -> AbstractAsyncContextManager[None]: ...

    async def drain(self) -> list[str]:
        """SIGTERM, before ``shutdown()``: finish or hand over the work this instance holds;
        returns the ids of what was handed over."""

    async def shutdown(self) -> None:
        """Called when the server stops accepting requests, before open ones are awaited."""


def create_app(
    settings: Settings, config: ExportConfig | None = None, *, runs: Feature | None = None
) -> Starlette:
    """The service for `settings` (the catalog is loaded now: a bad config fails at once).

    `runs` replaces the runs feature (tests of the auth/catalog layer pass a bare one).
    """
    config = config if config is not None else load_config(settings.config_path)
    config_dir = Path(config.source_path or settings.config_path).resolve().parent
    data_dir = settings.data_dir
    store_url = state_url(settings, config)
    # Keys are resolved now, not in the lifespan: a shared store without keys must stop `serve`
    # with a message before it listens.
    jwt_keys, vault_keys = _key_rings(
        settings, config, config_dir, shared_store=store_url is not None
    )
    if runs is None:
        from exporter_api.runs import build_runs

        runs = build_runs(
            config,
            redis_url=redis_url(settings, config),
            hub_token_key=hub_token_key(jwt_keys) if settings.workers > 1 else None,
        )
    health = Health(
        files_dir(settings, config), redis_url(settings, config), dir_mode=config.output.dir_mode
    )
    metrics_access: MetricsAccess | None = None
    if config.metrics.enabled:
        token = settings.metrics_token or os.environ.get(METRICS_TOKEN_ENV) or None
        try:
            metrics_access = MetricsAccess(config.metrics.allow_from, token)
        except ValueError as exc:
            raise ConfigError(str(config.source_path), "metrics", str(exc)) from None
        if token is None and metrics_access.loopback_only and not config.server.trusted_proxies:
            # Behind a reverse proxy on this host every request comes from loopback: without
            # trusted_proxies (or a token) the allow-list lets everyone through the proxy.
            _log.warning("metrics_open_behind_local_proxy", path=config.metrics.path)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            data_dir.mkdir(parents=True, exist_ok=True)
            store = await open_store(data_dir, store_url)
            stack.push_async_callback(store.aclose)
            notifier: Notifier
            if store_url is not None and store.backend == "postgres":
                notifier = PostgresNotifier(store_url, store)
            else:
                notifier = LocalNotifier()
            vault = CredentialVault(store, vault_keys)
            tokens = TokenService(
                store,
                vault,
                jwt_keys,
                access_ttl_s=config.server.access_token_ttl_s,
                refresh_ttl_s=config.server.refresh_ttl_s,
                notifier=notifier,
                reuse_grace_s=config.server.refresh_reuse_grace_s,
            )
            throttle = LoginThrottle(
                store,
                max_failures=config.server.login_max_failures,
                window_s=config.server.login_window_s,
                lockout_s=config.server.login_lockout_s,
            )
            providers: dict[str, DatabaseProvider] = {}
            for db in config.databases:
                provider = create_provider(db, data_dir, config_dir)
                stack.push_async_callback(provider.aclose)
                await provider.start()
                providers[db.id] = provider
            metrics = Metrics()
            audit = AuditTrail(
                store,
                retention_days=config.audit.retention_days,
                sink=JsonLinesSink(config.audit.sink, data_dir) if config.audit.sink else None,
                on_failure=metrics.audit_failure,
            )
            await stack.enter_async_context(audit.running())
            if isinstance(notifier, PostgresNotifier):
                await stack.enter_async_context(notifier.running())
            await stack.enter_async_context(health.running(store))
            task_group = await stack.enter_async_context(anyio.create_task_group())
            services = Services(
                settings=settings,
                config=config,
                store=store,
                providers=providers,
                tokens=tokens,
                vault=vault,
                throttle=throttle,
                links=DownloadLinks(jwt_keys.keys, config.server.download_link_ttl_s),
                notifier=notifier,
                task_group=task_group,
                audit=audit,
                metrics=metrics,
            )
            app.state.services = services
            task_group.start_soon(_purge_sessions, tokens)
            if config.audit.retention_days > 0:
                task_group.start_soon(audit.purge_loop)
            _log.info(
                "service_started",
                config=str(settings.config_path),
                data_dir=str(data_dir),
                store=store.backend,
                databases=len(providers),
            )
            assert runs is not None
            try:
                async with runs.lifespan(services):
                    yield
            finally:
                task_group.cancel_scope.cancel()
                _log.info("service_stopping")

    routes: list[BaseRoute] = [
        *auth.routes,
        *catalog.routes,
        *meta.routes,
        *runs.routes,
        Route("/", _gzip(request_response(_index)), methods=["GET"]),
    ]
    if metrics_access is not None:
        routes.append(metrics_route(config.metrics.path, metrics_access))
    if STATIC_DIR.is_dir():
        routes.append(
            Mount("/static", app=_gzip(_ConsoleFiles(directory=STATIC_DIR)), name="static")
        )
    # Outermost: every later layer (CORS, throttling, logs, cookies) sees the real client.
    middleware: list[Middleware] = [
        Middleware(ProxyHeadersMiddleware, trusted_proxies=config.server.trusted_proxies)
    ]
    if config.server.cors_origins:
        middleware.append(
            Middleware(
                ProblemCORSMiddleware,
                allow_origins=config.server.cors_origins,
                allow_credentials=True,
                allow_methods=["GET", "POST"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "X-Requested-With",
                    "X-SignalR-User-Agent",
                ],
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    operations = [
        *meta.auth_and_catalog_operations(),
        *meta.health_operations(),
        *getattr(runs, "openapi_operations", []),
    ]
    app.state.openapi = build_openapi(
        operations, title="exporter-api", version="0.1.0", refine=meta.login_schema(config)
    )
    app.state.settings = settings
    app.state.runs = runs
    app.state.health = health  # /readyz; `health.start_draining()` on SIGTERM
    app.state.config = config
    return app


async def _purge_sessions(tokens: TokenService) -> None:
    while True:
        await anyio.sleep(_PURGE_INTERVAL_S)
        purged = await tokens.purge_expired()
        if purged:
            _log.info("sessions_purged", count=purged)


__all__ = ["REDIS_URL_ENV", "STATE_URL_ENV", "create_app", "files_dir", "redis_url", "state_url"]
