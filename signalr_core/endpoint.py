"""``HubEndpoint``: the ASGI application serving one hub path.

Routes under the mount point, as ASP.NET's ``HttpConnectionDispatcher``:

* ``POST .../negotiate?negotiateVersion=N``: creates a connection and answers with its ids
  and the enabled transports (or a redirect / ``{"error": ...}``).
* ``GET ...`` with a WebSocket upgrade: the WebSockets transport (``?id=`` optional: without
  it the request creates the connection, for ``skipNegotiation``).
* ``GET ...`` with ``Accept: text/event-stream``: Server-Sent Events.
* ``GET ...`` otherwise: a Long Polling poll. ``POST ...``: data from the client (SSE and Long
  Polling). ``DELETE ...``: ends a Long Polling connection (forgotten as soon as it has ended).

Statuses and texts: ``400 Connection ID required``, ``404 No Connection with that ID``,
``404 <T> transport not supported by this end point type``, ``400 Cannot change transports
mid-connection``, ``409`` when the connection already has an active transport (a request
claims its connection before its first await, so two at once cannot both activate it; a
stateful resume already under way refuses another), ``403`` when a request with a token is not
from the connection's user (GET, POST, DELETE) or a WebSocket upgrade's ``Origin`` is not
allowed by the CORS policy, ``405`` for other methods, ``401`` when the hub requires an
authenticated user and there is none.

With ``HubOptions.connection_token_key`` a WebSocket connect with a token this process does not
know may adopt a connection another process negotiated (see :mod:`signalr_core.tokens`).

Connections run in the endpoint's task group: enter ``async with endpoint.lifespan():`` in
the host application's lifespan (the endpoint also answers ASGI ``lifespan`` events itself
when it is the root application).
"""

from __future__ import annotations

import contextlib
import http
import inspect
import time
from collections.abc import AsyncIterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Generic

import anyio
import anyio.abc

from signalr_core._endpoint_connections import ConnT, EndpointConnection, EndpointConnections
from signalr_core._logging import get_logger
from signalr_core.auth import (
    Authenticator,
    AuthRequest,
    call_authenticate,
    raw_query_value,
    request_from_scope,
)
from signalr_core.clients import HubContext
from signalr_core.context import Principal
from signalr_core.cors import CorsPolicy
from signalr_core.dispatcher import ConnectionStatus, HubDispatcher, HubServerConnection
from signalr_core.hub import Hub, HubAuthorizePolicy, discover_methods
from signalr_core.lifetime import DefaultHubLifetimeManager, HubLifetimeManager
from signalr_core.negotiate import (
    LONG_POLLING,
    SERVER_SENT_EVENTS,
    WEBSOCKETS,
    TransportInfo,
    build_negotiate_response,
    encode_negotiate_error,
    encode_negotiate_redirect,
    new_connection_id,
)
from signalr_core.options import HttpTransportType, HubOptions, NegotiateRedirectHook
from signalr_core.protocols import HubProtocol, default_protocols
from signalr_core.transports import (
    ASGIReceive,
    ASGISend,
    TransportName,
    discard_body,
    read_body,
    send_response,
)
from signalr_core.transports.longpolling import serve_poll
from signalr_core.transports.sse import serve_sse
from signalr_core.transports.websockets import serve_websocket

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

__all__ = ["ConnectionEndpoint", "EndpointConnection", "HubEndpoint"]


_log = get_logger("signalr_core")

_SERVER_NEGOTIATE_VERSION = 1
_RUN_TASK_NAME = "signalr_core.connection.run"
_TRANSPORTS: tuple[tuple[HttpTransportType, TransportName, TransportInfo], ...] = (
    (HttpTransportType.WEBSOCKETS, TransportName.WEBSOCKETS, WEBSOCKETS),
    (HttpTransportType.SERVER_SENT_EVENTS, TransportName.SERVER_SENT_EVENTS, SERVER_SENT_EVENTS),
    (HttpTransportType.LONG_POLLING, TransportName.LONG_POLLING, LONG_POLLING),
)
_FLAG_OF = {name: flag for flag, name, _ in _TRANSPORTS}


