"""One run of a hub connection: handshake, ``on_connected``, message loop, ``on_disconnected``.

Theory of operation
===================

A :class:`~signalr_core.dispatcher.HubServerConnection` makes one :class:`Session` when a
transport attaches (with the protocol state for that transport); its ``run`` is
:meth:`Session.run`, one task group (handshake included; its cancel scope is what closing the
connection cancels):

* the **handshake** reads chunks until the sans-I/O
  :class:`~signalr_core.connection.HubConnectionState` selects a protocol (bounded by
  ``handshake_timeout``); the connection then registers with the lifetime manager and the
  hub's ``on_connected`` runs;
* the **message loop** hands the chunks the transport fed in to the state and dispatches the
  decoded messages in order: invocations, stream items, cancellation and upload completions
  to :class:`~signalr_core._invocations.Invocations`, client results' Completions to the
  connection's results table, Sequence and Ack to stateful reconnect
  (:class:`~signalr_core._stateful.Stateful`);
* with a WebSocket or an event stream attached the loop is also its **writer** (what is
  queued goes out before the next chunk is read); while it waits for a busy worker or a full
  upload stream, :meth:`Session.writing_while` lends it a helper task that writes;
* the **end** (:meth:`Session.finish`, shielded and bounded in time): unregister, the hub's
  ``on_disconnected``, close the outgoing buffer.

It also holds the client-results table (made by the first client result;
:meth:`Session.invoke_client`).

The session knows the connection only through :class:`SessionHost` and the endpoint only
through :class:`SessionMethods`; it gets the connection's lifecycle and incoming buffer from
the connection that makes it (no import of the dispatcher). One small slotted object per
connection: the connection keeps no per-run state of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import anyio.abc

from signalr_core._inline import Inline, decode
from signalr_core._invocations import (
    InvocationHost,
    Invocations,
    MethodTable,
    build_error_message,
)
from signalr_core._lifecycle import Event, Lifecycle
from signalr_core._results import ClientResults, results_forbidden
from signalr_core.connection import ConnectionPhase, HandshakeCompleted, HubConnectionState
from signalr_core.errors import HandshakeError, ProtocolError
from signalr_core.handshake import HANDSHAKE_CANCELED
from signalr_core.lifetime import HubConnectionHandle
from signalr_core.messages import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
)
from signalr_core.transports import (
    DirectWriter,
    IncomingBuffer,
    TransportName,
    wait_for_input_or_output,
    write_queued,
)

if TYPE_CHECKING:
    from signalr_core._stateful import Stateful
    from signalr_core.lifetime import HubLifetimeManager
    from signalr_core.protocols import HubProtocol

__all__ = ["CONNECTION_ERROR", "Session", "SessionHost", "SessionMethods"]

CONNECTION_ERROR: Final = "Connection closed with an error."
_DISCONNECT_HANDLER_TIMEOUT: Final = 30.0


class SessionHost(InvocationHost, HubConnectionHandle, Protocol):
    """What a run needs of its connection (``HubServerConnection``): what invocations need,
    the lifetime manager's handle, and the following.

    Attributes:
        direct_writer: Sends frames on the attached WebSocket or event stream (``None``
            otherwise); while it is set the message loop is their writer.
        transport: The attached transport.
        transport_scope: The request task's cancel scope (``None`` when none is attached).
    """

    direct_writer: DirectWriter | None
    transport: TransportName | None
    transport_scope: anyio.CancelScope | None

    def handshake_completed(self, event: HandshakeCompleted) -> Stateful | None:
        """Take the negotiated protocol; stateful reconnect's state when it is active."""

    def close(self, error: str | None = None, *, allow_reconnect: bool = False) -> None:
        """Queue ``Close`` and end the connection."""

    def set_finished(self) -> None:
        """The run ended (the lifecycle is closed, waiters on ``finished`` wake up)."""


class SessionMethods(MethodTable, Protocol):
    """What a run needs of the endpoint (``HubDispatcher``).

    Attributes:
        manager: The lifetime manager the connection registers with.
        protocols: The hub protocols the endpoint offers (the handshake picks one).
    """

    manager: HubLifetimeManager
    protocols: Mapping[str, HubProtocol]


