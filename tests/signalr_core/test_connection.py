from __future__ import annotations

import itertools
import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalr_core._framing import encode_varint
from signalr_core.connection import (
    ConnectionPhase,
    HandshakeCompleted,
    HubConnectionState,
)
from signalr_core.errors import HandshakeError, MessageTooLargeError, ProtocolError
from signalr_core.handshake import HANDSHAKE_CANCELED
from signalr_core.messages import (
    CloseMessage,
    HubMessage,
    InvocationMessage,
    PingMessage,
    TransferFormat,
)
from signalr_core.protocols import JsonHubProtocol, MessagePackHubProtocol, default_protocols

BOTH = TransferFormat.TEXT | TransferFormat.BINARY
JSON_HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
MSGPACK_HANDSHAKE = b'{"protocol":"messagepack","version":2}\x1e'
INVOKE = b'{"type":1,"invocationId":"1","target":"Echo","arguments":["hi"]}\x1e'


def new_state(transfer_formats: TransferFormat = BOTH, **kwargs: Any) -> HubConnectionState:
    return HubConnectionState(default_protocols(), transfer_formats=transfer_formats, **kwargs)


def handshake_error(state: HubConnectionState, data: bytes) -> tuple[str, Any]:
    with pytest.raises(HandshakeError) as info:
        state.receive_data(data)
    frames = state.data_to_send()
    assert len(frames) == 1
    assert frames[0].endswith(b"\x1e")
    assert state.phase is ConnectionPhase.CLOSED
    return str(info.value), json.loads(frames[0][:-1])


def test_json_handshake_then_messages_in_the_same_chunk() -> None:
    assert new_state().phase is ConnectionPhase.HANDSHAKE
    state = new_state()
    state.receive_data(JSON_HANDSHAKE + INVOKE + b'{"type":6}\x1e')
    assert state.phase is ConnectionPhase.OPEN
    assert state.data_to_send() == [b"{}\x1e"]
    events = state.events_received()
    assert len(events) == 3
    completed = events[0]
    assert isinstance(completed, HandshakeCompleted)
    assert isinstance(completed.protocol, JsonHubProtocol)
    assert completed.version == 1
    assert state.protocol is completed.protocol
    invocation = events[1]
    assert isinstance(invocation, InvocationMessage)
    assert completed.protocol.decode_argument(invocation.arguments[0], str) == "hi"
    assert events[2] == PingMessage()
    assert state.events_received() == []
    assert state.data_to_send() == []


def test_messagepack_handshake_is_json_and_messages_are_binary() -> None:
    state = new_state()
    state.receive_data(MSGPACK_HANDSHAKE + b"\x02\x91\x06")
    events = state.events_received()
    assert isinstance(events[0], HandshakeCompleted)
    assert isinstance(events[0].protocol, MessagePackHubProtocol)
    assert events[0].version == 2
    assert events[1:] == [PingMessage()]
    state.close()
    assert state.data_to_send() == [b"{}\x1e", b"\x04\x93\x07\xc0\xc2"]


def test_byte_at_a_time() -> None:
    state = new_state()
    for byte in JSON_HANDSHAKE + INVOKE:
        state.receive_data(bytes([byte]))
    events = state.events_received()
    assert [type(e) for e in events] == [HandshakeCompleted, InvocationMessage]


def test_protocol_lookup_is_case_insensitive() -> None:
    state = new_state()
    state.receive_data(b'{"protocol":"JSON","version":1}\x1e')
    assert state.phase is ConnectionPhase.OPEN


def test_unknown_protocol() -> None:
    text, body = handshake_error(new_state(), b'{"protocol":"xml","version":1}\x1e')
    assert text == body["error"] == "The protocol 'xml' is not supported."


def test_unsupported_version() -> None:
    text, body = handshake_error(new_state(), b'{"protocol":"json","version":3}\x1e')
    assert text == body["error"] == "The server does not support version 3 of the 'json' protocol."


def test_messagepack_needs_a_binary_transport() -> None:
    text, body = handshake_error(new_state(TransferFormat.TEXT), MSGPACK_HANDSHAKE)
    assert (
        text
        == body["error"]
        == (
            "Cannot use the 'messagepack' protocol on the current transport. "
            "The transport does not support 'Binary' transfer format."
        )
    )


def test_protocols_offered_by_the_endpoint_only() -> None:
    state = HubConnectionState({"json": JsonHubProtocol()}, transfer_formats=BOTH)
    text, _ = handshake_error(state, MSGPACK_HANDSHAKE)
    assert text == "The protocol 'messagepack' is not supported."


@pytest.mark.parametrize("detailed", [False, True])
def test_malformed_handshake(detailed: bool) -> None:
    state = new_state(detailed_errors=detailed)
    text, body = handshake_error(state, b'{"version":1}\x1e')
    expected = "An unexpected error occurred during connection handshake."
    if detailed:
        expected += (
            " InvalidDataException: Missing required property 'protocol'. "
            'Message content: {"version":1}'
        )
    assert text == body["error"] == expected


def test_oversized_handshake_is_canceled() -> None:
    state = new_state(max_message_size=16)
    text, body = handshake_error(state, b'{"protocol":"json",')
    assert text == body["error"] == "Handshake was canceled."


def test_closed_connection_ignores_input_and_drops_sends() -> None:
    state = new_state()
    handshake_error(state, b'{"protocol":"xml","version":1}\x1e')
    state.receive_data(INVOKE)
    assert state.events_received() == []
    state.close()
    assert state.data_to_send() == []


