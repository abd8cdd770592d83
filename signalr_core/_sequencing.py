"""Stateful reconnect's bookkeeping for one connection, with no I/O.

Theory of operation
===================

With protocol version 2 on a connection that negotiated stateful reconnect, both sides number
their *sequenced* messages (Invocation, StreamItem, Completion, StreamInvocation,
CancelInvocation; as the clients' ``MessageBuffer``), starting at 1:

* **Sending.** :meth:`Sequencing.sent` numbers each sequenced message the server sends and
  keeps it, encoded, until the client's Ack covers it (:meth:`Sequencing.acknowledged`). The
  kept bytes are bounded by ``limit`` (``stateful_reconnect_buffer_size``): ``sent`` answers
  ``False`` past it and the driver aborts the connection. After a reconnect,
  :meth:`Sequencing.replay` gives the ``Sequence`` id to announce and the frames to send again.
* **Receiving.** :meth:`Sequencing.received` numbers each sequenced message from the client
  and tells whether it is new; after the client's ``Sequence`` message
  (:meth:`Sequencing.restart_at`) the numbering restarts at the client's oldest unacknowledged
  message, so those already processed are skipped. :meth:`Sequencing.ack_due` gives the id to
  acknowledge (the driver sends ``Ack`` about once a second, so the client can drop what
  arrived from its own buffer).

One object per stateful connection, created when the handshake selects version 2: other
connections carry none of this.
"""

from __future__ import annotations

import collections
from typing import Final

from signalr_core.errors import ProtocolError
from signalr_core.messages import (
    CancelInvocationMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

__all__ = ["SEQUENCED", "Sequencing"]

SEQUENCED: Final = (
    InvocationMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    CompletionMessage,
    CancelInvocationMessage,
)
"""Messages counted by stateful reconnect's sequence ids (as the clients' MessageBuffer)."""


class Sequencing:
    """Sequence ids both ways and the replay buffer of one connection.

    Args:
        limit: The most bytes kept for replay (a security limit: what a client that never
            acknowledges can make the server hold).
    """

    __slots__ = (
        "_acked",
        "_kept",
        "_kept_bytes",
        "_next_receive_id",
        "_received",
        "_sent",
        "limit",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: collections.deque[tuple[int, bytes]] = collections.deque()
        self._kept_bytes = 0
        self._sent = 0  # the newest id sent
        self._next_receive_id = 1
        self._received = 0  # the newest id processed (what we acknowledge)
        self._acked = 0  # the newest id we acknowledged

    # -- sending -----------------------------------------------------------------------------

    def sent(self, message: HubMessage, data: bytes) -> bool:
        """Number and keep ``data`` if ``message`` is sequenced; ``False`` past the limit."""
        if isinstance(message, SEQUENCED):
            self._sent += 1
            self._kept.append((self._sent, data))
            self._kept_bytes += len(data)
            return self._kept_bytes <= self.limit
        return True

    def acknowledged(self, sequence_id: int) -> None:
        """The client received every sequenced message up to ``sequence_id``."""
        kept = self._kept
        while kept and kept[0][0] <= sequence_id:
            self._kept_bytes -= len(kept.popleft()[1])

    @property
    def has_room(self) -> bool:
        """At most half the limit is kept (producers that can wait, wait otherwise)."""
        return self._kept_bytes * 2 <= self.limit

    @property
    def pending_bytes(self) -> int:
        """Bytes kept for replay."""
        return self._kept_bytes

    @property
    def pending_messages(self) -> int:
        """Messages kept for replay."""
        return len(self._kept)

    def replay(self) -> tuple[int, list[bytes]]:
        """After a reconnect: the ``Sequence`` id to announce and the frames to send again."""
        kept = self._kept
        first = kept[0][0] if kept else self._sent + 1
        return first, [data for _, data in kept]

    # -- receiving ---------------------------------------------------------------------------

    def received(self, message: HubMessage) -> bool:
        """Number ``message`` if sequenced; ``False`` when it was already processed (resent)."""
        if not isinstance(message, SEQUENCED):
            return True
        current = self._next_receive_id
        self._next_receive_id += 1
        if current <= self._received:
            return False
        self._received = current
        return True

    def restart_at(self, sequence_id: int) -> None:
        """The client's ``Sequence``: it resends from ``sequence_id`` on.

        Raises:
            ProtocolError: ``sequence_id`` is beyond what arrived (ASP.NET's text).
        """
        if sequence_id > self._next_receive_id:
            raise ProtocolError("Sequence ID greater than amount of messages we've received.")
        self._next_receive_id = sequence_id

    @property
    def ack_pending(self) -> bool:
        """Something arrived since the last :meth:`ack_due`."""
        return self._received != self._acked

    def ack_due(self) -> int | None:
        """The id to acknowledge now (``None`` when nothing arrived since the last Ack)."""
        if self._received == self._acked:
            return None
        self._acked = self._received
        return self._received
