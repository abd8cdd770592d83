"""Running hub connections: the message loop, invocations, streams and the outgoing buffer.

Theory of operation
===================

A :class:`HubServerConnection` is created by negotiate (or by a WebSocket request without an
id) and started when a transport attaches. Its :meth:`~HubServerConnection.run` task lives in
the endpoint's task group, so Long Polling and Server-Sent Events connections outlive the HTTP
requests that carry them. The run is a :class:`~signalr_core._session.Session` (made when the
transport attaches; it sees the connection only through
:class:`~signalr_core._session.SessionHost`), one task group (handshake included; its cancel
scope is what closing cancels):

* the **message loop** reads byte chunks the transport fed in (an
  :class:`~signalr_core.transports.IncomingBuffer`, bounded in bytes), hands
  them to the sans-I/O :class:`~signalr_core.connection.HubConnectionState` and dispatches the
  decoded messages in order;
* invocations, streams both ways, cancellation and upload completions go to the connection's
  :class:`~signalr_core._invocations.Invocations` (made by the handshake): up to
  ``max_parallel_invocations`` **invocation workers**, started by the first invocation that
  needs one, and one task per **server-to-client stream** and per method taking
  **client-to-server streams**, all in this task group. It sees the connection only through
  :class:`~signalr_core._invocations.InvocationHost` (``send``, ``new_hub``, ...) and the
  session's message loop (``writing_while``).

The first failure cancels everything; ``run`` then unregisters the connection, calls the hub's
``on_disconnected`` (shielded, bounded in time) and closes the outgoing buffer so the transport
sends what is left and ends. Writes never block: frames go to the bounded
:class:`~signalr_core.transports.OutgoingBuffer` and a connection whose buffer is full is
aborted. Server-to-client streams wait for buffer space instead (backpressure).

**The writer.** With a WebSocket or an event stream attached (``direct_writer``), the message
loop is also the response's writer: it waits for received data and queued frames at once,
sends what is queued before it reads the next chunk (so a reply costs no wake-up of another
task), and has no writer task beside it. While it waits for a busy worker or a full upload
stream, a helper task writes for it (the method it waits for may need frames to go out).
While it waits idle, work for it is done in the task that brings it (:mod:`signalr_core._inline`):
a received chunk is run by :meth:`HubServerConnection.feed` in the transport's task (plain
functions answered there, the rest handed to the loop in order), and a frame for it is written
by :meth:`HubServerConnection.write` in the producer's task (a write that has to wait for a
slow client is finished by the loop): a round trip or a broadcast wakes no other task. A slow
reader still fills the bounded buffer and is aborted. When the connection ends, the request
task sends what is left and ends the response (see :mod:`signalr_core.transports.websockets`).

**Closing from outside.** :meth:`~HubServerConnection.close` queues ``Close`` and cancels
``run``; the endpoint's ``hub_context.close_connections(...)`` and ``context.abort()`` use it.

**Client results** (:mod:`signalr_core._results`): :meth:`~HubServerConnection.invoke_client`
waits on an entry of the session's table, made by its first client result; a worker that
waits lends its slot so that the message loop can read the answer.

**Stateful reconnect** (:mod:`signalr_core._stateful`, over the sans-I/O sequence ids and
bounded replay buffer of :mod:`signalr_core._sequencing`; made by the handshake only for
connections that use it). When the WebSocket breaks (no close frame from the client, no close
by the server), :meth:`~HubServerConnection.transport_lost` keeps the connection (its task
group keeps running) for ``disconnect_timeout``; a WebSocket request with the same token calls
:meth:`~HubServerConnection.resume`, which queues ``Sequence`` and the replay buffer before
anything else.

**Memory per idle connection.** An idle WebSocket connection holds one task of its own (``run``),
one task group and one small slotted ``Session``: no writer task, no workers (started by the
first job that needs one), no buffer storage while empty, no replay buffer or client-results
table unless used.

Close error texts follow ASP.NET Core's ``HubConnectionHandler`` and ``ErrorMessageHelper``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from signalr_core._lifecycle import Event, Lifecycle, Phase, TickAction
from signalr_core._logging import get_logger
from signalr_core._results import results_forbidden
from signalr_core._session import Session
from signalr_core._stateful import Stateful
from signalr_core.auth import without_token
from signalr_core.clients import GroupManager, HubCallerClients
from signalr_core.connection import ConnectionPhase, HandshakeCompleted
from signalr_core.context import HubCallerContext, Principal
from signalr_core.errors import ClientResultsNotAllowedError, ClientUnavailableError
from signalr_core.filters import FilterPipeline
from signalr_core.hub import Hub, HubMethod, normalize_name
from signalr_core.lifetime import HubLifetimeManager
from signalr_core.messages import PING, HubMessage, TransferFormat
from signalr_core.options import HubOptions
from signalr_core.transports import (
    DirectWriter,
    IncomingBuffer,
    OutgoingBuffer,
    PollSlot,
    TransportName,
    abort_slow_consumer,
)

if TYPE_CHECKING:
    from signalr_core._sequencing import Sequencing
    from signalr_core.protocols import HubProtocol

__all__ = ["ConnectionStatus", "EncodeCache", "HubDispatcher", "HubServerConnection"]

_log = get_logger("signalr_core")


class ConnectionStatus(enum.Enum):
    """Where a server connection is, from the endpoint's point of view."""

    INACTIVE = "inactive"  # negotiated, no transport yet
    ACTIVE = "active"  # a transport attached, run() started
    FINISHED = "finished"  # run() ended


