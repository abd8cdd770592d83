"""Property tests shared by both hub protocols (hypothesis)."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalr_core.errors import InvocationError, ProtocolError
from signalr_core.messages import (
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
)
from signalr_core.protocols import HubProtocol, default_protocols

PROTOCOLS = default_protocols()
protocol_names = pytest.mark.parametrize("name", sorted(PROTOCOLS))

# Values both JSON and MessagePack carry unchanged (lists, not tuples: that is what decodes).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.text(min_size=1, max_size=12)
headers = st.none() | st.dictionaries(
    st.text(max_size=8), st.text(max_size=8), min_size=1, max_size=3
)
arguments = st.lists(values, max_size=4).map(tuple)
stream_ids = st.lists(ids, max_size=3).map(tuple)
sequence_ids = st.integers(min_value=0, max_value=2**63 - 1)

messages: st.SearchStrategy[HubMessage] = st.one_of(
    st.builds(
        InvocationMessage,
        target=ids,
        arguments=arguments,
        invocation_id=st.none() | ids,
        stream_ids=stream_ids,
        headers=headers,
    ),
    st.builds(
        StreamInvocationMessage,
        invocation_id=ids,
        target=ids,
        arguments=arguments,
        stream_ids=stream_ids,
        headers=headers,
    ),
    st.builds(StreamItemMessage, invocation_id=ids, item=values, headers=headers),
    st.builds(CompletionMessage, invocation_id=ids, error=st.text(max_size=20), headers=headers),
    st.builds(
        CompletionMessage,
        invocation_id=ids,
        result=values,
        has_result=st.booleans(),
        headers=headers,
    ).map(lambda m: m if m.has_result else msgspec.structs.replace(m, result=None)),
    st.builds(CancelInvocationMessage, invocation_id=ids, headers=headers),
    st.just(PingMessage()),
    st.builds(CloseMessage, error=st.none() | st.text(max_size=20), allow_reconnect=st.booleans()),
    st.builds(AckMessage, sequence_id=sequence_ids),
    st.builds(SequenceMessage, sequence_id=sequence_ids),
)


def materialize(protocol: HubProtocol, message: HubMessage) -> HubMessage:
    """Decode the msgspec.Raw parts of a received message so it compares to the sent one."""

    def dec(raw: Any) -> Any:
        assert isinstance(raw, msgspec.Raw)
        try:
            return protocol.decode_argument(raw, Any)
        except InvocationError:
            # Raw values are validated only when bound (e.g. broken UTF-8 inside a corrupted
            # MessagePack argument); compare those by their bytes.
            return ("undecodable", bytes(raw))

    match message:
        case InvocationMessage() | StreamInvocationMessage():
            return msgspec.structs.replace(
                message, arguments=tuple(dec(a) for a in message.arguments)
            )
        case StreamItemMessage():
            return msgspec.structs.replace(message, item=dec(message.item))
        case CompletionMessage(has_result=True):
            return msgspec.structs.replace(message, result=dec(message.result))
    return message


def feed(
    protocol: HubProtocol, chunks: list[bytes], limit: int | None
) -> tuple[list[HubMessage], bool, int]:
    """Feed chunks; return (messages, whether a ProtocolError ended it, largest buffer seen)."""
    buffer = bytearray()
    out: list[HubMessage] = []
    largest = 0
    for chunk in chunks:
        buffer += chunk
        largest = max(largest, len(buffer))
        try:
            protocol.decode_messages(buffer, limit, into=out)
        except ProtocolError:
            return out, True, largest
        largest = max(largest, len(buffer))
    return out, False, len(buffer)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@protocol_names
@settings(deadline=None)
@given(message=messages)
def test_every_message_type_round_trips(name: str, message: HubMessage) -> None:
    protocol = PROTOCOLS[name]
    frame = protocol.encode_message(message)
    buffer = bytearray(frame)
    decoded = protocol.decode_messages(buffer, None)
    assert buffer == b""
    assert [materialize(protocol, m) for m in decoded] == [message]


@protocol_names
@settings(deadline=None)
@given(batch=st.lists(messages, max_size=6), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_chunk_splitting_does_not_change_the_result(
    name: str, batch: list[HubMessage], cuts: list[int]
) -> None:
    protocol = PROTOCOLS[name]
    data = b"".join(protocol.encode_message(m) for m in batch)
    whole, failed, _ = feed(protocol, [data], None)
    parts, failed_parts, leftover = feed(protocol, chunked(data, cuts), None)
    assert not failed
    assert not failed_parts
    assert leftover == 0
    assert [materialize(protocol, m) for m in parts] == batch
    assert [materialize(protocol, m) for m in whole] == batch


@protocol_names
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=400),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
    limit=st.none() | st.integers(min_value=1, max_value=128),
)
def test_arbitrary_bytes_parse_or_raise_protocol_error_in_any_chunking(
    name: str, data: bytes, cuts: list[int], limit: int | None
) -> None:
    protocol = PROTOCOLS[name]
    # Anything else than ProtocolError escapes feed() and fails the test.
    whole = feed(protocol, [data], limit)
    parts = feed(protocol, chunked(data, cuts), limit)
    assert [materialize(protocol, m) for m in parts[0]] == [
        materialize(protocol, m) for m in whole[0]
    ]
    assert parts[1] == whole[1]
    if limit is not None and not parts[1]:
        # What stays buffered is one partial frame under the limit.
        assert parts[2] <= max(limit, 5)


@protocol_names
@settings(max_examples=100, deadline=None)
@given(batch=st.lists(messages, min_size=1, max_size=4), junk=st.binary(min_size=1, max_size=40))
def test_valid_frames_before_garbage_are_kept(
    name: str, batch: list[HubMessage], junk: bytes
) -> None:
    protocol = PROTOCOLS[name]
    good = b"".join(protocol.encode_message(m) for m in batch)
    out: list[HubMessage] = []
    buffer = bytearray(good + junk)
    with contextlib.suppress(ProtocolError):
        protocol.decode_messages(buffer, None, into=out)
    assert [materialize(protocol, m) for m in out][: len(batch)] == batch


@protocol_names
@settings(max_examples=150, deadline=None)
@given(
    batch=st.lists(messages, min_size=1, max_size=3),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=4,
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=4),
)
def test_corrupted_frames_parse_or_raise_protocol_error(
    name: str, batch: list[HubMessage], edits: list[tuple[int, int]], cuts: list[int]
) -> None:
    # Random bytes rarely look like frames; corrupting real ones reaches the deeper paths
    # (bad tags, wrong field types, broken UTF-8, lengths that lie).
    protocol = PROTOCOLS[name]
    data = bytearray(b"".join(protocol.encode_message(m) for m in batch))
    for position, value in edits:
        data[position % len(data)] = value
    whole = feed(protocol, [bytes(data)], 64)
    parts = feed(protocol, chunked(bytes(data), cuts), 64)
    assert [materialize(protocol, m) for m in parts[0]] == [
        materialize(protocol, m) for m in whole[0]
    ]
    assert parts[1] == whole[1]