class _Refused(Exception):
    """A transport request answered with an HTTP error before any transport started."""

    def __init__(self, status: int, text: str = "", headers: Sequence[tuple[str, str]] = ()):
        # Never an empty body: the official client's error text is the body, else the status
        # line's reason phrase, which some ASGI servers (hypercorn) do not send; Kestrel's
        # ("Unauthorized: Status code '401'") then reads the same on every server.
        text = text or http.HTTPStatus(status).phrase
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = list(headers)


class _BodyReceive:
    """``receive`` for a request with a body, remembering whether the body was read to its end."""

    __slots__ = ("body_done", "receive")

    def __init__(self, receive: ASGIReceive) -> None:
        self.receive = receive
        self.body_done = False

    async def __call__(self) -> MutableMapping[str, Any]:
        message = await self.receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.body_done = True
        return message


async def _redirect_body(hook: NegotiateRedirectHook | None, request: AuthRequest) -> bytes | None:
    """The negotiate answer redirecting the client, when the hook gives one."""
    if hook is None:
        return None
    redirect = hook(request)
    if inspect.isawaitable(redirect):
        redirect = await redirect
    if redirect is None:
        return None
    url, token = redirect
    return encode_negotiate_redirect(url, token)


def _negotiate_version(raw: str | None) -> int | None:
    """The negotiate version to answer with (``None`` when the client's is not an integer)."""
    if raw is None:
        return 0
    try:
        version = int(raw)
    except ValueError:
        return None
    return max(0, min(version, _SERVER_NEGOTIATE_VERSION))


def _someone_elses(connection: EndpointConnection, user: Principal | None) -> bool:
    """The connection is in use, by another user than ``user`` (the request is refused)."""
    if connection.status is ConnectionStatus.INACTIVE:
        return False
    return connection.user_id != (user.user_id if user is not None else None)


def _is_negotiate(scope: Mapping[str, Any]) -> bool:
    path: str = scope.get("path", "")
    return path.rstrip("/").endswith("/negotiate")


async def _answer_refused(
    send: ASGISend, refused: _Refused, body_receive: _BodyReceive | None, limit: int
) -> None:
    """Answer an HTTP request with ``refused``'s status and text."""
    headers = refused.headers
    if (
        body_receive is not None
        and not body_receive.body_done
        # Read the unread body first, or the server cannot reuse the connection and drops
        # the client's next request on it (an HTTP/1.1 keep-alive race).
        and (refused.status == 413 or not await discard_body(body_receive, limit))
    ):
        headers = [*headers, ("connection", "close")]
    await send_response(send, refused.status, refused.text.encode(), headers=headers)


async def _refuse_websocket(scope: Mapping[str, Any], send: ASGISend, refused: _Refused) -> None:
    """Refuse a WebSocket request: an HTTP answer where the server can send one, else 1008."""
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = [(b"content-type", b"text/plain")]
        headers.extend((k.encode(), v.encode()) for k, v in refused.headers)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": refused.status,
                "headers": headers,
            }
        )
        await send({"type": "websocket.http.response.body", "body": refused.text.encode()})
    else:
        await send({"type": "websocket.close", "code": 1008})


