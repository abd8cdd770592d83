from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from signalr_core.errors import (
    InvalidArguments,
    InvocationError,
    MessageTooLargeError,
    ProtocolError,
)
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
    TransferFormat,
)
from signalr_core.protocols import JsonHubProtocol

ROOT = Path(__file__).resolve().parents[2]
proto = JsonHubProtocol()


def decode_all(data: bytes, limit: int | None = None) -> list[HubMessage]:
    buffer = bytearray(data)
    out = proto.decode_messages(buffer, limit)
    assert buffer == b""
    return out


def encode_json(message: HubMessage) -> Any:
    frame = proto.encode_message(message)
    assert frame.endswith(b"\x1e")
    assert frame.count(b"\x1e") == 1
    return json.loads(frame[:-1])


def test_identity() -> None:
    assert proto.name == "json"
    assert proto.version == 2
    assert proto.transfer_format is TransferFormat.TEXT
    assert proto.is_version_supported(1)
    assert proto.is_version_supported(2)
    assert not proto.is_version_supported(3)


# Frames exactly as @microsoft/signalr's JsonHubProtocol writes them.
CLIENT_FRAMES = (
    b'{"type":1,"target":"Echo","arguments":["hi",{"a":1}],"invocationId":"1","headers":{}}\x1e'
    b'{"type":1,"target":"Send","arguments":[],"streamIds":["s1"]}\x1e'
    b'{"type":4,"target":"Stream","arguments":[1],"invocationId":"2","headers":{}}\x1e'
    b'{"type":2,"invocationId":"s1","item":"x","headers":{}}\x1e'
    b'{"type":3,"invocationId":"s1","headers":{}}\x1e'
    b'{"type":3,"invocationId":"3","result":null}\x1e'
    b'{"type":3,"invocationId":"3","error":"bad"}\x1e'
    b'{"type":5,"invocationId":"2","headers":{}}\x1e'
    b'{"type":6}\x1e'
    b'{"type":7,"error":"e","allowReconnect":true}\x1e'
    b'{"type":8,"sequenceId":3}\x1e'
    b'{"type":9,"sequenceId":4}\x1e'
)


def test_decodes_what_the_official_client_sends() -> None:
    msgs = decode_all(CLIENT_FRAMES)
    assert len(msgs) == 12
    inv = msgs[0]
    assert isinstance(inv, InvocationMessage)
    assert (inv.target, inv.invocation_id, inv.stream_ids, inv.headers) == ("Echo", "1", (), None)
    assert all(isinstance(a, msgspec.Raw) for a in inv.arguments)
    assert proto.decode_argument(inv.arguments[0], str) == "hi"
    assert proto.decode_argument(inv.arguments[1], dict[str, int]) == {"a": 1}
    send = msgs[1]
    assert isinstance(send, InvocationMessage)
    assert (send.invocation_id, send.stream_ids, send.arguments) == (None, ("s1",), ())
    stream = msgs[2]
    assert isinstance(stream, StreamInvocationMessage)
    assert (stream.invocation_id, stream.target) == ("2", "Stream")
    item = msgs[3]
    assert isinstance(item, StreamItemMessage)
    assert proto.decode_argument(item.item, str) == "x"
    assert msgs[4] == CompletionMessage(invocation_id="s1")
    null_result = msgs[5]
    assert isinstance(null_result, CompletionMessage)
    assert null_result.has_result
    assert proto.decode_argument(null_result.result, Any) is None
    assert msgs[6] == CompletionMessage(invocation_id="3", error="bad")
    assert msgs[7:] == [
        CancelInvocationMessage(invocation_id="2"),
        PingMessage(),
        CloseMessage(error="e", allow_reconnect=True),
        AckMessage(sequence_id=3),
        SequenceMessage(sequence_id=4),
    ]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            InvocationMessage(target="Message", arguments=("hi", 1)),
            {"type": 1, "target": "Message", "arguments": ["hi", 1]},
        ),
        (
            InvocationMessage(
                target="T", arguments=(), invocation_id="7", stream_ids=("a",), headers={"h": "v"}
            ),
            {
                "type": 1,
                "target": "T",
                "arguments": [],
                "invocationId": "7",
                "streamIds": ["a"],
                "headers": {"h": "v"},
            },
        ),
        (
            StreamItemMessage(invocation_id="1", item=None),
            {"type": 2, "invocationId": "1", "item": None},
        ),
        (CompletionMessage(invocation_id="1"), {"type": 3, "invocationId": "1"}),
        (
            CompletionMessage(invocation_id="1", result=None, has_result=True),
            {"type": 3, "invocationId": "1", "result": None},
        ),
        (
            CompletionMessage(invocation_id="1", result=0, has_result=True, headers={}),
            {"type": 3, "invocationId": "1", "result": 0},
        ),
        (
            CompletionMessage(invocation_id="1", error="boom", result=5, has_result=True),
            {"type": 3, "invocationId": "1", "error": "boom"},
        ),
        (
            StreamInvocationMessage(invocation_id="2", target="S", arguments=(1,)),
            {"type": 4, "invocationId": "2", "target": "S", "arguments": [1]},
        ),
        (CancelInvocationMessage(invocation_id="2"), {"type": 5, "invocationId": "2"}),
        (PingMessage(), {"type": 6}),
        (CloseMessage(), {"type": 7}),
        (
            CloseMessage(error="Server is shutting down.", allow_reconnect=True),
            {"type": 7, "error": "Server is shutting down.", "allowReconnect": True},
        ),
        (AckMessage(sequence_id=5), {"type": 8, "sequenceId": 5}),
        (SequenceMessage(sequence_id=6), {"type": 9, "sequenceId": 6}),
    ],
)
def test_encodes_like_aspnet(message: HubMessage, expected: Any) -> None:
    assert encode_json(message) == expected


