"""The SignalR handshake: the client's first record and the server's answer.

The request is always a JSON object terminated by ``0x1E``, whatever hub protocol it asks for
(``{"protocol":"messagepack","version":1}\\x1e``). The server answers ``{}\\x1e`` to accept or
``{"error":"..."}\\x1e`` to refuse, using ASP.NET Core's texts (the constants below).
"""

from __future__ import annotations

from typing import Final

import msgspec

from ._framing import split_text_frames
from .errors import HandshakeError
from .messages import HandshakeRequest

__all__ = [
    "HANDSHAKE_CANCELED",
    "HANDSHAKE_FAILED",
    "encode_handshake_response",
    "parse_handshake_request",
    "protocol_not_supported",
    "transfer_format_not_supported",
    "version_not_supported",
]

HANDSHAKE_CANCELED: Final = "Handshake was canceled."
"""Sent on handshake timeout and when the request exceeds the message size limit."""

HANDSHAKE_FAILED: Final = "An unexpected error occurred during connection handshake."
"""Sent for a malformed request (with the exception text appended under detailed errors)."""

_SUCCESS: Final = b"{}\x1e"
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1


class _Request(msgspec.Struct):
    protocol: str | None = None
    version: int | None = None


class _Response(msgspec.Struct):
    error: str


_request_decoder: Final = msgspec.json.Decoder(_Request)
_response_encoder: Final = msgspec.json.Encoder()


def protocol_not_supported(protocol: str) -> str:
    """ASP.NET's text for an unknown protocol name."""
    return f"The protocol '{protocol}' is not supported."


def version_not_supported(protocol: str, version: int) -> str:
    """ASP.NET's text for an unsupported protocol version."""
    return f"The server does not support version {version} of the '{protocol}' protocol."


def transfer_format_not_supported(protocol: str, transfer_format: str) -> str:
    """ASP.NET's text when the transport cannot carry the protocol (``"Binary"``/``"Text"``)."""
    return (
        f"Cannot use the '{protocol}' protocol on the current transport. "
        f"The transport does not support '{transfer_format}' transfer format."
    )


def parse_handshake_request(
    buffer: bytearray, max_message_size: int | None
) -> HandshakeRequest | None:
    """Parse the handshake request at the front of ``buffer``.

    The request's bytes (terminator included) are removed from ``buffer``; whatever follows
    (hub messages sent in the same chunk) stays.

    Args:
        buffer: Received bytes; modified in place.
        max_message_size: The largest allowed request in bytes, ``None`` for no limit.

    Returns:
        The request, or ``None`` while the ``0x1E`` terminator has not arrived.

    Raises:
        HandshakeError: The request is too large (``"Handshake was canceled."``) or malformed
            (``"An unexpected error occurred during connection handshake."``, with the reason
            in ``detail``).
    """
    data = bytes(buffer)
    spans, _consumed, error = split_text_frames(data, max_message_size)
    if not spans:
        if error is not None:
            raise HandshakeError(HANDSHAKE_CANCELED)
        return None
    start, end = spans[0]
    del buffer[: end + 1]
    payload = data[start:end]
    try:
        request = _request_decoder.decode(payload)
    except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError) as exc:
        raise HandshakeError(
            HANDSHAKE_FAILED, detail=f"InvalidDataException: {exc}. {_content(payload)}"
        ) from None
    if request.protocol is None:
        raise HandshakeError(
            HANDSHAKE_FAILED,
            detail=f"InvalidDataException: Missing required property 'protocol'. "
            f"{_content(payload)}",
        )
    if request.version is None:
        raise HandshakeError(
            HANDSHAKE_FAILED,
            detail=f"InvalidDataException: Missing required property 'version'. "
            f"{_content(payload)}",
        )
    if not _INT32_MIN <= request.version <= _INT32_MAX:
        raise HandshakeError(
            HANDSHAKE_FAILED, detail="InvalidDataException: Expected 'version' to be of type Int32."
        )
    return HandshakeRequest(protocol=request.protocol, version=request.version)


def _content(payload: bytes) -> str:
    return "Message content: " + payload.decode("utf-8", errors="replace")


def encode_handshake_response(error: str | None = None) -> bytes:
    """Encode the server's handshake answer.

    Args:
        error: ``None`` to accept the handshake, else the error text for the client.

    Returns:
        ``b'{}\\x1e'`` or ``b'{"error":"..."}\\x1e'``.
    """
    if error is None:
        return _SUCCESS
    return _response_encoder.encode(_Response(error=error)) + b"\x1e"
