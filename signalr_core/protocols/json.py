"""The JSON hub protocol: UTF-8 JSON objects, each terminated by ``0x1E``.

Field names are camelCase (``invocationId``, ``streamIds``, ``allowReconnect``, ...) and the
integer ``type`` field selects the message. Optional fields that are null are omitted, as
ASP.NET Core does. ``bytes`` values encode as base64 strings (like ``byte[]`` in
System.Text.Json) and UTC datetimes as ISO 8601 with ``Z``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from .._framing import too_large_message
from ..errors import MessageEncodeError, MessageTooLargeError, ProtocolError
from ..messages import (
    PING,
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
from . import KNOWN_MESSAGE_TYPES, HubProtocol, MessageSink, protocol_error, utc_value

__all__ = ["JsonHubProtocol"]

_Raw = msgspec.Raw
_UNSET = msgspec.UNSET


# Wire structs: one per message type, tagged by the integer "type" field. The same classes
# serve decoding (annotations say what to accept) and encoding (omit_defaults drops null
# optional fields). Arguments, items and results stay msgspec.Raw when decoding.
class _Wire(msgspec.Struct, tag_field="type", rename="camel", omit_defaults=True):
    pass


class _Invocation(_Wire, tag=1):
    target: str
    arguments: tuple[_Raw, ...]
    invocation_id: str | None = None
    stream_ids: tuple[str, ...] | None = None
    headers: dict[str, str] | None = None


class _StreamItem(_Wire, tag=2):
    invocation_id: str
    item: _Raw
    headers: dict[str, str] | None = None


class _Completion(_Wire, tag=3):
    invocation_id: str
    result: _Raw | msgspec.UnsetType = _UNSET
    error: str | None = None
    headers: dict[str, str] | None = None


class _StreamInvocation(_Wire, tag=4):
    invocation_id: str
    target: str
    arguments: tuple[_Raw, ...]
    stream_ids: tuple[str, ...] | None = None
    headers: dict[str, str] | None = None


class _CancelInvocation(_Wire, tag=5):
    invocation_id: str
    headers: dict[str, str] | None = None


class _Ping(_Wire, tag=6):
    pass


class _Close(_Wire, tag=7):
    error: str | None = None
    allow_reconnect: bool = False


class _Ack(_Wire, tag=8):
    sequence_id: int


class _Sequence(_Wire, tag=9):
    sequence_id: int


class _TypeOnly(msgspec.Struct):
    type: int


_WireMessage = (
    _Invocation
    | _StreamItem
    | _Completion
    | _StreamInvocation
    | _CancelInvocation
    | _Ping
    | _Close
    | _Ack
    | _Sequence
)

_PING_FRAME: Final = b'{"type":6}\x1e'


class JsonHubProtocol(HubProtocol):
    """The ``json`` hub protocol (text transfer format), versions up to 2."""

    name = "json"
    version = 2
    transfer_format = TransferFormat.TEXT

    def __init__(self) -> None:
        super().__init__()
        self._decoder = msgspec.json.Decoder(_WireMessage)
        self._type_decoder = msgspec.json.Decoder(_TypeOnly)
        # System.Text.Json writes decimals as numbers.
        self._encoder = msgspec.json.Encoder(decimal_format="number")

    def _build_decoder(self, type_: Any) -> Any:
        return msgspec.json.Decoder(type_)

    def decode_messages(
        self,
        buffer: bytearray,
        max_message_size: int | None,
        *,
        into: MessageSink | None = None,
    ) -> list[HubMessage]:
        out: list[HubMessage] = []
        if buffer:
            try:
                self._decode_into(buffer, max_message_size, out)
            finally:
                if into is not None:
                    into.extend(out)
        return out

    def _decode_into(
        self, buffer: bytearray, max_message_size: int | None, out: list[HubMessage]
    ) -> None:
        # The splitting loop is inlined (rather than using _framing.split_text_frames) because
        # this is the hottest path of the server; the semantics are the same.
        data = bytes(buffer)
        length = len(data)
        # Without a limit, nothing in this buffer can exceed "length + 1".
        limit = length + 1 if max_message_size is None else max_message_size
        find = data.find
        decode = self._decoder.decode
        start = 0
        while start < length:
            end = find(b"\x1e", start)
            if end < 0:
                if length - start >= limit:
                    del buffer[:start]
                    raise MessageTooLargeError(too_large_message(limit))
                break
            if end + 1 - start > limit:
                del buffer[:start]
                raise MessageTooLargeError(too_large_message(limit))
            frame = data[start:end]
            try:
                wire = decode(frame)
            except msgspec.ValidationError as exc:
                if self._is_unknown_type(frame):
                    start = end + 1
                    continue
                del buffer[:start]
                raise protocol_error(exc) from None
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
                del buffer[:start]
                raise ProtocolError(f"Invalid JSON message: {exc}") from None
            try:
                out.append(_CONVERTERS[type(wire)](wire))
            except ProtocolError:
                del buffer[:start]
                raise
            start = end + 1
        del buffer[:start]

    def _is_unknown_type(self, frame: bytes) -> bool:
        try:
            probe = self._type_decoder.decode(frame)
        except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError):
            return False
        return probe.type not in KNOWN_MESSAGE_TYPES

    def encode_message(self, message: HubMessage) -> bytes:
        try:
            return self._encode_message(message)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.MsgspecError) as exc:
            raise MessageEncodeError(f"{type(exc).__name__}: {exc}") from exc

    def _encode_message(self, message: HubMessage) -> bytes:
        wire: _Wire
        match message:
            case InvocationMessage():
                wire = _Invocation(
                    target=message.target,
                    arguments=tuple(map(utc_value, message.arguments)),
                    invocation_id=message.invocation_id,
                    stream_ids=message.stream_ids or None,
                    headers=message.headers or None,
                )
            case StreamItemMessage():
                wire = _StreamItem(
                    invocation_id=message.invocation_id,
                    item=utc_value(message.item),
                    headers=message.headers or None,
                )
            case CompletionMessage():
                wire = _Completion(
                    invocation_id=message.invocation_id,
                    result=(
                        utc_value(message.result)
                        if message.has_result and message.error is None
                        else _UNSET
                    ),
                    error=message.error,
                    headers=message.headers or None,
                )
            case PingMessage():
                return _PING_FRAME
            case CloseMessage():
                wire = _Close(error=message.error, allow_reconnect=message.allow_reconnect)
            case StreamInvocationMessage():
                wire = _StreamInvocation(
                    invocation_id=message.invocation_id,
                    target=message.target,
                    arguments=tuple(map(utc_value, message.arguments)),
                    stream_ids=message.stream_ids or None,
                    headers=message.headers or None,
                )
            case CancelInvocationMessage():
                wire = _CancelInvocation(
                    invocation_id=message.invocation_id, headers=message.headers or None
                )
            case AckMessage():
                wire = _Ack(sequence_id=message.sequence_id)
            case SequenceMessage():
                wire = _Sequence(sequence_id=message.sequence_id)
            case _:
                raise TypeError(f"not a hub message: {message!r}")
        return self._encoder.encode(wire) + b"\x1e"


def _invocation(wire: _Invocation) -> HubMessage:
    return InvocationMessage(
        target=wire.target,
        arguments=wire.arguments,
        invocation_id=wire.invocation_id,
        stream_ids=wire.stream_ids or (),
        headers=wire.headers or None,
    )


def _stream_item(wire: _StreamItem) -> HubMessage:
    return StreamItemMessage(
        invocation_id=wire.invocation_id, item=wire.item, headers=wire.headers or None
    )


def _completion(wire: _Completion) -> HubMessage:
    has_result = wire.result is not _UNSET
    if has_result and wire.error is not None:
        raise ProtocolError("The 'error' and 'result' properties are mutually exclusive.")
    return CompletionMessage(
        invocation_id=wire.invocation_id,
        error=wire.error,
        result=wire.result if has_result else None,
        has_result=has_result,
        headers=wire.headers or None,
    )


def _stream_invocation(wire: _StreamInvocation) -> HubMessage:
    return StreamInvocationMessage(
        invocation_id=wire.invocation_id,
        target=wire.target,
        arguments=wire.arguments,
        stream_ids=wire.stream_ids or (),
        headers=wire.headers or None,
    )


def _cancel_invocation(wire: _CancelInvocation) -> HubMessage:
    return CancelInvocationMessage(invocation_id=wire.invocation_id, headers=wire.headers or None)


def _ping(wire: _Ping) -> HubMessage:
    return PING


def _close(wire: _Close) -> HubMessage:
    return CloseMessage(error=wire.error, allow_reconnect=wire.allow_reconnect)


def _ack(wire: _Ack) -> HubMessage:
    return AckMessage(sequence_id=wire.sequence_id)


def _sequence(wire: _Sequence) -> HubMessage:
    return SequenceMessage(sequence_id=wire.sequence_id)


_CONVERTERS: Final[dict[type[Any], Callable[[Any], HubMessage]]] = {
    _Invocation: _invocation,
    _StreamItem: _stream_item,
    _Completion: _completion,
    _StreamInvocation: _stream_invocation,
    _CancelInvocation: _cancel_invocation,
    _Ping: _ping,
    _Close: _close,
    _Ack: _ack,
    _Sequence: _sequence,
}