class EncodeCache:
    """Encodes the message of a broadcast once per protocol.

    A broadcast writes the same message object to every connection in one synchronous loop, so
    remembering the last message (by identity, holding a reference) is enough.
    """

    __slots__ = ("_encoded", "_message")

    def __init__(self) -> None:
        self._message: HubMessage | None = None
        self._encoded: dict[str, bytes] = {}

    def encode(self, protocol: HubProtocol, message: HubMessage) -> bytes:
        if message is not self._message:
            self._message = message
            self._encoded = {}
        data = self._encoded.get(protocol.name)
        if data is None:
            data = protocol.encode_message(message)
            self._encoded[protocol.name] = data
        return data


class HubDispatcher:
    """Per-endpoint part of dispatching: the hub's methods and shared facades."""

    def __init__(
        self,
        hub_class: type[Hub],
        methods: Mapping[str, HubMethod],
        options: HubOptions,
        manager: HubLifetimeManager,
        protocols: Mapping[str, HubProtocol],
    ) -> None:
        self.protocols = protocols  # the hub protocols a handshake may select
        self.hub_class = hub_class
        self.methods = methods
        self.options = options
        self.manager = manager
        self.groups = GroupManager(manager)
        self.encode_cache = EncodeCache()
        self.local_lookup: Callable[[str], HubServerConnection | None] | None = None
        self._by_target: dict[str, HubMethod] = {}
        # None without filters: the invocation path then calls the method directly.
        self.filters = FilterPipeline.build(options.hub_filters, hub_class.filters)

    def lookup(self, target: str) -> HubMethod | None:
        """The method a wire target names (cached per exact spelling for known methods)."""
        method = self._by_target.get(target)
        if method is None:
            method = self.methods.get(normalize_name(target))
            if method is not None and len(self._by_target) < 4 * len(self.methods) + 64:
                self._by_target[target] = method
        return method