class ConnectionEndpoint(Generic[ConnT]):
    """Negotiate and the three transports for one path (ASP.NET's ``HttpConnectionDispatcher``).

    The base of :class:`HubEndpoint` and
    :class:`~signalr_core.connection_handler.ConnectionHandlerEndpoint`; a subclass says what
    a connection is (:meth:`_create_connection`) and what the lifespan holds besides the
    connections' task group (:meth:`_resources`).
    """

    _offers_stateful_reconnect = True

    def __init__(
        self,
        *,
        name: str,
        options: HubOptions | None,
        authenticate: Authenticator | None,
        authorize: HubAuthorizePolicy = False,
    ) -> None:
        self.options = options if options is not None else HubOptions()
        self.authenticate = authenticate
        self._name = name
        self._cors = CorsPolicy(self.options.allowed_origins)
        self._tg: anyio.abc.TaskGroup | None = None
        # Set once shutdown begins: new connections are refused with 503 so that a client's
        # automatic reconnect goes to another server (behind a load balancer) instead of here.
        self._shutting_down = False
        self._require_user = bool(authorize)
        self._user_policy = None if isinstance(authorize, bool) else authorize
        self._transport_infos = tuple(
            info for flag, _, info in _TRANSPORTS if self.options.transports & flag
        )
        self._connections = EndpointConnections(self.options, self._create_connection, name)

    def _create_connection(self, connection_id: str, token: str) -> ConnT:
        """A new, inactive connection (the endpoint registers it)."""
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def _resources(self) -> AsyncIterator[None]:
        """What the lifespan holds around the connections' task group (nothing here)."""
        yield

    # -- public API ----------------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Connections known to the endpoint (negotiated, connected or draining)."""
        return len(self._connections)

    def routes(self, path: str) -> list[BaseRoute]:
        """Starlette routes serving this endpoint at ``path`` (the bare path and below)."""
        from starlette.routing import Mount, Route, WebSocketRoute

        path = path.rstrip("/")
        return [
            Route(path, endpoint=self, methods=None),
            WebSocketRoute(path, endpoint=self),
            Mount(path, app=self),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Own the task group connections run in; on exit, close them gracefully.

        Exiting sends every client ``Close`` with ``allowReconnect: true`` and waits up to
        ``options.shutdown_timeout`` for connections to end before cancelling them.
        """
        if self._tg is not None:
            raise RuntimeError(f"{type(self).__name__}.lifespan() is already running")
        async with self._resources(), anyio.create_task_group() as tg:
            self._tg = tg
            self._shutting_down = False
            tg.start_soon(self._connections.ticker)
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await self.shutdown()
                self._tg = None
                tg.cancel_scope.cancel()

    async def shutdown(self) -> None:
        """Tell every client to reconnect later (``Close`` with ``allowReconnect``) and wait.

        Called on lifespan exit; call it earlier yourself when the ASGI server stops accepting
        requests before the lifespan ends (hypercorn waits for open requests first). From then
        on new connections are refused (negotiate and new transports answer 503), so clients
        reconnect elsewhere; established connections still receive their ``Close``.
        """
        self._shutting_down = True
        await self._connections.close_all(self.options.shutdown_timeout)

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(
        self, scope: Mapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._handle_http(scope, receive, send)
        elif kind == "websocket":
            await self._handle_websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._handle_lifespan(receive, send)

    async def _handle_lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        async with self.lifespan():
            await send({"type": "lifespan.startup.complete"})
            while (await receive())["type"] != "lifespan.shutdown":
                pass
        await send({"type": "lifespan.shutdown.complete"})

    async def _principal(self, request: AuthRequest) -> Principal | None:
        principal = await call_authenticate(self.authenticate, request)
        if principal is None and self._require_user:
            raise _Refused(401, headers=[("www-authenticate", "Bearer")])
        policy = self._user_policy
        if principal is not None and policy is not None and not policy(principal):
            raise _Refused(403)
        return principal

    async def _handle_http(
        self, scope: Mapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        if scope.get("method") == "POST" and (posted := self._anonymous_post(scope)) is not None:
            # Only the id matters (no CORS, no authentication): no request view is built.
            posting = _BodyReceive(receive)
            try:
                await self._feed_post(posted, None, posting, send)
            except _Refused as refused:
                limit = self.options.application_max_buffer_size
                await _answer_refused(send, refused, posting, limit)
            return
        request = request_from_scope(scope)
        method = request.method
        if self._cors.enabled:
            if self._cors.is_preflight(method, request.headers):
                allowed = self._cors.preflight_headers(request.headers)
                if allowed is None:
                    await send_response(send, 403, b"Origin not allowed")
                else:
                    await send_response(send, 204, content_type=None, headers=allowed)
                return
            send = self._cors.wrap_send(send, request.headers.get("origin"))
        body_receive: _BodyReceive | None = None
        if method == "POST":
            receive = body_receive = _BodyReceive(receive)
        if self._tg is None:
            _log.error("hub_lifespan_not_started", endpoint=self._name)
            await send_response(send, 503, b"The hub endpoint's lifespan is not running.")
            return
        try:
            if _is_negotiate(scope):
                if method != "POST":
                    raise _Refused(405)
                self._refuse_if_shutting_down()
                await self._negotiate(request, send)
            elif method == "GET":
                accept = request.headers.get("accept", "")
                if "text/event-stream" in accept:
                    await self._serve_sse(request, receive, send)
                else:
                    await self._serve_long_polling(request, send)
            elif method == "POST":
                await self._receive_send(request, receive, send)
            elif method == "DELETE":
                await self._delete(request, send)
            else:
                raise _Refused(405)
        except _Refused as refused:
            limit = self.options.application_max_buffer_size
            await _answer_refused(send, refused, body_receive, limit)

    # -- negotiate -----------------------------------------------------------------------------

    async def _negotiate(self, request: AuthRequest, send: ASGISend) -> None:
        user = await self._principal(request)
        headers = [("cache-control", "no-cache")]
        hook = self.options.negotiate_headers
        if hook is not None:
            headers.extend(hook(request))
        body = await _redirect_body(self.options.negotiate_redirect, request)
        if body is None:
            version = _negotiate_version(request.query.get("negotiateVersion"))
            body = (
                encode_negotiate_error("The client requested a non-integer protocol version.")
                if version is None
                else self._negotiated(request, version, user)
            )
        await send_response(send, 200, body, content_type="application/json", headers=headers)

    def _negotiated(self, request: AuthRequest, version: int, user: Principal | None) -> bytes:
        """A new connection: the negotiate answer's body."""
        connection = self._connections.negotiated(version, user)
        stateful = (
            self._offers_stateful_reconnect
            # A signed token's resume may reach another process, without the buffers.
            and not self._connections.signed
            and self.options.allow_stateful_reconnect
            and request.query.get("useStatefulReconnect", "").lower() == "true"
        )
        connection.use_stateful_reconnect = stateful
        _log.debug(
            "connection_negotiated",
            connection_id=connection.connection_id,
            negotiate_version=version,
        )
        return build_negotiate_response(
            negotiate_version=version,
            connection_id=connection.connection_id,
            connection_token=connection.connection_token,
            transports=self._transport_infos,
            use_stateful_reconnect=stateful,
        )

    # -- transports ----------------------------------------------------------------------------

    def _lookup(self, request: AuthRequest) -> ConnT:
        token = request.query.get("id")
        if not token:
            raise _Refused(400, "Connection ID required")
        connection = self._connections.get(token)
        if connection is None:
            raise _Refused(404, "No Connection with that ID")
        return connection

    def _check_transport(
        self, connection: ConnT, transport: TransportName, user: Principal | None
    ) -> None:
        if not self.options.transports & _FLAG_OF[transport]:
            raise _Refused(404, f"{transport} transport not supported by this end point type")
        if connection.transport is not None and connection.transport is not transport:
            raise _Refused(400, "Cannot change transports mid-connection")
        if _someone_elses(connection, user):
            raise _Refused(403, "Forbidden")

    def _refuse_if_shutting_down(self) -> None:
        if self._shutting_down:
            raise _Refused(503, "The server is shutting down", [("retry-after", "1")])

    def _activate(
        self,
        connection: ConnT,
        transport: TransportName,
        request: AuthRequest,
        user: Principal | None,
    ) -> None:
        assert self._tg is not None
        connection.activate(
            transport,
            user=user,
            headers=request.headers,
            query=request.query,
            cookies=request.cookies,
            query_values=request.query_values,
        )
        # A name of our own: anyio would build a string per task from the coroutine. Only a
        # Long Polling connection can be deleted, so only it pays for the wrapper's frame.
        if transport is TransportName.LONG_POLLING:
            self._tg.start_soon(self._connections.run, connection, name=_RUN_TASK_NAME)
        else:
            self._tg.start_soon(connection.run, name=_RUN_TASK_NAME)

    def _adopt(self, request: AuthRequest, user: Principal | None) -> ConnT:
        """The connection of a token this process does not know, minted by another one."""
        connection = None
        if self.options.transports & HttpTransportType.WEBSOCKETS:
            connection = self._connections.adopt(request.query.get("id", ""), user)
        if connection is None:
            raise _Refused(404, "No Connection with that ID")
        return connection

    async def _serve_sse(self, request: AuthRequest, receive: ASGIReceive, send: ASGISend) -> None:
        user = await self._principal(request)
        connection = self._lookup(request)
        self._check_transport(connection, TransportName.SERVER_SENT_EVENTS, user)
        if connection.status is not ConnectionStatus.INACTIVE:
            raise _Refused(409, "Connection ID already in use")
        self._refuse_if_shutting_down()
        self._activate(connection, TransportName.SERVER_SENT_EVENTS, request, user)
        try:
            await serve_sse(connection, receive, send)
        finally:
            await self._connections.drain_and_forget(connection)

    async def _serve_long_polling(self, request: AuthRequest, send: ASGISend) -> None:
        user = await self._principal(request)
        connection = self._lookup(request)
        self._check_transport(connection, TransportName.LONG_POLLING, user)
        if connection.status is ConnectionStatus.INACTIVE:
            self._refuse_if_shutting_down()
            self._activate(connection, TransportName.LONG_POLLING, request, user)
            connection.last_poll = time.monotonic()
            await send_response(send, 200)
            return
        ended = await serve_poll(connection, send, poll_timeout=self.options.long_poll_timeout)
        if ended:
            self._connections.forget(connection)

    def _anonymous_post(self, scope: Mapping[str, Any]) -> ConnT | None:
        """The known connection a POST sends to, read from the raw query string, when the
        endpoint has neither CORS nor authentication (``None``: take the general path)."""
        if self.authenticate is not None or self._require_user or self._cors.enabled:
            return None
        token = raw_query_value(scope.get("query_string", b""), b"id")
        if token is None or self._tg is None or _is_negotiate(scope):
            return None
        return self._connections.get(token)

    async def _receive_send(
        self, request: AuthRequest, receive: ASGIReceive, send: ASGISend
    ) -> None:
        user = await self._principal(request)
        await self._feed_post(self._lookup(request), user, receive, send)

    async def _feed_post(
        self, connection: ConnT, user: Principal | None, receive: ASGIReceive, send: ASGISend
    ) -> None:
        if connection.transport is TransportName.WEBSOCKETS:
            raise _Refused(405, "POST requests are not allowed for WebSocket connections.")
        if _someone_elses(connection, user):
            raise _Refused(403, "Forbidden")
        body = await read_body(receive, self.options.application_max_buffer_size)
        if body is None:
            raise _Refused(413, "Request body too large")
        if connection.status is ConnectionStatus.FINISHED or not await connection.feed(body):
            raise _Refused(404, "No Connection with that ID")
        await send_response(send, 200)

    async def _delete(self, request: AuthRequest, send: ASGISend) -> None:
        user = await self._principal(request)
        connection = self._lookup(request)
        if connection.transport is not TransportName.LONG_POLLING:
            raise _Refused(400, "Cannot terminate this connection using the DELETE endpoint.")
        if connection.user_id != (user.user_id if user is not None else None):
            raise _Refused(403, "Forbidden")
        connection.transport_closed()
        poll = connection.current_poll
        if poll is not None:
            poll.superseded = True  # answers 204
            poll.scope.cancel()
        self._connections.delete(connection)
        await send_response(send, 202)

    async def _handle_websocket(
        self, scope: Mapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        request = request_from_scope(scope)
        if self._tg is None:
            _log.error("hub_lifespan_not_started", endpoint=self._name)
            await _refuse_websocket(scope, send, _Refused(503, "Lifespan not running"))
            return
        try:
            if not self._cors.websocket_allowed(request.headers.get("origin")):
                raise _Refused(403, "Origin not allowed")
            user = await self._principal(request)
            # After the (possibly slow) authentication, with no await until the claim below: a
            # shutdown that began meanwhile must not get a connection it will never close.
            self._refuse_if_shutting_down()
            connection, resume = _websocket_target(self, request, user)
        except _Refused as refused:
            await _refuse_websocket(scope, send, refused)
            return
        # Claim the connection before any await, so a concurrent request with the same token
        # sees it taken (activated, or being resumed) and is refused.
        if resume:
            connection.resuming = True
        else:
            self._activate(connection, TransportName.WEBSOCKETS, request, user)
        del request, message  # not kept for the socket's life (the context has what it needs)
        waiting = False
        try:
            await send({"type": "websocket.accept"})
            if resume:
                try:
                    await connection.resume()
                finally:
                    connection.resuming = False
            waiting = await serve_websocket(connection, receive, send)
        finally:
            if not waiting:
                await self._connections.drain_and_forget(connection)


def _websocket_target(
    endpoint: ConnectionEndpoint[ConnT], request: AuthRequest, user: Principal | None
) -> tuple[ConnT, bool]:
    """The connection a WebSocket request is for, and whether it resumes it (stateful
    reconnect: the same token on a new socket); no await, so nothing can claim it meanwhile.
    ``_Refused`` when there is none for it."""
    if not request.query.get("id"):
        if not endpoint.options.transports & HttpTransportType.WEBSOCKETS:
            raise _Refused(404, "WebSockets transport not supported by this end point type")
        # skipNegotiation: the request itself creates the connection.
        return endpoint._connections.add(new_connection_id(), new_connection_id()), False
    try:
        connection = endpoint._lookup(request)
    except _Refused as unknown:
        if unknown.status != 404:
            raise
        connection = endpoint._adopt(request, user)
    endpoint._check_transport(connection, TransportName.WEBSOCKETS, user)
    if connection.status is ConnectionStatus.FINISHED:
        raise _Refused(404, "No Connection with that ID")
    if connection.status is ConnectionStatus.INACTIVE:
        return connection, False
    if not connection.can_resume or connection.resuming:
        raise _Refused(409, "Connection ID already in use")
    return connection, True


class HubEndpoint(ConnectionEndpoint[HubServerConnection]):
    """The ASGI application for one hub.

    Args:
        hub_class: The :class:`~signalr_core.Hub` subclass to serve.
        options: :class:`~signalr_core.HubOptions` (transports, protocols, limits, hooks).
        authenticate: ``(AuthRequest) -> Principal | None`` (sync or async). Called on every
            request; the token is in ``request.access_token`` (``Authorization: Bearer`` or the
            ``access_token`` query parameter). Never logged.
        lifetime_manager: Where connections, groups and users are tracked;
            :class:`~signalr_core.lifetime.DefaultHubLifetimeManager` when ``None``.

    Mount it with ``*endpoint.routes("/hubs/chat")`` in a Starlette app (a plain
    ``Mount("/hubs/chat", app=endpoint)`` does not match the bare path WebSockets use), or use
    it as the root ASGI app.
    """

    def __init__(
        self,
        hub_class: type[Hub],
        *,
        options: HubOptions | None = None,
        authenticate: Authenticator | None = None,
        lifetime_manager: HubLifetimeManager | None = None,
    ) -> None:
        methods = discover_methods(hub_class)  # raises TypeError for a class that is no hub
        super().__init__(
            name=hub_class.__qualname__,
            options=options,
            authenticate=authenticate,
            authorize=hub_class.authorize,
        )
        self.hub_class = hub_class
        self.lifetime_manager = (
            lifetime_manager if lifetime_manager is not None else DefaultHubLifetimeManager()
        )
        self.protocols: Mapping[str, HubProtocol] = (
            self.options.protocols if self.options.protocols is not None else default_protocols()
        )
        self._dispatcher = HubDispatcher(
            hub_class, methods, self.options, self.lifetime_manager, self.protocols
        )
        by_id = self._connections.by_id
        self._dispatcher.local_lookup = by_id.get
        self._hub_context = HubContext(self.lifetime_manager, self._active_connections, by_id.get)

    @property
    def hub_context(self) -> HubContext:
        """Send to this hub's clients from anywhere (``hub_context.clients.group(g).send``).

        It also closes connections: ``await hub_context.close_connections(user_ids=[...])``.
        """
        return self._hub_context

    def _active_connections(self) -> list[HubServerConnection]:
        return [c for c in self._connections.values() if c.status is ConnectionStatus.ACTIVE]

    def _create_connection(self, connection_id: str, token: str) -> HubServerConnection:
        return HubServerConnection(
            self._dispatcher, connection_id=connection_id, connection_token=token
        )

    @contextlib.asynccontextmanager
    async def _resources(self) -> AsyncIterator[None]:
        async with self.lifetime_manager.lifespan():
            yield
