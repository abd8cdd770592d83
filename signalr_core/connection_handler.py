"""Connection handlers: raw, non-hub endpoints over negotiate and the three transports.

ASP.NET Core's ``MapConnectionHandler<T>``. The client is the official client's
``HttpConnection`` (the transport layer under ``HubConnection``), or anything speaking the
same negotiate and transports. Messages are opaque bytes: no handshake, no hub protocol, no
pings. Each received WebSocket message or POST body is one chunk for the handler; whatever the
handler sends goes out in order, batched per transport write (a stream of bytes, as ASP.NET's
pipes; frame your messages yourself when they must stay apart)::

    class EchoHandler(ConnectionHandler):
        async def on_connected(self, connection: ConnectionContext) -> None:
            async for data in connection:
                await connection.send(data)

    endpoint = ConnectionHandlerEndpoint(EchoHandler())
    # Starlette: routes=[*endpoint.routes("/echo")], and in the lifespan:
    #     async with endpoint.lifespan(): yield

Theory of operation
===================

A :class:`RawConnection` is what negotiate creates; a transport request activates it and the
endpoint starts :meth:`RawConnection.run` in its task group, which calls the handler's
``on_connected`` once. The transports feed received bytes into a bounded
:class:`~signalr_core.transports.IncomingBuffer` (``application_max_buffer_size``) that
:meth:`ConnectionContext.receive` reads; :meth:`ConnectionContext.send` puts bytes into the
bounded :class:`~signalr_core.transports.OutgoingBuffer` the transport drains, waiting while it
is more than half full (backpressure), so neither direction holds unbounded memory.

The connection ends when ``on_connected`` returns or raises (what was sent is still
delivered: the WebSocket closes with 1000, the SSE response ends, the next poll answers 204),
when the client goes away (``receive`` then returns ``None``; a handler that keeps running is
cancelled after ``shutdown_timeout``; shutdown does the same), and on
:meth:`ConnectionContext.abort`.

Frames are text unless the handler sets ``connection.transfer_format`` to
:attr:`~signalr_core.TransferFormat.BINARY` (ASP.NET's ``ActiveFormat``): text WebSocket
messages and ``text/plain`` polls, or binary messages and ``application/octet-stream`` polls.
Server-Sent Events carry text only (clients starting with the binary format skip it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import anyio

from signalr_core._logging import get_logger
from signalr_core.auth import Authenticator, without_token
from signalr_core.context import Principal
from signalr_core.dispatcher import ConnectionStatus
from signalr_core.endpoint import ConnectionEndpoint
from signalr_core.hub import HubAuthorizePolicy
from signalr_core.messages import TransferFormat
from signalr_core.options import HubOptions
from signalr_core.transports import (
    DirectWriter,
    IncomingBuffer,
    OutgoingBuffer,
    PollSlot,
    TransportName,
    abort_slow_consumer,
    write_queued,
)

__all__ = [
    "ConnectionContext",
    "ConnectionHandler",
    "ConnectionHandlerEndpoint",
    "RawConnection",
]

_log = get_logger("signalr_core")


class ConnectionHandler:
    """Base class of raw connection handlers (ASP.NET's ``ConnectionHandler``).

    Attributes:
        authorize: Class attribute, as :attr:`signalr_core.Hub.authorize`: ``True`` refuses
            anonymous requests (401); a ``staticmethod`` ``(Principal) -> bool`` also refuses
            authenticated users it returns ``False`` for (403).
    """

    authorize: ClassVar[HubAuthorizePolicy] = False

    async def on_connected(self, connection: ConnectionContext) -> None:
        """Serve one connection; it ends when this returns.

        Args:
            connection: Receive and send bytes, and what the request that started the
                transport carried.
        """
        raise NotImplementedError


class ConnectionContext:
    """One raw connection as its handler sees it (ASP.NET's ``ConnectionContext``).

    Attributes:
        connection_id: The public connection id.
        user: The principal from the endpoint's ``authenticate`` hook, ``None`` when anonymous.
        headers: Headers of the request that started the transport (lower-case names).
        query: Its query parameters (``access_token`` removed).
        cookies: Its cookies.
        transport: ``"WebSockets"``, ``"ServerSentEvents"`` or ``"LongPolling"``.
        items: A dict that lives as long as the connection.
        transfer_format: What the frames are: :attr:`TransferFormat.TEXT` (the default) or
            :attr:`TransferFormat.BINARY`.
    """

    def __init__(
        self,
        connection: RawConnection,
        *,
        user: Principal | None,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        cookies: Mapping[str, str],
        transport: TransportName,
    ) -> None:
        self._connection = connection
        self.connection_id = connection.connection_id
        self.user = user
        self.headers = dict(headers)
        self.query = without_token(query)
        self.cookies = dict(cookies)
        self.transport = str(transport)
        self.items: dict[Any, Any] = {}
        self.transfer_format = TransferFormat.TEXT

    async def receive(self) -> bytes | None:
        """The next chunk the client sent; ``None`` once the client has gone away."""
        return await self._connection.incoming.get()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.receive()) is not None:
            yield chunk

    async def send(self, data: bytes | str) -> None:
        """Queue ``data`` for the client (``str`` is sent as UTF-8).

        Waits while the outgoing buffer is more than half full. Data sent after the connection
        ended is dropped; a client that does not keep up with a full buffer is aborted.

        Raises:
            ValueError: Bytes that are not UTF-8 on a text connection.
        """
        if isinstance(data, str):
            payload = data.encode()
        else:
            payload = bytes(data)
            if self.transfer_format is not TransferFormat.BINARY:
                payload.decode()  # a text frame must be UTF-8 (raises UnicodeDecodeError)
        if not payload:
            return
        outgoing = self._connection.outgoing
        await outgoing.wait_writable()
        self._connection.enqueue(payload)

    def abort(self) -> None:
        """End the connection at once, dropping what is not sent yet."""
        self._connection.abort()


class RawConnection:
    """A connection-handler connection on the server (what negotiate creates).

    It provides what the endpoint and the transports need of a connection
    (:class:`~signalr_core.endpoint.EndpointConnection`); applications see its
    :class:`ConnectionContext`.
    """

    def __init__(
        self,
        handler: ConnectionHandler,
        options: HubOptions,
        *,
        connection_id: str,
        connection_token: str,
    ) -> None:
        self._handler = handler
        self._options = options
        self.connection_id = connection_id
        self.connection_token = connection_token
        self.user_id: str | None = None
        self.status = ConnectionStatus.INACTIVE
        self.transport: TransportName | None = None
        self.context: ConnectionContext | None = None
        self.created = time.monotonic()
        self.finished = anyio.Event()
        self.incoming = IncomingBuffer(options.application_max_buffer_size)
        self.outgoing = OutgoingBuffer(options.max_buffered_messages, options.max_buffered_bytes)
        self.aborted = False
        self.transport_attached = False
        self.transport_scope: anyio.CancelScope | None = None
        self.direct_writer: DirectWriter | None = None
        self.transport_generation = 0
        self.current_poll: PollSlot | None = None
        self.poll_active = False
        self.last_poll = self.created
        # Stateful reconnect is a hub protocol feature: never offered, never resumed.
        self.detached_since: float | None = None
        self.resuming = False
        self.use_stateful_reconnect = False
        self._scope: anyio.CancelScope | None = None
        self._winding_down = False  # no more input; the handler has shutdown_timeout to end
        self._log = _log.bind(connection_id=connection_id)

    # -- what the transports need ---------------------------------------------------------------

    @property
    def binary(self) -> bool:
        """The handler chose binary frames."""
        context = self.context
        return context is not None and context.transfer_format is TransferFormat.BINARY

    @property
    def incoming_limit(self) -> int:
        """The most received bytes queued for the handler (application_max_buffer_size)."""
        return self.incoming.max_bytes

    async def feed(self, data: bytes) -> bool:
        """Hand received bytes to the handler; ``False`` if the connection is gone."""
        if not data:
            return not self.finished.is_set()
        return await self.incoming.put(data)

    def transport_closed(self) -> None:
        """The client went away: the handler reads ``None`` and has ``shutdown_timeout`` to
        return before it is cancelled."""
        self._wind_down()

    def _wind_down(self) -> None:
        self.incoming.end()
        self._winding_down = True
        if self._scope is not None:
            self._grace(self._scope)

    def _grace(self, scope: anyio.CancelScope) -> None:
        deadline = anyio.current_time() + self._options.shutdown_timeout
        scope.deadline = min(scope.deadline, deadline)

    def transport_lost(self, *, graceful: bool, now: float) -> bool:
        """The WebSocket ended: the connection ends too (no stateful reconnect)."""
        self.transport_closed()
        return False

    def abort(self) -> None:
        """End the connection at once, dropping whatever is queued."""
        self.aborted = True
        self.outgoing.close(discard=True)
        self.incoming.close()
        if self.transport_scope is not None:
            self.transport_scope.cancel()
        self._stop()

    # -- what the endpoint needs ----------------------------------------------------------------

    @property
    def can_resume(self) -> bool:
        """Never: raw connections have no stateful reconnect."""
        return False

    async def resume(self) -> int:  # pragma: no cover - never called, can_resume is False
        """Not supported (the endpoint never calls it: :attr:`can_resume` is ``False``)."""
        raise RuntimeError("raw connections cannot resume")

    def activate(
        self,
        transport: TransportName,
        *,
        user: Principal | None,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        cookies: Mapping[str, str],
        query_values: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        """Bind the transport and the request that started it; then the endpoint runs it."""
        self.transport = transport
        self.user_id = user.user_id if user is not None else None
        self.context = ConnectionContext(
            self, user=user, headers=headers, query=query, cookies=cookies, transport=transport
        )
        self.status = ConnectionStatus.ACTIVE
        self._log = self._log.bind(transport=str(transport))

    def close(self, error: str | None = None, *, allow_reconnect: bool = False) -> None:
        """Wind the connection down (shutdown): as when the client leaves, the handler reads
        ``None`` and is cancelled if it has not returned after ``shutdown_timeout``; what it
        sent is still delivered. Raw connections have no Close message (``error`` and
        ``allow_reconnect`` are for hubs)."""
        if self.status is ConnectionStatus.INACTIVE:
            self._end()
        else:
            self._wind_down()

    def tick(self, now: float) -> None:
        """Nothing to keep alive: raw connections have no pings or client timeout."""

    def enqueue(self, data: bytes) -> None:
        """Queue ``data``; a full buffer (a client not reading) aborts the connection."""
        if not self.outgoing.put(data) and not self.outgoing.closed:
            abort_slow_consumer(
                self.outgoing,
                self.transport,
                self._log,
                self._options.on_slow_consumer,
                self.abort,
            )

    def _stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        elif self.status is ConnectionStatus.INACTIVE:
            self._end()

    def _end(self) -> None:
        self.incoming.close()
        self.outgoing.close()
        self.status = ConnectionStatus.FINISHED
        self.finished.set()

    async def run(self) -> None:
        """Call the handler's ``on_connected``; then end the connection. Never raises."""
        context = self.context
        assert context is not None
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                if self.aborted:
                    scope.cancel()
                elif self._winding_down:
                    self._grace(scope)
                self._log.debug("connection_opened")
                async with anyio.create_task_group() as tg:
                    if self.transport is not TransportName.LONG_POLLING:
                        # The transport only reads: this task writes what the handler sends.
                        tg.start_soon(write_queued, self)
                    await self._handler.on_connected(context)
                    tg.cancel_scope.cancel()
        except Exception:  # the handler's failure (in a group, from the task group)
            self._log.exception("connection_handler_failed")
        finally:
            self._end()
            if self.direct_writer is not None and self.transport_scope is not None:
                # This connection was the response's writer: the request task takes over,
                # sends what is left and ends it (the WebSocket's close frame).
                self.transport_scope.cancel()
            self._log.debug("connection_closed", aborted=self.aborted)


class ConnectionHandlerEndpoint(ConnectionEndpoint[RawConnection]):
    """The ASGI application serving one :class:`ConnectionHandler` (``MapConnectionHandler``).

    Negotiate, the transports, CORS, authentication and their limits are those of
    :class:`~signalr_core.HubEndpoint`; hub-only options (protocols, keep-alive, client
    timeout, message size, invocation limits, filters, stateful reconnect) do not apply.

    Args:
        handler: Serves every connection (one instance, called once per connection).
        options: :class:`~signalr_core.HubOptions` (transports, buffer limits, timeouts, CORS,
            negotiate hooks).
        authenticate: As for :class:`~signalr_core.HubEndpoint`; the user is
            ``connection.user``.
    """

    _offers_stateful_reconnect = False

    def __init__(
        self,
        handler: ConnectionHandler,
        *,
        options: HubOptions | None = None,
        authenticate: Authenticator | None = None,
    ) -> None:
        if not isinstance(handler, ConnectionHandler):
            raise TypeError("handler must be a ConnectionHandler instance")
        super().__init__(
            name=type(handler).__qualname__,
            options=options,
            authenticate=authenticate,
            authorize=type(handler).authorize,
        )
        self.handler = handler

    def _create_connection(self, connection_id: str, token: str) -> RawConnection:
        return RawConnection(
            self.handler, self.options, connection_id=connection_id, connection_token=token
        )