def test_driver_handshake_timeout() -> None:
    state = new_state()
    state.receive_data(b'{"protocol":')
    state.send_handshake_response(HANDSHAKE_CANCELED)
    assert state.phase is ConnectionPhase.CLOSED
    assert state.data_to_send() == [b'{"error":"Handshake was canceled."}\x1e']


def test_send_handshake_response_after_success_is_a_no_op() -> None:
    state = new_state()
    state.receive_data(JSON_HANDSHAKE)
    state.send_handshake_response()
    assert state.data_to_send() == [b"{}\x1e"]
    with pytest.raises(RuntimeError):
        state.send_handshake_response("too late")
    with pytest.raises(RuntimeError):
        new_state().send_handshake_response()


def test_close() -> None:
    state = new_state()
    state.receive_data(JSON_HANDSHAKE)
    state.close(error="Server is shutting down.", allow_reconnect=True)
    assert state.phase is ConnectionPhase.CLOSED
    assert state.data_to_send() == [
        b"{}\x1e",
        b'{"type":7,"error":"Server is shutting down.","allowReconnect":true}\x1e',
    ]
    state.close()  # idempotent, queues nothing
    assert state.data_to_send() == []


def test_close_before_handshake_sends_nothing() -> None:
    state = new_state()
    state.close()
    assert state.phase is ConnectionPhase.CLOSED
    assert state.data_to_send() == []


def test_protocol_error_keeps_earlier_events_and_sticks() -> None:
    state = new_state()
    with pytest.raises(ProtocolError):
        state.receive_data(JSON_HANDSHAKE + INVOKE + b"{oops}\x1e" + INVOKE)
    events = state.events_received()
    assert [type(e) for e in events] == [HandshakeCompleted, InvocationMessage]
    with pytest.raises(ProtocolError):
        state.receive_data(b'{"type":6}\x1e')
    assert state.events_received() == []
    state.close(error="Connection closed with an error.")
    frames = state.data_to_send()
    assert frames[-1] == b'{"type":7,"error":"Connection closed with an error."}\x1e'


def test_message_size_limit_applies_after_the_handshake() -> None:
    state = new_state(max_message_size=64)
    state.receive_data(JSON_HANDSHAKE)
    with pytest.raises(MessageTooLargeError):
        state.receive_data(b'{"type":6,"pad":"' + b"x" * 64)
    unlimited = new_state(max_message_size=None)
    unlimited.receive_data(JSON_HANDSHAKE + b'{"type":6,"pad":"' + b"x" * 100_000 + b'"}\x1e')
    assert unlimited.events_received()[1:] == [PingMessage()]


def test_messagepack_size_limit() -> None:
    state = new_state(max_message_size=1024)
    state.receive_data(MSGPACK_HANDSHAKE)
    with pytest.raises(MessageTooLargeError):
        state.receive_data(encode_varint(5000))


@settings(deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    data = JSON_HANDSHAKE + INVOKE + b'{"type":6}\x1e' + INVOKE
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    state = new_state()
    events: list[HandshakeCompleted | HubMessage] = []
    for a, b in itertools.pairwise(bounds):
        state.receive_data(data[a:b])
        events += state.events_received()
    assert [type(e) for e in events] == [
        HandshakeCompleted,
        InvocationMessage,
        PingMessage,
        InvocationMessage,
    ]
    assert state.data_to_send() == [b"{}\x1e"]


@settings(deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_arbitrary_bytes_never_raise_anything_but_protocol_errors(
    data: bytes, cuts: list[int]
) -> None:
    for prefix in (b"", JSON_HANDSHAKE, MSGPACK_HANDSHAKE):
        stream = prefix + data
        points = sorted({c % (len(stream) + 1) for c in cuts})
        bounds = [0, *points, len(stream)]
        state = new_state(max_message_size=128)
        try:
            for a, b in itertools.pairwise(bounds):
                state.receive_data(stream[a:b])
        except ProtocolError:
            pass
        state.events_received()
        state.close(error="Connection closed with an error.")
        for frame in state.data_to_send():
            assert isinstance(frame, bytes)


def test_close_message_round_trips_through_the_peer_protocol() -> None:
    state = new_state()
    state.receive_data(MSGPACK_HANDSHAKE)
    state.close(error="bye")
    frames = state.data_to_send()
    buffer = bytearray(frames[-1])
    assert MessagePackHubProtocol().decode_messages(buffer, None) == [CloseMessage(error="bye")]


def test_sans_io_modules_import_no_io_frameworks() -> None:
    # The package __init__ re-exports the ASGI layer, so stand in an empty package module to
    # check what the sans-I/O modules themselves pull in.
    code = (
        "import importlib, importlib.util, sys, types\n"
        "spec = importlib.util.find_spec('signalr_core')\n"
        "pkg = types.ModuleType('signalr_core')\n"
        "pkg.__path__ = list(spec.submodule_search_locations)\n"
        "sys.modules['signalr_core'] = pkg\n"
        "for mod in ['errors', 'messages', '_framing', 'protocols', 'protocols.json',\n"
        "            'protocols.messagepack', 'handshake', 'connection', 'negotiate']:\n"
        "    importlib.import_module('signalr_core.' + mod)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'anyio', 'starlette', 'hypercorn', 'asyncio', 'trio', 'structlog'})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
