"""The neutral hub message model, independent of the wire protocol.

These structs mirror the nine message types of the SignalR hub protocol (see ASP.NET Core's
``HubProtocol.md``) plus the handshake request. Protocols (:mod:`signalr_core.protocols`) turn
bytes into these messages and back.

Incoming messages carry invocation arguments and stream items as :class:`msgspec.Raw`
(undecoded) so the server can decode each one to the hub method's parameter type once the
target method is known. Outgoing messages carry plain Python values: anything msgspec can
encode (Structs, dataclasses, dicts, ``datetime``, ``bytes``, ``UUID``, ...).
"""

from __future__ import annotations

import enum
from typing import Any, Final, TypeAlias

import msgspec

__all__ = [
    "PING",
    "AckMessage",
    "CancelInvocationMessage",
    "CloseMessage",
    "CompletionMessage",
    "HandshakeRequest",
    "HubMessage",
    "InvocationMessage",
    "MessageType",
    "PingMessage",
    "SequenceMessage",
    "StreamInvocationMessage",
    "StreamItemMessage",
    "TransferFormat",
]


class TransferFormat(enum.IntFlag):
    """What a transport can carry: text frames, binary frames, or both."""

    TEXT = 1
    BINARY = 2


class MessageType(enum.IntEnum):
    """The integer ``type`` of each hub message on the wire."""

    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


class InvocationMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Invoke ``target`` on the peer (type 1).

    Attributes:
        target: The method name.
        arguments: The arguments; ``msgspec.Raw`` items when received.
        invocation_id: ``None`` for a fire-and-forget (non-blocking) invocation.
        stream_ids: Ids of client-to-server streams passed as arguments.
        headers: Optional message headers.
    """

    target: str
    arguments: tuple[Any, ...]
    invocation_id: str | None = None
    stream_ids: tuple[str, ...] = ()
    headers: dict[str, str] | None = None


class StreamInvocationMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Invoke the streaming method ``target`` on the peer (type 4).

    Attributes:
        invocation_id: The id that stream items and the completion refer to.
        target: The method name.
        arguments: The arguments; ``msgspec.Raw`` items when received.
        stream_ids: Ids of client-to-server streams passed as arguments.
        headers: Optional message headers.
    """

    invocation_id: str
    target: str
    arguments: tuple[Any, ...]
    stream_ids: tuple[str, ...] = ()
    headers: dict[str, str] | None = None


class StreamItemMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One item of a stream (type 2); ``item`` is ``msgspec.Raw`` when received."""

    invocation_id: str
    item: Any
    headers: dict[str, str] | None = None


class CompletionMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The end of an invocation or a stream (type 3).

    Exactly one of three shapes: an error (``error`` set), a result (``has_result`` true,
    ``result`` possibly ``None``) or void (neither).

    Attributes:
        invocation_id: The invocation this completes.
        error: The error text, if the invocation failed.
        result: The result value; ``msgspec.Raw`` when received.
        has_result: Whether ``result`` is present on the wire (``null`` is a valid result).
        headers: Optional message headers.
    """

    invocation_id: str
    error: str | None = None
    result: Any = None
    has_result: bool = False
    headers: dict[str, str] | None = None


class CancelInvocationMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The client cancels a streaming invocation (type 5)."""

    invocation_id: str
    headers: dict[str, str] | None = None


class PingMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Keep-alive (type 6)."""


class CloseMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The connection is closing (type 7), optionally with an error and a reconnect hint."""

    error: str | None = None
    allow_reconnect: bool = False


class AckMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Stateful reconnect: acknowledges messages up to ``sequence_id`` (type 8)."""

    sequence_id: int


class SequenceMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Stateful reconnect: the next message has ``sequence_id`` (type 9)."""

    sequence_id: int


HubMessage: TypeAlias = (
    InvocationMessage
    | StreamInvocationMessage
    | StreamItemMessage
    | CompletionMessage
    | CancelInvocationMessage
    | PingMessage
    | CloseMessage
    | AckMessage
    | SequenceMessage
)

PING: Final = PingMessage()
"""A shared ping message (messages are immutable)."""


class HandshakeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The client's first message: which hub protocol and version it wants."""

    protocol: str
    version: int
