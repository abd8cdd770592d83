"""Per-endpoint options: transports, protocols, limits, timeouts and hooks.

Every limit here is a security limit: it bounds what one client can make the server hold in
memory or how long a silent client keeps resources. The defaults are ASP.NET Core's.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from signalr_core.auth import AuthRequest
    from signalr_core.filters import HubFilter
    from signalr_core.protocols import HubProtocol

__all__ = [
    "HttpTransportType",
    "HubOptions",
    "NegotiateHeadersHook",
    "NegotiateRedirectHook",
]


class HttpTransportType(enum.IntFlag):
    """The transports an endpoint offers (combine with ``|``)."""

    WEBSOCKETS = 1
    SERVER_SENT_EVENTS = 2
    LONG_POLLING = 4
    ALL = 7


NegotiateRedirectHook: TypeAlias = Callable[
    ["AuthRequest"],
    "tuple[str, str | None] | Awaitable[tuple[str, str | None] | None] | None",
]
"""``(request) -> (url, access_token) | None``; sync or async. A tuple answers negotiate with
a redirect (``{"url": ..., "accessToken": ...}``); ``None`` negotiates normally."""

NegotiateHeadersHook: TypeAlias = Callable[["AuthRequest"], Sequence[tuple[str, str]]]
"""``(request) -> [(name, value), ...]``: extra response headers on negotiate answers, for
example ``("set-cookie", "a=b; Path=/")``."""


@dataclass(frozen=True, kw_only=True)
class HubOptions:
    """Options of one :class:`~signalr_core.HubEndpoint`.

    Attributes:
        transports: Transports offered in negotiate and accepted on the connect path.
        protocols: Hub protocols by wire name; ``None`` means JSON and MessagePack.
        max_message_size: Largest incoming hub message in bytes (ASP.NET's
            ``MaximumReceiveMessageSize``, 32 KiB). A bigger one closes the connection with an
            error. ``None`` disables the limit (not recommended).
        max_buffered_messages: Outgoing messages queued per connection before the connection
            is treated as a slow consumer and aborted.
        max_buffered_bytes: Outgoing bytes queued per connection before the same happens.
        max_parallel_invocations: Non-streaming invocations that run at once per connection;
            further invocations wait (and hold up the connection's message loop, as ASP.NET).
        stream_buffer_capacity: Items of a client-to-server stream buffered before reading
            more messages from the connection waits for the hub method.
        keep_alive_interval: Seconds of server silence after which a Ping is sent.
        client_timeout: Seconds without any message from the client before it is dropped.
        handshake_timeout: Seconds a new connection has to complete the handshake.
        long_poll_timeout: Seconds a Long Polling request waits for data before answering 200
            with an empty body.
        disconnect_timeout: Seconds a negotiated connection may stay without a transport
            request (never connected, or Long Polling between polls) before it is dropped.
        shutdown_timeout: Seconds the endpoint waits on lifespan exit for connections to end
            after telling them to close (``allowReconnect: true``).
        enable_detailed_errors: Include exception types and messages in errors sent to the
            client, as ASP.NET's ``EnableDetailedErrors``.
        allow_stateful_reconnect: Offer stateful reconnect (ASP.NET 8's ``AllowStatefulReconnects``)
            when the client asks (``withStatefulReconnect()``): a WebSocket that drops keeps the
            connection for ``disconnect_timeout``; the client reconnects with the same token
            and unacknowledged messages are replayed both ways.
        stateful_reconnect_buffer_size: Bytes of sent, unacknowledged messages kept for replay
            per stateful connection. Server-to-client streams wait while it is half full; any
            other send beyond it aborts the connection (ASP.NET makes every sender wait).
        max_pending_client_results: Client results (``clients.client(id).invoke(...)``) a
            connection may have outstanding at once; one more raises
            :class:`~signalr_core.errors.ClientUnavailableError` (bounds the pending table).
        allowed_origins: CORS allow-list; ``"*"`` allows every origin. Empty disables CORS.
        negotiate_redirect: Optional redirect hook, see :data:`NegotiateRedirectHook`.
        negotiate_headers: Optional hook adding headers (cookies) to negotiate answers.
        application_max_buffer_size: Received bytes a connection holds before its transport
            waits (backpressure); also the largest send POST body (413) and the largest
            WebSocket message (the socket is closed with 1009).
        connection_token_key: Opt-in shared secret (at least 16 bytes) for running one hub in
            several processes or hosts without affinity. Negotiate (version 1) then mints
            self-verifying tokens, ``<connectionId>.<issued-at>.<MAC>`` (HMAC-SHA256 over the
            connection id, the issue time and the user id), and a WebSocket connect whose token
            this process does not know *adopts* the connection when the MAC verifies, the token
            is younger than ``connection_token_max_age`` and the request's user is the one it
            was issued to; anything else is still ``404``. Give every process the same key
            (derive it from a secret they share; never reuse that secret itself). Only
            WebSockets can be adopted: Server-Sent Events and Long Polling spread one connection
            over several requests, which must all reach the process holding it, so offer only
            :attr:`HttpTransportType.WEBSOCKETS` when processes are not behind sticky sessions.
            A token is adopted at most once per process (forgotten tokens are remembered until
            they expire); another process that never saw it could still adopt it within the
            bound, for the same user only. Stateful reconnect is not offered with a key: its
            replay buffer lives in one process. Version 0 negotiate (the connection id is the
            token) is unchanged.
        on_slow_consumer: Optional observer (metrics), called with the transport's name
            (``"WebSockets"``, ``"ServerSentEvents"``, ``"LongPolling"``) each time a
            connection is aborted as a slow consumer. It runs in the sender's task: it must
            return at once and not raise.
        hub_filters: :class:`~signalr_core.HubFilter` instances run, in order, around every
            hub method invocation and the ``on_connected`` / ``on_disconnected`` hooks, before
            the hub class's own ``filters`` (ASP.NET's ``HubOptions.AddFilter``).
        inline_io: While a WebSocket or event-stream connection waits idle (asyncio), a frame
            for it is written in the task that produces it (a broadcast, a group message,
            another connection's invocation), and a chunk it receives runs in the task that
            received it as far as it can without suspending (plain hub functions), instead of
            waking the connection's own task: no task switch per message. Nothing waits for a
            slow client: a write that has to wait is finished by the connection's task (every
            step in one context, a copy of the request task's, so context variables set around
            the inner ``send`` work). So an ASGI middleware that wraps ``send`` must not keep a
            cancel scope or ``asyncio.timeout`` open across the inner ``send`` (Starlette's do
            not); ``False`` turns this off, and each connection's task does its own reading
            and writing.
        connection_token_max_age: Seconds after negotiate during which another process may
            adopt a token. The client connects right after negotiate; the negotiating process
            itself drops a connection that is not connected within ``disconnect_timeout``,
            which is why the default is the same 15 s.
    """

    transports: HttpTransportType = HttpTransportType.ALL
    protocols: Mapping[str, HubProtocol] | None = None
    max_message_size: int | None = 32 * 1024
    max_buffered_messages: int = 4096
    max_buffered_bytes: int = 4 * 1024 * 1024
    max_parallel_invocations: int = 1
    stream_buffer_capacity: int = 10
    keep_alive_interval: float = 15.0
    client_timeout: float = 30.0
    handshake_timeout: float = 15.0
    long_poll_timeout: float = 90.0
    disconnect_timeout: float = 15.0
    shutdown_timeout: float = 5.0
    enable_detailed_errors: bool = False
    allow_stateful_reconnect: bool = False
    allowed_origins: Sequence[str] = field(default_factory=tuple)
    negotiate_redirect: NegotiateRedirectHook | None = None
    negotiate_headers: NegotiateHeadersHook | None = None
    application_max_buffer_size: int = 1024 * 1024
    max_pending_client_results: int = 64
    stateful_reconnect_buffer_size: int = 1024 * 1024
    connection_token_key: bytes | None = field(default=None, repr=False)
    connection_token_max_age: float = 15.0
    on_slow_consumer: Callable[[str], None] | None = None
    hub_filters: Sequence[HubFilter] = field(default_factory=tuple)
    inline_io: bool = True

    def __post_init__(self) -> None:
        if self.max_parallel_invocations < 1:
            raise ValueError("max_parallel_invocations must be at least 1")
        if self.max_buffered_messages < 1 or self.max_buffered_bytes < 1:
            raise ValueError("outgoing buffer limits must be positive")
        if self.stateful_reconnect_buffer_size < 1:
            raise ValueError("stateful_reconnect_buffer_size must be positive")
        if self.max_pending_client_results < 1:
            raise ValueError("max_pending_client_results must be at least 1")
        if self.connection_token_key is not None and len(self.connection_token_key) < 16:
            raise ValueError("connection_token_key must have at least 16 bytes")
        if self.stream_buffer_capacity < 1:
            raise ValueError("stream_buffer_capacity must be at least 1")
        for name in (
            "keep_alive_interval",
            "client_timeout",
            "handshake_timeout",
            "long_poll_timeout",
            "disconnect_timeout",
            "connection_token_max_age",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
