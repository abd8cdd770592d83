"""Hub protocols: bytes to neutral hub messages (:mod:`signalr_core.messages`) and back.

A :class:`HubProtocol` is stateless apart from encoders and decoders it builds once, so one
instance may serve every connection.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import msgspec

from ..errors import InvalidArguments, ProtocolError
from ..messages import HubMessage, MessageType, TransferFormat

__all__ = [
    "HubProtocol",
    "JsonHubProtocol",
    "MessagePackHubProtocol",
    "MessageSink",
    "default_protocols",
]

_MAX_CACHED_DECODERS: Final = 1024
_MISSING_FIELD = re.compile(r"Object missing required field `([^`]+)`")
KNOWN_MESSAGE_TYPES: Final = frozenset(int(t) for t in MessageType)


class MessageSink(Protocol):
    """Where :meth:`HubProtocol.decode_messages` may also put what it decodes (e.g. a list)."""

    def extend(self, messages: Iterable[HubMessage], /) -> None: ...


class HubProtocol(ABC):
    """A SignalR hub protocol.

    Attributes:
        name: The wire name the client asks for in the handshake.
        version: The highest protocol version supported.
        transfer_format: What the transport must carry for this protocol.
    """

    name: str
    version: int
    transfer_format: TransferFormat

    def __init__(self) -> None:
        # Decoders for hub parameter types, built on first use (types come from hub
        # signatures, never from the peer, so the cache stays small; it is capped anyway).
        self._decoders: dict[Any, Any] = {}

    def is_version_supported(self, version: int) -> bool:
        """Whether a client asking for ``version`` can use this protocol (as ASP.NET Core)."""
        return version <= self.version

    @abstractmethod
    def decode_messages(
        self,
        buffer: bytearray,
        max_message_size: int | None,
        *,
        into: MessageSink | None = None,
    ) -> list[HubMessage]:
        """Decode every complete frame at the front of ``buffer``.

        Consumed bytes are removed from ``buffer``; a trailing partial frame stays. Unknown
        message types are skipped, as ASP.NET Core does.

        Args:
            buffer: Received bytes; modified in place.
            max_message_size: The largest allowed frame in bytes, ``None`` for no limit.
            into: If given, the decoded messages are also appended to it, even when an error
                is raised after some of them (their frames are consumed; the bad frame stays
                at the front of ``buffer``).

        Returns:
            The messages decoded by this call, in order.

        Raises:
            MessageTooLargeError: A frame is over ``max_message_size``.
            ProtocolError: A frame is not a valid message.
        """

    @abstractmethod
    def encode_message(self, message: HubMessage) -> bytes:
        """Encode ``message`` as one complete frame (framing included).

        Raises:
            MessageEncodeError: A value in the message cannot be encoded (every encoder
                failure is translated to this one error).
        """

    @abstractmethod
    def _build_decoder(self, type_: Any) -> Any:
        """Return a msgspec decoder for ``type_`` in this protocol's encoding."""

    def decode_argument(self, raw: msgspec.Raw, type_: Any) -> Any:
        """Decode an argument or stream item received as ``msgspec.Raw`` to ``type_``.

        Args:
            raw: The undecoded value from an incoming message.
            type_: Any type msgspec can decode (``Any`` for builtins).

        Returns:
            The decoded value.

        Raises:
            InvalidArguments: The value does not match ``type_`` (an :class:`InvocationError`).
        """
        decoders = self._decoders
        try:
            decoder = decoders.get(type_)
        except TypeError:  # an unhashable annotation: do not cache
            decoder = None
            hashable = False
        else:
            hashable = True
        if decoder is None:
            try:
                decoder = self._build_decoder(type_)
            except TypeError as exc:
                raise InvalidArguments(f"Unsupported parameter type: {exc}") from exc
            if hashable and len(decoders) < _MAX_CACHED_DECODERS:
                decoders[type_] = decoder
        try:
            return decoder.decode(raw)
        except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError) as exc:
            raise InvalidArguments(str(exc)) from exc


def protocol_error(exc: Exception) -> ProtocolError:
    """Translate a msgspec decoding failure into a :class:`ProtocolError` with ASP.NET's wording."""
    text = str(exc)
    match = _MISSING_FIELD.match(text)
    if match is not None:
        text = f"Missing required property '{match.group(1)}'."
    return ProtocolError(text)


def utc_value(value: Any) -> Any:
    """Return ``value`` with a top-level ``datetime`` made UTC-aware (naive ones taken as UTC).

    msgspec writes UTC datetimes as ISO 8601 with ``Z`` (JSON) or as the timestamp extension
    (MessagePack), which is what the JavaScript client expects.
    """
    if type(value) is datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return value


def default_protocols() -> dict[str, HubProtocol]:
    """Return new instances of the built-in protocols keyed by wire name."""
    return {"json": JsonHubProtocol(), "messagepack": MessagePackHubProtocol()}


# The implementations import the base class above, so they come last.
from .json import JsonHubProtocol  # noqa: E402
from .messagepack import MessagePackHubProtocol  # noqa: E402