class Session:
    """One run of a connection (made when a transport attaches, run by
    ``HubServerConnection.run``).

    Args:
        host: The connection.
        methods: The endpoint's methods, filters, options, lifetime manager and protocols.
        life: The connection's lifecycle.
        incoming: The connection's incoming buffer (the transport feeds it).

    Attributes:
        state: The sans-I/O protocol state (``close()`` queues ``Close`` through it).
        scope: The task group's cancel scope, ``None`` before :meth:`run` entered it.
        invocations: Invocations and streams, made by the handshake.
        results: The client-results table, made by the first client result.
    """

    __slots__ = (
        "_connected",
        "_host",
        "_incoming",
        "_life",
        "_methods",
        "_stateful",
        "inline",
        "invocations",
        "results",
        "scope",
        "state",
    )

    def __init__(
        self,
        host: SessionHost,
        methods: SessionMethods,
        life: Lifecycle,
        incoming: IncomingBuffer,
    ) -> None:
        options = methods.options
        transport = host.transport
        self.state = HubConnectionState(
            methods.protocols,
            transfer_formats=(
                TransferFormat.TEXT
                if transport is TransportName.SERVER_SENT_EVENTS
                else TransferFormat.TEXT | TransferFormat.BINARY
            ),
            max_message_size=options.max_message_size,
            detailed_errors=options.enable_detailed_errors,
        )
        self._host = host
        self._methods = methods
        self._life = life
        self._incoming = incoming
        self._stateful: Stateful | None = None
        # What finish() must undo: 1 registered with the manager, 2 on_connected ran too.
        self._connected = 0
        # Invocations and streams (workers, uploads, cancellation): made by the handshake.
        self.invocations: Invocations | None = None
        # The task group's cancel scope: what closing the connection cancels.
        self.scope: anyio.CancelScope | None = None
        self.results: ClientResults | None = None  # made by the first client result
        # While the loop waits idle as a WebSocket's or event stream's writer, received chunks
        # and frames to send are handled in the tasks that bring them.
        self.inline = Inline(host, self.state)

    async def run(self) -> None:
        """Handshake, ``on_connected``, message loop, ``on_disconnected``; never raises."""
        error: Exception | None = None
        try:
            try:
                # One task group for the whole life (handshake included): its cancel scope is
                # what close() cancels, and it holds the workers and streams (a separate scope
                # per connection would cost memory for nothing).
                async with anyio.create_task_group() as tg:
                    self.scope = tg.cancel_scope
                    if self._life.is_closing:
                        tg.cancel_scope.cancel()
                    pending = await self._connect()
                    if pending is not None:
                        invocations = Invocations(self._host, self._methods, tg, self)
                        self.invocations = invocations
                        try:
                            await self._message_loop(pending, invocations)
                        finally:
                            invocations.stop_workers()
                    tg.cancel_scope.cancel()  # the client closed: end the workers and streams
            except BaseExceptionGroup as group:
                single = _single_exception(group)
                if single is group:
                    raise
                raise single from None  # report the failure itself, not its task-group wrapper
        except HandshakeError as exc:
            self._host.log.info("handshake_failed", error=str(exc))
        except _ConnectFailed as exc:
            error = exc.error
        except ProtocolError as exc:
            error = exc
            self._host.log.info("client_message_rejected", error=str(exc))
            self._host.close(self._error_message(exc))
        except Exception as exc:
            error = exc
            self._host.log.exception("connection_failed")
            self._host.close(self._error_message(exc))
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this connection's task is cancelled (the endpoint stops)
            # Not a cancellation of this task (a future of the server's that was cancelled):
            # this connection fails; letting it through would stop the endpoint's task group.
            error = RuntimeError("an operation of the connection was cancelled")
            error.__cause__ = exc
            self._host.log.exception("connection_failed")
            self._host.close(self._error_message(error))
        finally:
            with anyio.move_on_after(_DISCONNECT_HANDLER_TIMEOUT, shield=True):
                await self.finish(error)

    def _error_message(self, exc: BaseException) -> str:
        detailed = self._methods.options.enable_detailed_errors
        return build_error_message(CONNECTION_ERROR, exc, detailed)

    async def _connect(self) -> list[HubMessage] | None:
        """Handshake, then ``on_connected``: the messages that came with the handshake, or
        ``None`` when the connection ends here."""
        pending = await self._handshake()
        if pending is None:
            return None
        host = self._host
        self._life.handle(Event.HANDSHAKE_DONE, time.monotonic())
        await self._methods.manager.on_connected(host)
        self._connected = 1
        host.log.debug("connection_opened", protocol=host.protocol.name if host.protocol else None)
        forbidden = results_forbidden.set("OnConnectedAsync")
        try:
            hub = host.new_hub()
            filters = self._methods.filters
            await (hub.on_connected() if filters is None else filters.on_connected(hub))
        except Exception as exc:
            host.log.warning("hub_on_connected_failed", error_type=type(exc).__name__)
            host.close(self._error_message(exc))
            raise _ConnectFailed(exc) from exc
        finally:
            results_forbidden.reset(forbidden)
        self._connected = 2
        return pending

    async def _handshake(self) -> list[HubMessage] | None:
        state = self.state
        options = self._methods.options
        with anyio.move_on_after(options.handshake_timeout):
            while (chunk := await self._incoming.get()) is not None:
                try:
                    state.receive_data(chunk)
                except HandshakeError:
                    self.flush_state()
                    raise
                events = state.events_received()
                for index, event in enumerate(events):
                    if isinstance(event, HandshakeCompleted):
                        self._stateful = self._host.handshake_completed(event)
                        self.flush_state()
                        return [
                            e for e in events[index + 1 :] if not isinstance(e, HandshakeCompleted)
                        ]
            return None
        self._host.log.info("handshake_timed_out", timeout=options.handshake_timeout)
        if state.phase is ConnectionPhase.HANDSHAKE:
            state.send_handshake_response(HANDSHAKE_CANCELED)
            self.flush_state()
        return None

    def flush_state(self) -> None:
        """Queue what the protocol state has to send (the handshake answer, Close)."""
        outgoing = self._host.outgoing
        for frame in self.state.data_to_send():
            outgoing.put(frame, force=True)

    async def _message_loop(self, pending: list[HubMessage], invocations: Invocations) -> None:
        if await self._dispatch_all(pending, None, invocations):
            return
        host, inline = self._host, self.inline
        incoming, outgoing = self._incoming, host.outgoing
        inline_io = self._methods.options.inline_io and self._stateful is None
        chunk: bytes | None
        while True:
            # With a WebSocket or an event stream attached, this loop is also its writer:
            # replies to a chunk go out before the next chunk is read, and an idle connection
            # waits for input and output at once with no writer task. (Re-read the writer
            # each time: a transport that left, or a new one, changes it.)
            writer = host.direct_writer
            if writer is not None and (len(outgoing) or writer.pending):
                await writer.send_queued()
                continue
            handed = inline.take()
            if handed is not None:  # what receive_now could not run at once
                events, error, awaiting = handed
                if awaiting is not None:
                    await awaiting
                if await self._dispatch_all(events, error, invocations):
                    return
                continue
            if not incoming.ready:
                chunk = None  # idle: keep neither the last chunk nor its messages alive
                # A plain awaitable, not a coroutine: idle connections keep fewer frames.
                waiting = wait_for_input_or_output(
                    incoming,
                    None if host.transport is TransportName.LONG_POLLING else outgoing,
                    can_send=writer is not None,
                )
                if not (inline_io and writer is not None and isinstance(waiting, asyncio.Future)):
                    await waiting
                    continue
                inline.park(waiting)  # chunks and frames may be handled inline meanwhile
                try:
                    await waiting
                finally:
                    inline.unpark()
                continue
            chunk = incoming.get_nowait()
            if chunk is None:
                return
            if await self._dispatch_all(*decode(self.state, chunk), invocations):
                return

    async def _dispatch_all(
        self,
        events: Sequence[HandshakeCompleted | HubMessage],
        error: Exception | None,
        invocations: Invocations,
    ) -> bool:
        """Dispatch decoded messages in order; ``True`` when the client closed the connection.
        With ``error`` (a bad frame after them) they all run, as ASP.NET reads them, then it
        is raised."""
        for event in events:
            if isinstance(event, HandshakeCompleted):
                continue
            if await self._dispatch(event, invocations) and error is None:
                return True
        if error is not None:
            raise error
        return False

    async def writing_while(self, blocked: Awaitable[None]) -> None:
        """Await ``blocked`` (the message loop waits for a worker or for room in an upload
        stream) while a helper task does the loop's writing: the method it waits for may need
        frames to go out first."""
        if self._host.direct_writer is None:
            await blocked
            return
        stop = [False]
        async with anyio.create_task_group() as helper:
            helper.start_soon(write_queued, self._host, stop)
            try:
                await blocked
            finally:
                stop[0] = True
                self._host.outgoing.notify()

    async def finish(self, error: Exception | None) -> None:
        """Unregister, the hub's ``on_disconnected``, close the outgoing buffer."""
        host = self._host
        if not self._life.is_closing:
            self._life.handle(Event.CLOSE)  # nothing is sent from here on
        self._incoming.close()
        self.inline.close()
        if self.invocations is not None:
            self.invocations.close()
            self.invocations = None
        results = self.results
        if results is not None:
            results.fail_all()  # no completion: the waiters raise ClientUnavailableError
        forbidden = results_forbidden.set("OnDisconnectedAsync")
        try:
            if self._connected:
                await self._methods.manager.on_disconnected(host)
            if self._connected == 2:
                hub = host.new_hub()
                filters = self._methods.filters
                if filters is None:
                    await hub.on_disconnected(error)
                else:
                    await filters.on_disconnected(hub, error)
        except Exception:
            host.log.exception("hub_on_disconnected_failed")
        finally:
            results_forbidden.reset(forbidden)
            host.outgoing.close()
            host.set_finished()
            if host.direct_writer is not None and host.transport_scope is not None:
                # The message loop was the response's writer: the request task takes over,
                # sends what is left and ends it (the WebSocket's close frame).
                host.transport_scope.cancel()
            host.log.debug("connection_closed", error=type(error).__name__ if error else None)

    async def invoke_client(
        self,
        method: str,
        args: Sequence[Any],
        result_type: Any,
        timeout: float | None,  # noqa: ASYNC109 - the API ASP.NET users expect
    ) -> Any:
        """Invoke ``method`` on the client and wait for its Completion (client results; the
        connection checked that it is open and allowed here)."""
        results = self.results
        if results is None:
            limit = self._methods.options.max_pending_client_results
            results = self.results = ClientResults(limit)
        return await results.invoke(self._host, method, args, result_type, timeout)

    async def _dispatch(self, message: HubMessage, invocations: Invocations) -> bool:
        """Handle one message; ``True`` when the client closed the connection."""
        stateful = self._stateful
        if stateful is not None:
            sequencing = stateful.sequencing
            if isinstance(message, SequenceMessage):
                # After a reconnect the client restarts numbering at its oldest unacked message.
                sequencing.restart_at(message.sequence_id)
                return False
            if isinstance(message, AckMessage):
                stateful.acknowledged(message.sequence_id)
                return False
            if not sequencing.received(message):
                return False  # resent after a reconnect, already processed
        if isinstance(message, (InvocationMessage, StreamInvocationMessage)):
            await invocations.on_invocation(message)
        elif isinstance(message, StreamItemMessage):
            await invocations.on_stream_item(message)
        elif isinstance(message, CompletionMessage):
            results = self.results
            if results is None or not results.complete(message):
                invocations.complete_upload(message.invocation_id, message.error)
        elif isinstance(message, CancelInvocationMessage):
            invocations.cancel(message.invocation_id)
        elif isinstance(message, CloseMessage):
            self._host.log.debug("connection_closed_by_client", error=message.error)
            return True
        elif isinstance(message, PingMessage):
            self._life.client_pinged(time.monotonic())
        # Ping, Ack, Sequence: receiving anything already counts against the client timeout.
        return False


def _single_exception(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class _ConnectFailed(Exception):
    """``on_connected`` raised; the Close message is already queued."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error