class HubServerConnection:
    """One hub connection on the server (the lifetime manager's ``HubConnectionHandle``).

    Attributes:
        connection_id: Public id.
        connection_token: Secret id used in transport requests (equals the id for v0).
        user_id: The user's id, ``None`` when anonymous.
        status: :class:`ConnectionStatus`.
        transport: The attached transport, ``None`` before.
        context: The hub caller context (set when a transport attaches).
        outgoing: Frames waiting for the transport.

    An idle connection holds only what it needs: slots instead of a ``__dict__``, buffers that
    allocate storage on use, workers started by the first invocation that needs one, the
    logger, caller proxies and ``finished`` event made when first asked for (see
    ``benchmarks/memory_bench.py`` and ``tests/signalr_core/test_memory.py``).
    """

    __slots__ = (
        "_caller_clients_cache",
        "_dispatcher",
        "_finished_event",
        "_incoming",
        "_life",
        "_session",
        "_stateful",
        "aborted",
        "connection_id",
        "connection_token",
        "context",
        "current_poll",
        "direct_writer",
        "items",
        "last_poll",
        "outgoing",
        "poll_active",
        "protocol",
        "resuming",
        "transport",
        "transport_attached",
        "transport_generation",
        "transport_scope",
        "use_stateful_reconnect",
        "user",
        "user_id",
    )

    def __init__(
        self,
        dispatcher: HubDispatcher,
        *,
        connection_id: str,
        connection_token: str,
    ) -> None:
        options = dispatcher.options
        self._dispatcher = dispatcher
        self.connection_id = connection_id
        self.connection_token = connection_token
        self.user_id: str | None = None
        self.user: Principal | None = None
        self.transport: TransportName | None = None
        self.context: HubCallerContext | None = None
        self.items: dict[Any, Any] = {}
        self.outgoing = OutgoingBuffer(options.max_buffered_messages, options.max_buffered_bytes)
        self.protocol: HubProtocol | None = None
        # The phase and the timers (keep-alive, client timeout, reconnect wait): one place.
        self._life = Lifecycle(options, time.monotonic())
        self._finished_event: anyio.Event | None = None
        self.poll_active = False
        self.last_poll = self._life.created
        self.current_poll: PollSlot | None = None
        self.transport_attached = False
        self.transport_scope: anyio.CancelScope | None = None
        # Set by a WebSocket transport while attached: sends frames on its socket. While it is
        # set the message loop is the socket's writer (see Session.writing_while).
        self.direct_writer: DirectWriter | None = None
        self.aborted = False
        self._incoming = IncomingBuffer(options.application_max_buffer_size)
        # The run (made when a transport attaches): the protocol state, the task group whose
        # cancel scope closing cancels, invocations, client results.
        self._session: Session | None = None
        self.use_stateful_reconnect = False  # negotiated; active only with protocol version 2
        # Stateful reconnect (protocol version 2 on a connection that negotiated it).
        self._stateful: Stateful | None = None  # made by the handshake
        self.resuming = False  # a WebSocket request is taking over (claimed before any await)
        self.transport_generation = 0
        self._caller_clients_cache: HubCallerClients | None = None

    @property
    def log(self) -> Any:
        """The connection's logger (bound when something is logged, rare: not kept)."""
        if self.transport is None:
            return _log.bind(connection_id=self.connection_id)
        return _log.bind(connection_id=self.connection_id, transport=str(self.transport))

    @property
    def _caller_clients(self) -> HubCallerClients:
        clients = self._caller_clients_cache
        if clients is None:
            dispatcher = self._dispatcher
            clients = HubCallerClients(dispatcher.manager, self, dispatcher.local_lookup)
            self._caller_clients_cache = clients
        return clients

    def new_hub(self) -> Hub:
        """A hub instance for one invocation or hook, bound to this connection."""
        hub = self._dispatcher.hub_class()
        assert self.context is not None
        hub.context = self.context
        hub.clients = self._caller_clients
        hub.groups = self._dispatcher.groups
        return hub

    @property
    def sequencing(self) -> Sequencing | None:
        """Stateful reconnect's sequence ids and replay buffer (``None`` unless active)."""
        stateful = self._stateful
        return None if stateful is None else stateful.sequencing

    @property
    def status(self) -> ConnectionStatus:
        """Where the connection is, as the endpoint sees it (from its lifecycle phase)."""
        phase = self._life.phase
        if phase is Phase.NEGOTIATED:
            return ConnectionStatus.INACTIVE
        if phase is Phase.CLOSED:
            return ConnectionStatus.FINISHED
        return ConnectionStatus.ACTIVE

    @property
    def created(self) -> float:
        """When the connection was made (``time.monotonic()``)."""
        return self._life.created

    @property
    def detached_since(self) -> float | None:
        """When a stateful connection lost its transport (``None`` unless it did)."""
        return self._life.detached_since

    @property
    def finished(self) -> anyio.Event:
        """Set once the connection ended (``status`` is ``FINISHED``)."""
        event = self._finished_event
        if event is None:
            event = self._finished_event = anyio.Event()
            if self.status is ConnectionStatus.FINISHED:
                event.set()
        return event

    def set_finished(self) -> None:
        """The run ended (the lifecycle is closed, waiters on ``finished`` wake up)."""
        self._life.handle(Event.FINISH)
        if self._finished_event is not None:
            self._finished_event.set()

    # -- attaching a transport ---------------------------------------------------------------

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
        """Bind the transport and the request that started it; then start :meth:`run`."""
        self.transport = transport
        self.user = user
        self.user_id = user.user_id if user is not None else None
        self.context = HubCallerContext(
            connection_id=self.connection_id,
            user=user,
            items=self.items,
            # The request's own mappings (built for this request): no copies per connection.
            headers=headers,
            query=without_token(query),
            cookies=cookies,
            transport=str(transport),
            query_values=without_token(query_values or {}),
            on_abort=self.close,
        )
        self._session = Session(self, self._dispatcher, self._life, self._incoming)
        self._life.handle(Event.ACTIVATE)
        self._life.pings = transport is not TransportName.LONG_POLLING  # as ASP.NET

    @property
    def binary(self) -> bool:
        """The negotiated protocol writes binary frames (MessagePack)."""
        protocol = self.protocol
        return protocol is not None and protocol.transfer_format is TransferFormat.BINARY

    @property
    def incoming_limit(self) -> int:
        """The most received bytes queued for the message loop (application_max_buffer_size)."""
        return self._incoming.max_bytes

    async def feed(self, data: bytes) -> bool:
        """Hand received bytes to the message loop; ``False`` if the connection is gone."""
        if not data:
            return self.status is not ConnectionStatus.FINISHED
        self._life.received = True
        session = self._session
        if session is not None and session.inline.receives_now:
            assert session.invocations is not None
            session.inline.receive_now(data, session.invocations)  # no wake-up of the loop
            return True
        return await self._incoming.put(data)

    def transport_closed(self) -> None:
        """The client went away (socket closed, DELETE, SSE request ended)."""
        self._incoming.end()

    # -- HubConnectionHandle -------------------------------------------------------------------

    def write(self, message: HubMessage) -> None:
        """Encode (once per protocol per broadcast) and enqueue without blocking."""
        protocol = self.protocol
        if not self._life.is_open or protocol is None:
            return
        data = self._dispatcher.encode_cache.encode(protocol, message)
        stateful = self._stateful
        if stateful is None or stateful.keep(message, data):
            self._enqueue(data)

    def send(self, message: HubMessage) -> None:
        """Encode and queue a message for this connection only (after the handshake)."""
        protocol = self.protocol
        if not self._life.is_open or protocol is None:
            return
        data = protocol.encode_message(message)
        stateful = self._stateful
        if stateful is None or stateful.keep(message, data):
            self._enqueue(data)

    def wait_replay_space(self) -> Awaitable[None]:
        """Backpressure for streams: wait while the replay buffer is more than half full."""
        assert self._stateful is not None  # only connections with sequencing call it
        return self._stateful.wait_replay_space()

    # -- stateful reconnect: losing and regaining the transport ---------------------------------

    def transport_lost(self, *, graceful: bool, now: float) -> bool:
        """The transport ended; ``True`` when the connection stays to await a reconnect.

        With stateful reconnect, a broken WebSocket may leave it waiting for
        ``disconnect_timeout`` (:meth:`Stateful.transport_lost`); otherwise the connection ends.
        """
        stateful = self._stateful
        if stateful is not None and stateful.transport_lost(graceful=graceful, now=now):
            return True
        self.transport_closed()
        return False

    @property
    def can_resume(self) -> bool:
        """Whether a new WebSocket with this connection's token may take over (stateful)."""
        return self._stateful is not None and self._life.is_open

    async def resume(self) -> int:
        """A new transport takes over: send ``Sequence`` and replay what was not acknowledged.

        An older transport that is still attached (the client noticed the drop first) is
        cancelled. Returns the new transport generation.
        """
        assert self._stateful is not None  # can_resume
        return await self._stateful.resume()

    def _enqueue(self, data: bytes) -> None:
        session = self._session
        if (session is not None and session.inline.write_now(data)) or self.outgoing.put(data):
            self._life.wrote = True
        elif not self.outgoing.closed:
            abort_slow_consumer(
                self.outgoing,
                self.transport,
                self.log,
                self._dispatcher.options.on_slow_consumer,
                self.abort,
            )

    # -- ending --------------------------------------------------------------------------------

    def close(self, error: str | None = None, *, allow_reconnect: bool = False) -> None:
        """Send Close (with ``error`` / ``allowReconnect``) and end the connection."""
        life = self._life
        if life.is_closing:
            return
        inactive = life.phase is Phase.NEGOTIATED
        life.handle(Event.CLOSE)
        session = self._session
        if session is not None and session.state.phase is not ConnectionPhase.CLOSED:
            session.state.close(error, allow_reconnect)
            session.flush_state()
        if session is not None and session.scope is not None:
            session.scope.cancel()
        elif inactive:
            self._end_inactive()

    def abort(self) -> None:
        """End the connection at once, dropping whatever is queued."""
        self.aborted = True
        life = self._life
        inactive = life.phase is Phase.NEGOTIATED
        if life.phase is not Phase.CLOSED:
            life.handle(Event.CLOSE)
        self.outgoing.close(discard=True)
        if self.transport_scope is not None:
            self.transport_scope.cancel()  # do not wait for a socket that does not drain
        session = self._session
        if session is not None and session.scope is not None:
            session.scope.cancel()
        elif inactive:
            self._end_inactive()

    def _end_inactive(self) -> None:
        self.outgoing.close()
        self._incoming.close()
        self.set_finished()

    def tick(self, now: float) -> None:
        """Keep-alive, client timeout and reconnect wait, called about once a second.

        The decisions are the lifecycle's (:meth:`Lifecycle.on_tick`); this performs them.
        """
        stateful = self._stateful
        pending_ack = stateful is not None and stateful.sequencing.ack_pending
        for action in self._life.on_tick(now, acknowledge=pending_ack):
            if action is TickAction.ACK:
                if stateful is not None:
                    stateful.acknowledge()
            elif action is TickAction.PING:
                self.send(PING)
            elif action is TickAction.ABORT_CLIENT_TIMEOUT:
                self.log.info("client_timed_out", timeout=self._dispatcher.options.client_timeout)
                self.abort()
            else:
                timeout = self._dispatcher.options.disconnect_timeout
                self.log.info("reconnect_timed_out", timeout=timeout)
                self.abort()

    # -- the connection's life -----------------------------------------------------------------

    def run(self) -> Coroutine[Any, Any, None]:
        """Handshake, ``on_connected``, message loop, ``on_disconnected``; never raises.

        The run is the :class:`~signalr_core._session.Session` made by :meth:`activate`; this
        returns its coroutine, so the connection adds no frame of its own.
        """
        assert self._session is not None, "activate() first"
        return self._session.run()

    def handshake_completed(self, event: HandshakeCompleted) -> Stateful | None:
        """Take the negotiated protocol; stateful reconnect's state when it is active."""
        self.protocol = event.protocol
        if self.use_stateful_reconnect and event.version >= 2:
            limit = self._dispatcher.options.stateful_reconnect_buffer_size
            self._stateful = Stateful(self, self._life, limit)
        return self._stateful

    # -- client results ------------------------------------------------------------------------

    async def invoke_client(
        self,
        method: str,
        args: Sequence[Any],
        *,
        result_type: Any = Any,
        timeout: float | None = None,  # noqa: ASYNC109 - the API ASP.NET users expect
    ) -> Any:
        """Invoke ``method`` on this client and wait for its Completion (client results).

        See :meth:`signalr_core.clients.SingleClientProxy.invoke` for the errors.
        """
        hook = results_forbidden.get()
        if hook is not None:
            raise ClientResultsNotAllowedError(
                f"Client results inside {hook} Hub methods are not allowed."
            )
        if not self._life.is_open:
            raise ClientUnavailableError(f"Connection '{self.connection_id}' disconnected.")
        assert self._session is not None  # open: a transport attached
        return await self._session.invoke_client(method, args, result_type, timeout)
