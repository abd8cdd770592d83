"""Frame splitting for the two SignalR framings, with size limits.

* Text framing (JSON protocol, handshake): each record ends with the ASCII record separator
  ``0x1E``.
* Binary framing (MessagePack protocol): each payload is prefixed by its length as a VarInt
  (7 bits per byte, least significant group first, high bit set on all bytes but the last; at
  most 5 bytes, lengths below 2 GiB).

``max_message_size`` bounds a whole frame including its framing bytes, as ASP.NET Core does
(it hands the parser a window of ``max_message_size`` bytes). An unterminated partial frame that
can no longer fit in the limit is rejected at once, so a peer cannot make the buffer grow
without bound.
"""

from __future__ import annotations

from typing import Final

from .errors import MessageTooLargeError, ProtocolError

__all__ = [
    "MAX_BINARY_LENGTH",
    "RECORD_SEPARATOR",
    "encode_varint",
    "split_binary_frames",
    "split_text_frames",
    "too_large_message",
]

RECORD_SEPARATOR: Final = 0x1E
RECORD_SEPARATOR_BYTES: Final = b"\x1e"
MAX_BINARY_LENGTH: Final = 2**31 - 1
"""ASP.NET Core refuses binary messages of 2 GiB and more."""

_MAX_VARINT_BYTES: Final = 5


def too_large_message(max_message_size: int) -> str:
    """Return ASP.NET Core's text for a frame over the size limit."""
    return (
        f"The maximum message size of {max_message_size}B was exceeded. "
        "The message size can be configured in AddHubOptions."
    )


def split_text_frames(
    data: bytes, max_message_size: int | None
) -> tuple[list[tuple[int, int]], int, MessageTooLargeError | None]:
    """Find the complete ``0x1E``-terminated records at the front of ``data``.

    Args:
        data: The buffered bytes.
        max_message_size: The largest allowed frame, separator included; ``None`` for no limit.

    Returns:
        ``(spans, consumed, error)``: the ``(start, end)`` payload spans (separator excluded),
        the number of bytes the spans cover, and the error that stopped the scan, if any. The
        spans before an error are valid; the caller decides whether to use them first.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    length = len(data)
    while start < length:
        end = data.find(RECORD_SEPARATOR_BYTES, start)
        if end < 0:
            if max_message_size is not None and length - start >= max_message_size:
                return spans, start, MessageTooLargeError(too_large_message(max_message_size))
            break
        if max_message_size is not None and end + 1 - start > max_message_size:
            return spans, start, MessageTooLargeError(too_large_message(max_message_size))
        spans.append((start, end))
        start = end + 1
    return spans, start, None


def split_binary_frames(
    data: bytes, max_message_size: int | None
) -> tuple[list[tuple[int, int]], int, ProtocolError | None]:
    """Find the complete VarInt-prefixed frames at the front of ``data``.

    Args:
        data: The buffered bytes.
        max_message_size: The largest allowed frame, prefix included; ``None`` for no limit
            (lengths are still capped below 2 GiB).

    Returns:
        ``(spans, consumed, error)`` as for :func:`split_text_frames`; spans exclude the prefix.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    length = len(data)
    while start < length:
        size = 0
        shift = 0
        pos = start
        while True:
            if pos >= length:
                # The prefix itself is incomplete (at most 4 bytes so far).
                return spans, start, None
            byte = data[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            if byte & 0x80 == 0:
                break
            shift += 7
            if pos - start >= _MAX_VARINT_BYTES:
                return spans, start, ProtocolError("Messages over 2GB in size are not supported.")
        if size > MAX_BINARY_LENGTH:
            return spans, start, ProtocolError("Messages over 2GB in size are not supported.")
        end = pos + size
        if max_message_size is not None and end - start > max_message_size:
            return spans, start, MessageTooLargeError(too_large_message(max_message_size))
        if end > length:
            break
        spans.append((pos, end))
        start = end
    return spans, start, None


def encode_varint(length: int) -> bytes:
    """Encode a frame length as SignalR's VarInt prefix."""
    if length < 0x80:
        return bytes((length,))
    out = bytearray()
    while length >= 0x80:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)
