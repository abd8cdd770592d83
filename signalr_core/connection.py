"""The per-connection SignalR state machine, with no I/O.

Theory of operation
===================

A :class:`HubConnectionState` is fed the bytes a transport receives (:meth:`~HubConnectionState.
receive_data`) and hands back what they mean (:meth:`~HubConnectionState.events_received`) and
the bytes to transmit (:meth:`~HubConnectionState.data_to_send`). It never touches a socket, a
clock or an event loop, so the WebSockets, Server-Sent Events and Long Polling drivers share it
and tests feed it bytes directly, in any chunking.

A connection moves through three phases::

    HANDSHAKE --handshake accepted--> OPEN --close()--> CLOSED
        |                                                  ^
        +------handshake rejected / close()----------------+

* ``HANDSHAKE``: bytes accumulate until the JSON handshake request and its ``0x1E`` arrive. The
  request is checked in ASP.NET Core's order (protocol name, version, transfer format). On
  success the ``{}`` answer is queued, a :class:`HandshakeCompleted` event is produced and any
  bytes that followed the request in the same chunk are parsed as hub messages. On failure the
  ``{"error": ...}`` answer is queued first, then :class:`~signalr_core.errors.HandshakeError`
  is raised; the driver sends :meth:`data_to_send` and closes the transport.
* ``OPEN``: every complete frame becomes a hub message event. Hub messages are encoded and
  queued by the driver itself (it encodes a broadcast once for many connections and keeps
  stateful-reconnect replay buffers), so this class only queues the handshake answer and the
  Close message. A frame that breaks the protocol (or is larger than ``max_message_size``) raises
  :class:`~signalr_core.errors.ProtocolError` from :meth:`receive_data`; events decoded before
  the bad frame stay available from :meth:`events_received`, and later calls to
  :meth:`receive_data` raise the same error until the driver calls :meth:`close` with an error.
* ``CLOSED``: :meth:`close` queued a Close message (if the connection was open). Received data
  is ignored.

Every phase change goes through :data:`_TRANSITIONS`, the one table of legal moves.

Buffers are bounded: after each :meth:`receive_data` call the receive buffer holds at most one
partial frame shorter than ``max_message_size`` (a security limit; ``None`` disables it). The
outgoing queue is drained by the driver, which owns the policy for slow readers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, NoReturn

import msgspec

from .errors import HandshakeError, ProtocolError
from .handshake import (
    encode_handshake_response,
    parse_handshake_request,
    protocol_not_supported,
    transfer_format_not_supported,
    version_not_supported,
)
from .messages import CloseMessage, HubMessage, TransferFormat
from .protocols import HubProtocol

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ConnectionPhase",
    "HandshakeCompleted",
    "HubConnectionState",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 32 * 1024
"""ASP.NET Core's default ``MaximumReceiveMessageSize``: 32 KiB."""


class ConnectionPhase(enum.Enum):
    """Where a connection is in its life."""

    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


class _Event(enum.Enum):
    HANDSHAKE_ACCEPTED = "handshake accepted"
    HANDSHAKE_REJECTED = "handshake rejected"
    CLOSE = "close"


_H, _O, _C = ConnectionPhase.HANDSHAKE, ConnectionPhase.OPEN, ConnectionPhase.CLOSED

_TRANSITIONS: Final[dict[tuple[ConnectionPhase, _Event], ConnectionPhase]] = {
    (_H, _Event.HANDSHAKE_ACCEPTED): _O,
    (_H, _Event.HANDSHAKE_REJECTED): _C,
    (_H, _Event.CLOSE): _C,
    (_O, _Event.CLOSE): _C,
    (_C, _Event.CLOSE): _C,
}
"""(phase, event) -> next phase. A pair missing here is a bug in the caller."""


class HandshakeCompleted(msgspec.Struct, frozen=True, kw_only=True):
    """The handshake succeeded; the ``{}`` answer is already queued.

    Attributes:
        protocol: The hub protocol the connection now speaks.
        version: The protocol version the client asked for (2 or more enables stateful
            reconnect, when the endpoint allows it).
    """

    protocol: HubProtocol
    version: int


