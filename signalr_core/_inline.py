"""Work done for an idle message loop in the task that brings it, instead of waking the loop.

Theory of operation
===================

While a hub connection's message loop waits idle as the writer of a WebSocket or an event
stream (on asyncio, without stateful reconnect; :meth:`Inline.park`), two kinds of work come
to it from other tasks, and waking the loop for them would cost a task switch each:

* a **received chunk**, fed by the transport's task (the socket's receive task, an SSE POST's
  request task): :meth:`Inline.receive_now` decodes it and runs what cannot suspend (plain hub
  functions, ``Invocations.invoke_now``) in that task, in the loop's context (copied when it
  first parked), and hands the rest of the chunk to the loop, in order (:meth:`Inline.take`);
* a **frame to send** (a broadcast, a group message, a worker's answer): :meth:`Inline.write_now`
  writes it in the producer's task, through
  :meth:`~signalr_core.transports.DirectWriter.write_now`. A broadcast to a thousand idle
  connections is then a thousand socket writes in one task, as a bare relay does it.

Neither waits. A write that would have to (a client that reads slowly, its socket buffer
full) is left half-done on the writer and the loop is woken to finish it before anything
else: no producer ever waits for a slow client, and a transport's task goes back to reading
at once. Frames stay in order: a frame is written inline only when nothing is queued or
half-done, and everything else goes through the connection's outgoing buffer (bounded: a
client that does not read is still aborted as a slow consumer).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias

from signalr_core.connection import HandshakeCompleted, HubConnectionState
from signalr_core.errors import ProtocolError
from signalr_core.messages import HubMessage, InvocationMessage

if TYPE_CHECKING:
    from signalr_core._invocations import AwaitedAnswer, Invocations
    from signalr_core.transports import DirectWriter, OutgoingBuffer

__all__ = ["Handed", "Inline", "InlineHost", "decode"]

Handed: TypeAlias = tuple[
    Sequence["HandshakeCompleted | HubMessage"], Exception | None, "AwaitedAnswer | None"
]
"""What :meth:`Inline.receive_now` left to the loop: messages to dispatch, a bad frame's
error to raise after them, and first an awaitable to finish (a plain function's result)."""


class InlineHost(Protocol):
    """The connection, as inline work sees it.

    Attributes:
        outgoing: Frames waiting for the transport.
        direct_writer: The attached WebSocket or event stream (``None`` otherwise).
    """

    outgoing: OutgoingBuffer
    direct_writer: DirectWriter | None


class Inline:
    """A session's inline work (see the module's docstring).

    Args:
        host: The connection.
        state: The session's sans-I/O protocol state (received chunks are decoded by it).
    """

    __slots__ = ("_context", "_handed", "_host", "_parked", "_receiving", "_state")

    def __init__(self, host: InlineHost, state: HubConnectionState) -> None:
        self._host = host
        self._state = state
        # The loop's wait while it is idle and writes to a WebSocket or an event stream.
        self._parked: asyncio.Future[None] | None = None
        self._context: contextvars.Context | None = None
        self._handed: Handed | None = None
        self._receiving = False  # receive_now is running: it writes its own replies

    def park(self, waiting: asyncio.Future[None]) -> None:
        """The loop waits idle on ``waiting`` as the transport's writer: until
        :meth:`unpark`, work may be done inline (and ``waiting`` set to wake it)."""
        self._parked = waiting
        if self._context is None:
            self._context = contextvars.copy_context()

    def unpark(self) -> None:
        """The loop runs again."""
        self._parked = None

    @property
    def receives_now(self) -> bool:
        """The loop waits idle: :meth:`receive_now` may run."""
        parked = self._parked
        return parked is not None and not parked.done()

    def take(self) -> Handed | None:
        """What :meth:`receive_now` left to the loop, once."""
        handed, self._handed = self._handed, None
        return handed

    def close(self) -> None:
        """The loop ended: what it was left is dropped (an awaitable is closed unawaited)."""
        handed, self._handed = self._handed, None
        if handed is not None and handed[2] is not None:
            handed[2].close()

    def receive_now(self, chunk: bytes, invocations: Invocations) -> None:
        """Run a chunk in the caller's task while the loop waits idle (:attr:`receives_now`),
        and write the replies; the loop is woken only for what is left to it (the rest of the
        chunk after something that suspends, a write that has to wait)."""
        parked, context = self._parked, self._context
        assert parked is not None
        assert context is not None
        host = self._host
        outgoing = host.outgoing
        outgoing.unpark(parked)  # the replies must not wake the loop
        self._receiving = True
        try:
            all_ran = context.run(self._run, chunk, invocations)
        finally:
            self._receiving = False
        if parked.done():  # cancelled meanwhile (the function closed the connection)
            return
        writer = host.direct_writer
        if all_ran and writer is not None and len(outgoing) and writer.can_write_now:
            writer.write_now(outgoing.drain())
        # The loop goes on with what is left: the rest of the chunk, a write that has to wait,
        # frames queued meanwhile (before anything of the chunk's rest).
        if self._handed is not None or len(outgoing) or (writer is not None and writer.pending):
            if not parked.done():
                parked.set_result(None)
        else:
            outgoing.park(parked)

    def _run(self, chunk: bytes, invocations: Invocations) -> bool:
        """Dispatch what can be dispatched at once; ``False`` when the rest was handed over."""
        try:
            events, error = decode(self._state, chunk)
            if error is None:
                for index, event in enumerate(events):
                    if isinstance(event, InvocationMessage):
                        now = invocations.invoke_now(event)
                        if now is True:
                            continue
                        if now is not False:  # a plain function's awaitable result
                            self._handed = (events[index + 1 :], None, now)
                            return False
                    self._handed = (events[index:], None, None)
                    return False
                return True
            self._handed = (events, error, None)
        except Exception as exc:  # the loop raises it (the connection fails, as there)
            self._handed = ([], exc, None)
        return False

    def write_now(self, data: bytes) -> bool:
        """Write ``data`` in the caller's task if the loop waits idle with nothing queued;
        ``False`` when it must be queued instead."""
        parked = self._parked
        if parked is None or parked.done() or self._receiving:
            return False
        host = self._host
        writer = host.direct_writer
        if writer is None or not writer.can_write_now or len(host.outgoing):
            return False
        if not writer.write_now([data]) and not parked.done():
            parked.set_result(None)  # the loop finishes the write
        return True


def decode(
    state: HubConnectionState, chunk: bytes
) -> tuple[list[HandshakeCompleted | HubMessage], Exception | None]:
    """The messages in ``chunk``; and the error of a bad frame after them, if any."""
    try:
        state.receive_data(chunk)
    except ProtocolError as exc:
        return state.events_received(), exc
    return state.events_received(), None