def test_ping_frame_is_byte_exact() -> None:
    assert proto.encode_message(PingMessage()) == b'{"type":6}\x1e'


class Inner(msgspec.Struct, rename="camel"):
    string_value: str


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_argument_values_encode_as_system_text_json_does() -> None:
    when = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    message = InvocationMessage(
        target="CustomObject",
        arguments=(
            b"\x01\x02\x03",
            when,
            dt.datetime(2000, 1, 1),  # naive: taken as UTC
            dt.datetime(2000, 1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            uuid.UUID("00010203-0405-0607-0706-050403020100"),
            Inner(string_value="hello world"),
            Point(1, 2),
            decimal.Decimal("1.5"),
            [1, 2, 3],
        ),
    )
    assert encode_json(message)["arguments"] == [
        "AQID",
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:00:00Z",
        "00010203-0405-0607-0706-050403020100",
        {"stringValue": "hello world"},
        {"x": 1, "y": 2},
        1.5,
        [1, 2, 3],
    ]


def test_unknown_message_types_are_ignored() -> None:
    msgs = decode_all(b'{"type":99,"whatever":[1]}\x1e{"type":6}\x1e{"type":0}\x1e')
    assert msgs == [PingMessage()]


def test_unknown_properties_are_ignored() -> None:
    assert decode_all(b'{"type":6,"extra":{"a":[1,2]}}\x1e') == [PingMessage()]


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        (b'{"type":1,"arguments":[]}\x1e', "Missing required property 'target'."),
        (b'{"type":1,"target":"x"}\x1e', "Missing required property 'arguments'."),
        (b'{"type":2,"invocationId":"1"}\x1e', "Missing required property 'item'."),
        (b'{"target":"x","arguments":[]}\x1e', None),
        (b'{"type":"1"}\x1e', None),
        (b"[]\x1e", None),
        (b"\x1e", None),
        (b"{not json}\x1e", None),
        (b'{"type":1,"target":"x","arguments":{}}\x1e', None),
        (
            b'{"type":3,"invocationId":"1","result":1,"error":"e"}\x1e',
            "The 'error' and 'result' properties are mutually exclusive.",
        ),
        (b'{"type":6}\xff\x1e', None),
        (b'{"type":1,"target":"\x80","arguments":[]}\x1e', None),  # invalid UTF-8 in a string
    ],
)
def test_malformed_messages_raise_protocol_error(frame: bytes, text: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_all(frame)
    if text is not None:
        assert str(info.value) == text


def test_partial_frames_wait_and_messages_before_an_error_are_kept() -> None:
    buffer = bytearray(b'{"type":6}\x1e{"type":')
    assert proto.decode_messages(buffer, None) == [PingMessage()]
    assert buffer == b'{"type":'
    buffer += b"6}\x1e{bad}\x1e"
    out: list[HubMessage] = []
    with pytest.raises(ProtocolError):
        proto.decode_messages(buffer, None, into=out)
    assert out == [PingMessage()]
    assert buffer == b"{bad}\x1e"


def test_message_size_limit() -> None:
    ok = b'{"type":6}\x1e'
    assert decode_all(ok, limit=len(ok)) == [PingMessage()]
    buffer = bytearray(ok + b'{"type":6 }\x1e')
    out: list[HubMessage] = []
    with pytest.raises(MessageTooLargeError):
        proto.decode_messages(buffer, len(ok), into=out)
    assert out == [PingMessage()]
    with pytest.raises(MessageTooLargeError):
        proto.decode_messages(bytearray(b"x" * 100), 64)


class Person(msgspec.Struct, rename="camel"):
    first_name: str
    age: int


def test_decode_argument_binds_types_and_reports_mismatches() -> None:
    raw = msgspec.Raw(b'{"firstName":"Ada","age":36}')
    assert proto.decode_argument(raw, Person) == Person(first_name="Ada", age=36)
    assert proto.decode_argument(msgspec.Raw(b'"AQID"'), bytes) == b"\x01\x02\x03"
    assert proto.decode_argument(msgspec.Raw(b'"2000-01-01T00:00:00Z"'), dt.datetime) == (
        dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    )
    with pytest.raises(InvalidArguments) as info:
        proto.decode_argument(msgspec.Raw(b'"36"'), int)
    assert isinstance(info.value, InvocationError)
    with pytest.raises(InvalidArguments):
        proto.decode_argument(msgspec.Raw(b'"\x80"'), str)
    # Unhashable annotations still work (no caching).
    assert proto.decode_argument(msgspec.Raw(b"[1]"), list[int]) == [1]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_official_client_parses_what_we_encode() -> None:
    sent: list[HubMessage] = [
        InvocationMessage(target="Message", arguments=("hi", {"a": [1, 2]})),
        StreamItemMessage(invocation_id="1", item=b"\x01\x02"),
        CompletionMessage(invocation_id="1", result=None, has_result=True),
        CompletionMessage(invocation_id="2", error="boom"),
        CompletionMessage(invocation_id="3"),
        PingMessage(),
        CloseMessage(error="bye", allow_reconnect=True),
    ]
    payload = "".join(proto.encode_message(m).decode() for m in sent)
    script = (
        'import { JsonHubProtocol, NullLogger } from "@microsoft/signalr";\n'
        "let text = '';\n"
        "process.stdin.on('data', (d) => { text += d; });\n"
        "process.stdin.on('end', () => {\n"
        "  const msgs = new JsonHubProtocol().parseMessages(text, NullLogger.instance);\n"
        "  process.stdout.write(JSON.stringify(msgs));\n"
        "});\n"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=payload,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=True,
    )
    parsed = json.loads(result.stdout)
    assert parsed == [
        {"type": 1, "target": "Message", "arguments": ["hi", {"a": [1, 2]}]},
        {"type": 2, "invocationId": "1", "item": "AQI="},
        {"type": 3, "invocationId": "1", "result": None},
        {"type": 3, "invocationId": "2", "error": "boom"},
        {"type": 3, "invocationId": "3"},
        {"type": 6},
        {"type": 7, "error": "bye", "allowReconnect": True},
    ]