class HubConnectionState:
    """The sans-I/O state of one hub connection.

    Args:
        protocols: The hub protocols this endpoint offers, keyed by wire name. Lookup of the
            client's choice is case-insensitive, as in ASP.NET Core.
        transfer_formats: What the transport can carry; ``messagepack`` needs ``BINARY``.
        max_message_size: The largest frame accepted from the client, framing included
            (ASP.NET's ``MaximumReceiveMessageSize``); ``None`` disables the limit. It also
            bounds the handshake request and the receive buffer.
        detailed_errors: Append the reason to the handshake error for a malformed request, as
            ASP.NET's ``EnableDetailedErrors`` does.
    """

    __slots__ = (
        "_buffer",
        "_detailed_errors",
        "_error",
        "_events",
        "_max_message_size",
        "_outgoing",
        "_protocols",
        "_transfer_formats",
        "phase",
        "protocol",
    )

    def __init__(
        self,
        protocols: Mapping[str, HubProtocol],
        *,
        transfer_formats: TransferFormat,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        detailed_errors: bool = False,
    ) -> None:
        self._protocols = protocols
        self._transfer_formats = transfer_formats
        self._max_message_size = max_message_size
        self._detailed_errors = detailed_errors
        self.phase = ConnectionPhase.HANDSHAKE
        self.protocol: HubProtocol | None = None
        self._buffer = bytearray()
        self._events: list[HandshakeCompleted | HubMessage] = []
        self._outgoing: list[bytes] = []
        self._error: ProtocolError | None = None

    def _transition(self, event: _Event) -> None:
        try:
            self.phase = _TRANSITIONS[self.phase, event]
        except KeyError:
            raise RuntimeError(f"cannot {event.value} in phase {self.phase.value}") from None

    # -- receiving -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the transport.

        Args:
            data: Any chunk of the byte stream (a frame may span chunks, a chunk may hold many).

        Raises:
            HandshakeError: The handshake failed; its error answer is already queued in
                :meth:`data_to_send` and the phase is ``CLOSED``.
            ProtocolError: A frame is malformed or over ``max_message_size``.
        """
        if self.phase is ConnectionPhase.CLOSED:
            return
        if self._error is not None:
            raise self._error
        self._buffer += data
        try:
            if self.phase is ConnectionPhase.HANDSHAKE:
                self._receive_handshake()
            if self.protocol is not None and self._buffer:
                self.protocol.decode_messages(
                    self._buffer, self._max_message_size, into=self._events
                )
        except HandshakeError:
            raise
        except ProtocolError as exc:
            self._error = exc
            raise

    def _receive_handshake(self) -> None:
        try:
            request = parse_handshake_request(self._buffer, self._max_message_size)
        except HandshakeError as exc:
            text = str(exc)
            if self._detailed_errors and exc.detail:
                text = f"{text} {exc.detail}"
            self._reject(text)
        if request is None:
            return
        protocol = self._protocols.get(request.protocol)
        if protocol is None:
            wanted = request.protocol.lower()
            protocol = next(
                (p for name, p in self._protocols.items() if name.lower() == wanted), None
            )
        if protocol is None:
            self._reject(protocol_not_supported(request.protocol))
        elif not protocol.is_version_supported(request.version):
            self._reject(version_not_supported(request.protocol, request.version))
        elif not self._transfer_formats & protocol.transfer_format:
            self._reject(
                transfer_format_not_supported(protocol.name, _format_name(protocol.transfer_format))
            )
        else:
            self._transition(_Event.HANDSHAKE_ACCEPTED)
            self.protocol = protocol
            self._outgoing.append(encode_handshake_response())
            self._events.append(HandshakeCompleted(protocol=protocol, version=request.version))

    def _reject(self, text: str) -> NoReturn:
        self._transition(_Event.HANDSHAKE_REJECTED)
        self._buffer.clear()
        self._outgoing.append(encode_handshake_response(text))
        raise HandshakeError(text)

    def events_received(self) -> list[HandshakeCompleted | HubMessage]:
        """Return (and forget) the events decoded so far, in order."""
        events = self._events
        self._events = []
        return events

    # -- answering and closing ------------------------------------------------------------

    def send_handshake_response(self, error: str | None = None) -> None:
        """Answer the handshake from outside the parser.

        A valid request is answered automatically, so this is for the driver's own refusals,
        chiefly the handshake timeout (``signalr_core.handshake.HANDSHAKE_CANCELED``).

        Args:
            error: The error text; ``None`` is accepted only once the handshake already
                succeeded (then it does nothing, so calling it after ``HandshakeCompleted`` is
                harmless).

        Raises:
            RuntimeError: ``error`` is ``None`` before a request arrived, or the handshake
                was already answered and ``error`` is given.
        """
        if error is None:
            if self.phase is ConnectionPhase.HANDSHAKE:
                raise RuntimeError("cannot accept a handshake that has not been received")
            return
        self._transition(_Event.HANDSHAKE_REJECTED)
        self._buffer.clear()
        self._outgoing.append(encode_handshake_response(error))

    def close(self, error: str | None = None, allow_reconnect: bool = False) -> None:
        """Close the connection; queue a Close message if it was open.

        Args:
            error: The error shown to the client, if any.
            allow_reconnect: Tell the client it may reconnect (graceful shutdown).
        """
        was_open = self.phase is ConnectionPhase.OPEN
        self._transition(_Event.CLOSE)
        if was_open:
            assert self.protocol is not None
            self._outgoing.append(
                self.protocol.encode_message(
                    CloseMessage(error=error, allow_reconnect=allow_reconnect)
                )
            )
        self._buffer.clear()

    def data_to_send(self) -> list[bytes]:
        """Return (and forget) the frames to transmit, one ``bytes`` per frame, in order."""
        out = self._outgoing
        self._outgoing = []
        return out


def _format_name(transfer_format: TransferFormat) -> str:
    return "Binary" if transfer_format is TransferFormat.BINARY else "Text"
