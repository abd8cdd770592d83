"""Stateful reconnect on a running connection: the replay buffer's I/O side and the handover.

Theory of operation
===================

One :class:`Stateful` per connection that negotiated stateful reconnect and whose handshake
selected protocol version 2 (made by the handshake; other connections carry none of this). It
holds the sans-I/O :class:`~signalr_core._sequencing.Sequencing` and performs what it decides:

* **sending**: :meth:`Stateful.keep` numbers and keeps each sequenced frame; past the replay
  limit the connection is aborted; while no transport is attached frames only wait in the
  replay buffer (pings are dropped);
* **acknowledgements**: :meth:`Stateful.acknowledge` sends ``Ack`` for what arrived (about
  once a second); :meth:`Stateful.acknowledged` drops what the client received and
  wakes server-to-client streams waiting in :meth:`Stateful.wait_replay_space`
  (backpressure while the buffer is more than half full);
* **losing the transport**: :meth:`Stateful.transport_lost` decides whether a broken
  WebSocket leaves the connection waiting (``detached``) for ``disconnect_timeout``;
* **resuming**: :meth:`Stateful.resume` makes sure the old transport is gone, then queues
  ``Sequence`` and the unacknowledged frames before anything else.

It knows the connection only through :class:`StatefulHost`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import anyio

from signalr_core._lifecycle import Event, Lifecycle, Phase
from signalr_core._sequencing import Sequencing
from signalr_core.messages import AckMessage, HubMessage, SequenceMessage
from signalr_core.transports import OutgoingBuffer, TransportName

if TYPE_CHECKING:
    from signalr_core.protocols import HubProtocol

__all__ = ["Stateful", "StatefulHost"]


class StatefulHost(Protocol):
    """What stateful reconnect needs of its connection (``HubServerConnection``).

    Attributes:
        protocol: The negotiated hub protocol.
        outgoing: The bounded outgoing buffer.
        transport: The attached transport.
        transport_scope: The attached transport's request task scope (``None`` when none is).
        transport_attached: A transport's request task is attached (it clears this).
        transport_generation: Counts the transports that took over.
    """

    protocol: HubProtocol | None
    outgoing: OutgoingBuffer
    transport: TransportName | None
    transport_scope: anyio.CancelScope | None
    transport_attached: bool
    transport_generation: int

    @property
    def log(self) -> Any:
        """The connection's logger, bound to its id."""

    def abort(self) -> None:
        """End the connection at once, dropping whatever is queued."""

    def send(self, message: HubMessage) -> None:
        """Encode and queue ``message`` without blocking."""


class Stateful:
    """Stateful reconnect's state on one connection.

    Args:
        host: The connection.
        life: The connection's lifecycle.
        limit: The most bytes kept for replay (``stateful_reconnect_buffer_size``).
    """

    __slots__ = ("_host", "_life", "_replay_space", "sequencing")

    def __init__(self, host: StatefulHost, life: Lifecycle, limit: int) -> None:
        self._host = host
        self._life = life
        self.sequencing = Sequencing(limit)
        self._replay_space: anyio.Event | None = None

    def keep(self, message: HubMessage, data: bytes) -> bool:
        """Number and keep ``data``; whether to queue it now (``False`` when detached or
        aborted because the replay buffer overflowed)."""
        sequencing = self.sequencing
        if not sequencing.sent(message, data):
            self._host.log.warning(
                "replay_buffer_overflowed",
                pending_bytes=sequencing.pending_bytes,
                pending_messages=sequencing.pending_messages,
            )
            self._host.abort()
            return False
        # Detached: sequenced messages wait in the replay buffer, pings are dropped.
        return self._life.detached_since is None

    def acknowledge(self) -> None:
        """Send ``Ack`` for what arrived (the ticker, about once a second), so the client can
        drop it from its replay buffer (which otherwise fills up and stalls its sends)."""
        ack = self.sequencing.ack_due()
        if ack is not None:
            self._host.send(AckMessage(sequence_id=ack))

    def acknowledged(self, sequence_id: int) -> None:
        """The client received every sequenced message up to ``sequence_id``."""
        sequencing = self.sequencing
        sequencing.acknowledged(sequence_id)
        event = self._replay_space
        if event is not None and sequencing.has_room:
            self._replay_space = None
            event.set()

    async def wait_replay_space(self) -> None:
        """Backpressure for streams: wait while the replay buffer is more than half full."""
        while self._life.is_open and not self.sequencing.has_room:
            if self._replay_space is None:
                self._replay_space = anyio.Event()
            await self._replay_space.wait()

    def transport_lost(self, *, graceful: bool, now: float) -> bool:
        """Whether the connection stays to await a reconnect after its transport ended.

        Only a WebSocket that ended without the client closing it (``graceful``) while the
        connection was open does.
        """
        if graceful or self._life.phase is not Phase.OPEN:
            return False
        if self._host.transport is not TransportName.WEBSOCKETS:
            return False
        self._life.handle(Event.TRANSPORT_LOST, now)
        self._host.log.info("transport_lost", replay_messages=self.sequencing.pending_messages)
        return True

    async def resume(self) -> int:
        """A new transport takes over: queue ``Sequence`` and what was not acknowledged.

        An older transport that is still attached (the client noticed the drop first) is
        cancelled and awaited (at most 5 s). Returns the new transport generation.
        """
        host = self._host
        if host.transport_scope is not None:
            host.transport_scope.cancel()
        with anyio.move_on_after(5):
            while host.transport_attached:  # noqa: ASYNC110 - the old request task clears it
                await anyio.sleep(0.01)
        host.transport_generation += 1
        if self._life.is_open:  # else closed while the old transport went away
            self._replay()
        return host.transport_generation

    def _replay(self) -> None:
        self._life.handle(Event.RESUME)
        host = self._host
        protocol = host.protocol
        assert protocol is not None
        outgoing = host.outgoing
        outgoing.drain()  # whatever was queued is either in the replay buffer or a ping
        first, replay = self.sequencing.replay()
        outgoing.put(protocol.encode_message(SequenceMessage(sequence_id=first)), force=True)
        for data in replay:
            outgoing.put(data, force=True)
        host.log.info("transport_resumed", replayed=len(replay), sequence=first)
