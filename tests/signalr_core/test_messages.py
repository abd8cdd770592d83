from __future__ import annotations

import typing

import msgspec
import pytest

from signalr_core import errors
from signalr_core.messages import (
    PING,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    MessageType,
    PingMessage,
    TransferFormat,
)


def test_hub_message_union_has_the_nine_types() -> None:
    members = typing.get_args(HubMessage)
    assert len(members) == 9 == len(MessageType)
    assert [m.value for m in MessageType] == list(range(1, 10))


def test_messages_are_frozen_and_keyword_only() -> None:
    message = InvocationMessage(target="T", arguments=(1,))
    with pytest.raises(AttributeError):
        message.target = "U"  # type: ignore[misc]
    with pytest.raises(TypeError):
        InvocationMessage("T", (1,))  # type: ignore[call-arg]
    assert message.invocation_id is None
    assert message.stream_ids == ()
    assert message.headers is None


def test_completion_defaults_to_void() -> None:
    completion = CompletionMessage(invocation_id="1")
    assert (completion.error, completion.result, completion.has_result) == (None, None, False)
    assert msgspec.structs.replace(completion, has_result=True).has_result


def test_shared_ping_and_transfer_format_flags() -> None:
    assert PingMessage() == PING
    both = TransferFormat.TEXT | TransferFormat.BINARY
    assert both & TransferFormat.BINARY
    assert not TransferFormat.TEXT & TransferFormat.BINARY


def test_error_hierarchy() -> None:
    assert issubclass(errors.MessageTooLargeError, errors.ProtocolError)
    assert issubclass(errors.HandshakeError, errors.ProtocolError)
    assert issubclass(errors.HubMethodNotFound, errors.InvocationError)
    assert issubclass(errors.InvalidArguments, errors.InvocationError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.SignalRError)
    assert errors.HandshakeError("x", detail="d").detail == "d"
    assert errors.HandshakeError("x").detail is None
