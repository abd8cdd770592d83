"""The MessagePack hub protocol: MessagePack arrays, each prefixed by a VarInt length.

Message layouts (``HubProtocol.md``)::

    Invocation        [1, Headers, InvocationId, Target, [Arguments], [StreamIds]?]
    StreamItem        [2, Headers, InvocationId, Item]
    Completion        [3, Headers, InvocationId, ResultKind, Result?]   1 error, 2 void, 3 result
    StreamInvocation  [4, Headers, InvocationId, Target, [Arguments], [StreamIds]?]
    CancelInvocation  [5, Headers, InvocationId]
    Ping              [6]
    Close             [7, Error, AllowReconnect?]
    Ack               [8, SequenceId]
    Sequence          [9, SequenceId]

The server writes Invocation and StreamInvocation in the 6-element form (an empty ``StreamIds``
array when there are none), as ASP.NET does; it reads both. Trailing elements beyond these are
ignored so future additions stay compatible. Datetimes
encode as the MessagePack timestamp extension (type -1), ``bytes`` as ``bin``; argument objects
(Structs, dataclasses, dicts) encode as maps.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .._framing import encode_varint, split_binary_frames
from ..errors import MessageEncodeError, ProtocolError
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

__all__ = ["MessagePackHubProtocol"]

_Raw = msgspec.Raw
_UNSET = msgspec.UNSET
_ERROR_RESULT: Final = 1
_VOID_RESULT: Final = 2
_NON_VOID_RESULT: Final = 3
_NO_HEADERS: Final[dict[str, str]] = {}


# Decoding structs: array_like, tagged by the first array element.
class _Wire(msgspec.Struct, array_like=True):
    pass


class _Invocation(_Wire, tag=1):
    headers: dict[str, str] | None
    invocation_id: str | None
    target: str
    arguments: tuple[_Raw, ...]
    stream_ids: tuple[str, ...] | None = None


class _StreamItem(_Wire, tag=2):
    headers: dict[str, str] | None
    invocation_id: str
    item: _Raw


class _Completion(_Wire, tag=3):
    headers: dict[str, str] | None
    invocation_id: str
    result_kind: int
    result: _Raw | msgspec.UnsetType = _UNSET


class _StreamInvocation(_Wire, tag=4):
    headers: dict[str, str] | None
    invocation_id: str
    target: str
    arguments: tuple[_Raw, ...]
    stream_ids: tuple[str, ...] | None = None


class _CancelInvocation(_Wire, tag=5):
    headers: dict[str, str] | None
    invocation_id: str


class _Ping(_Wire, tag=6):
    pass


class _Close(_Wire, tag=7):
    error: str | None = None
    allow_reconnect: bool = False


class _Ack(_Wire, tag=8):
    sequence_id: int


class _Sequence(_Wire, tag=9):
    sequence_id: int


class _TypeOnly(_Wire):
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

_PING_FRAME: Final = b"\x02\x91\x06"


class MessagePackHubProtocol(HubProtocol):
    """The ``messagepack`` hub protocol (binary transfer format), versions up to 2."""

    name = "messagepack"
    version = 2
    transfer_format = TransferFormat.BINARY

    def __init__(self) -> None:
        super().__init__()
        self._decoder = msgspec.msgpack.Decoder(_WireMessage)
        self._type_decoder = msgspec.msgpack.Decoder(_TypeOnly)
        self._str_decoder = msgspec.msgpack.Decoder(str)
        self._encoder = msgspec.msgpack.Encoder()

    def _build_decoder(self, type_: Any) -> Any:
        return msgspec.msgpack.Decoder(type_)

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
        data = bytes(buffer)
        spans, consumed, error = split_binary_frames(data, max_message_size)
        decode = self._decoder.decode
        frame_start = 0  # frames are contiguous: each starts where the previous one ended
        for start, end in spans:
            payload = data[start:end]
            try:
                wire = decode(payload)
            except msgspec.ValidationError as exc:
                if self._is_unknown_type(payload):
                    frame_start = end
                    continue
                del buffer[:frame_start]
                raise protocol_error(exc) from None
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
                del buffer[:frame_start]
                raise ProtocolError(f"Invalid MessagePack message: {exc}") from None
            try:
                out.append(self._to_message(wire))
            except ProtocolError:
                del buffer[:frame_start]
                raise
            frame_start = end
        del buffer[:consumed]
        if error is not None:
            raise error

    def _is_unknown_type(self, frame: bytes) -> bool:
        try:
            probe = self._type_decoder.decode(frame)
        except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError):
            return False
        return probe.type not in KNOWN_MESSAGE_TYPES

    def _to_message(self, wire: Any) -> HubMessage:
        match wire:
            case _Invocation():
                return InvocationMessage(
                    target=wire.target,
                    arguments=wire.arguments,
                    invocation_id=wire.invocation_id,
                    stream_ids=wire.stream_ids or (),
                    headers=wire.headers or None,
                )
            case _StreamItem():
                return StreamItemMessage(
                    invocation_id=wire.invocation_id, item=wire.item, headers=wire.headers or None
                )
            case _Completion():
                return self._completion(wire)
            case _StreamInvocation():
                return StreamInvocationMessage(
                    invocation_id=wire.invocation_id,
                    target=wire.target,
                    arguments=wire.arguments,
                    stream_ids=wire.stream_ids or (),
                    headers=wire.headers or None,
                )
            case _CancelInvocation():
                return CancelInvocationMessage(
                    invocation_id=wire.invocation_id, headers=wire.headers or None
                )
            case _Ping():
                return PING
            case _Close():
                return CloseMessage(error=wire.error, allow_reconnect=wire.allow_reconnect)
            case _Ack():
                return AckMessage(sequence_id=wire.sequence_id)
            case _Sequence():
                return SequenceMessage(sequence_id=wire.sequence_id)
        raise AssertionError(wire)  # pragma: no cover - the decoder only yields the union

    def _completion(self, wire: _Completion) -> CompletionMessage:
        headers = wire.headers or None
        kind = wire.result_kind
        if kind == _VOID_RESULT:
            return CompletionMessage(invocation_id=wire.invocation_id, headers=headers)
        if kind not in (_ERROR_RESULT, _NON_VOID_RESULT):
            raise ProtocolError("Invalid invocation result kind.")
        if wire.result is _UNSET:
            raise ProtocolError("Invalid payload for Completion message.")
        if kind == _NON_VOID_RESULT:
            return CompletionMessage(
                invocation_id=wire.invocation_id,
                result=wire.result,
                has_result=True,
                headers=headers,
            )
        try:
            error = self._str_decoder.decode(wire.result)
        except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError) as exc:
            raise protocol_error(exc) from None
        return CompletionMessage(invocation_id=wire.invocation_id, error=error, headers=headers)

    def encode_message(self, message: HubMessage) -> bytes:
        try:
            return self._encode_message(message)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.MsgspecError) as exc:
            raise MessageEncodeError(f"{type(exc).__name__}: {exc}") from exc

    def _encode_message(self, message: HubMessage) -> bytes:
        payload: tuple[Any, ...]
        match message:
            case InvocationMessage():
                # Always the 6-element form, as ASP.NET writes it: an empty stream-id array
                # last. Clients that read a fixed layout (the ``signalrcore`` Python client)
                # drop 5-element invocations, and the rest of the frame with them.
                payload = (
                    1,
                    message.headers or _NO_HEADERS,
                    message.invocation_id,
                    message.target,
                    tuple(map(utc_value, message.arguments)),
                    message.stream_ids,
                )
            case StreamItemMessage():
                payload = (
                    2,
                    message.headers or _NO_HEADERS,
                    message.invocation_id,
                    utc_value(message.item),
                )
            case CompletionMessage():
                headers = message.headers or _NO_HEADERS
                if message.error is not None:
                    payload = (3, headers, message.invocation_id, _ERROR_RESULT, message.error)
                elif message.has_result:
                    payload = (
                        3,
                        headers,
                        message.invocation_id,
                        _NON_VOID_RESULT,
                        utc_value(message.result),
                    )
                else:
                    payload = (3, headers, message.invocation_id, _VOID_RESULT)
            case PingMessage():
                return _PING_FRAME
            case CloseMessage():
                payload = (7, message.error, message.allow_reconnect)
            case StreamInvocationMessage():
                payload = (
                    4,
                    message.headers or _NO_HEADERS,
                    message.invocation_id,
                    message.target,
                    tuple(map(utc_value, message.arguments)),
                    message.stream_ids,
                )
            case CancelInvocationMessage():
                payload = (5, message.headers or _NO_HEADERS, message.invocation_id)
            case AckMessage():
                payload = (8, message.sequence_id)
            case SequenceMessage():
                payload = (9, message.sequence_id)
            case _:
                raise TypeError(f"not a hub message: {message!r}")
        body = self._encoder.encode(payload)
        return encode_varint(len(body)) + body
