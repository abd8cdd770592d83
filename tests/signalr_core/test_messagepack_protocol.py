from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from signalr_core._framing import encode_varint
from signalr_core.errors import InvalidArguments, MessageTooLargeError, ProtocolError
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
from signalr_core.protocols import MessagePackHubProtocol

ROOT = Path(__file__).resolve().parents[2]
proto = MessagePackHubProtocol()


def frame(*items: Any) -> bytes:
    body = msgspec.msgpack.encode(list(items))
    return encode_varint(len(body)) + body


def decode_all(data: bytes, limit: int | None = None) -> list[HubMessage]:
    buffer = bytearray(data)
    out = proto.decode_messages(buffer, limit)
    assert buffer == b""
    return out


def payload_of(message: HubMessage) -> Any:
    data = proto.encode_message(message)
    buffer = bytearray(data)
    # Strip the VarInt prefix by re-reading it.
    size = shift = pos = 0
    while True:
        byte = buffer[pos]
        pos += 1
        size |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    assert len(data) == pos + size
    return msgspec.msgpack.decode(data[pos:])


def test_identity() -> None:
    assert proto.name == "messagepack"
    assert proto.version == 2
    assert proto.transfer_format is TransferFormat.BINARY


# Frames exactly as @microsoft/signalr-protocol-msgpack 10 writes them (hex).
CLIENT_FRAMES = bytes.fromhex(
    "12950180a131a44563686f92a2686981a16101"  # Invocation, 5 elements
    "0e960180c0a453656e649091a27331"  # Invocation with streamIds, no id
    "0e950480a132a653747265616d9101"  # StreamInvocation
    "08940280a27331a178"  # StreamItem
    "07940380a2733102"  # Completion void
    "07950380a1330305"  # Completion result 5
    "0a950380a13301a3626164"  # Completion error
    "05930580a132"  # CancelInvocation
    "029106"  # Ping
    "039207c0"  # Close
    "03920803"  # Ack
    "03920904"  # Sequence
)


def test_decodes_what_the_official_client_sends() -> None:
    msgs = decode_all(CLIENT_FRAMES)
    assert len(msgs) == 12
    inv = msgs[0]
    assert isinstance(inv, InvocationMessage)
    assert (inv.target, inv.invocation_id, inv.stream_ids, inv.headers) == ("Echo", "1", (), None)
    assert proto.decode_argument(inv.arguments[0], str) == "hi"
    assert proto.decode_argument(inv.arguments[1], dict[str, int]) == {"a": 1}
    send = msgs[1]
    assert isinstance(send, InvocationMessage)
    assert (send.target, send.invocation_id, send.stream_ids, send.arguments) == (
        "Send",
        None,
        ("s1",),
        (),
    )
    assert isinstance(msgs[2], StreamInvocationMessage)
    item = msgs[3]
    assert isinstance(item, StreamItemMessage)
    assert proto.decode_argument(item.item, str) == "x"
    assert msgs[4] == CompletionMessage(invocation_id="s1")
    result = msgs[5]
    assert isinstance(result, CompletionMessage)
    assert result.has_result
    assert proto.decode_argument(result.result, int) == 5
    assert msgs[6] == CompletionMessage(invocation_id="3", error="bad")
    assert msgs[7:] == [
        CancelInvocationMessage(invocation_id="2"),
        PingMessage(),
        CloseMessage(),
        AckMessage(sequence_id=3),
        SequenceMessage(sequence_id=4),
    ]


def test_accepts_both_invocation_lengths_nil_stream_ids_and_nil_headers() -> None:
    msgs = decode_all(
        frame(1, {}, "1", "A", [])
        + frame(1, {}, "2", "B", [], None)
        + frame(1, None, None, "C", [], ["s"])
        + frame(4, {"h": "v"}, "3", "D", [1], None)
        + frame(7, "err")
        + frame(7, None, True)
        + frame(6, "future field")
    )
    assert msgs == [
        InvocationMessage(target="A", arguments=(), invocation_id="1"),
        InvocationMessage(target="B", arguments=(), invocation_id="2"),
        InvocationMessage(target="C", arguments=(), stream_ids=("s",)),
        StreamInvocationMessage(
            invocation_id="3",
            target="D",
            arguments=msgs[3].arguments,  # type: ignore[union-attr]
            headers={"h": "v"},
        ),
        CloseMessage(error="err"),
        CloseMessage(allow_reconnect=True),
        PingMessage(),
    ]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (InvocationMessage(target="M", arguments=("a", 1)), [1, {}, None, "M", ["a", 1], []]),
        (
            InvocationMessage(target="M", arguments=(), invocation_id="1", stream_ids=("s",)),
            [1, {}, "1", "M", [], ["s"]],
        ),
        (StreamItemMessage(invocation_id="1", item=2), [2, {}, "1", 2]),
        (
            CompletionMessage(invocation_id="1", error="e", headers={"a": "b"}),
            [3, {"a": "b"}, "1", 1, "e"],
        ),
        (CompletionMessage(invocation_id="1"), [3, {}, "1", 2]),
        (CompletionMessage(invocation_id="1", has_result=True), [3, {}, "1", 3, None]),
        (
            StreamInvocationMessage(invocation_id="2", target="S", arguments=()),
            [4, {}, "2", "S", [], []],
        ),
        (CancelInvocationMessage(invocation_id="2"), [5, {}, "2"]),
        (PingMessage(), [6]),
        (CloseMessage(), [7, None, False]),
        (CloseMessage(error="x", allow_reconnect=True), [7, "x", True]),
        (AckMessage(sequence_id=1), [8, 1]),
        (SequenceMessage(sequence_id=2), [9, 2]),
    ],
)
def test_encodes_the_spec_arrays(message: HubMessage, expected: Any) -> None:
    assert payload_of(message) == expected


def test_ping_frame_is_byte_exact() -> None:
    assert proto.encode_message(PingMessage()) == b"\x02\x91\x06"


class Inner(msgspec.Struct, rename="camel"):
    string_value: str


@dataclasses.dataclass
class Point:
    x: int


def test_values_use_timestamp_ext_bin_and_maps() -> None:
    when = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    data = proto.encode_message(
        InvocationMessage(
            target="T",
            arguments=(when, dt.datetime(2000, 1, 1), b"\x01\x02\x03", Inner("x"), Point(1)),
        )
    )
    body = data[1:]
    # Timestamp extension type -1 (fixext 4 or 8) and bin 8 for bytes.
    assert b"\xd6\xff" in body or b"\xd7\xff" in body
    assert b"\xc4\x03\x01\x02\x03" in body
    args = msgspec.msgpack.decode(body)[4]
    assert args[0] == when
    assert args[1] == when
    assert args[2] == b"\x01\x02\x03"
    assert args[3] == {"stringValue": "x"}
    assert args[4] == {"x": 1}


def test_unknown_types_are_ignored() -> None:
    assert decode_all(frame(99, {}, "x") + frame(0) + frame(6)) == [PingMessage()]


@pytest.mark.parametrize(
    "data",
    [
        frame(),  # empty array
        frame(1, {}, "1"),  # too short
        frame(3, {}, "1", 4, None),  # bad result kind
        frame(3, {}, "1", 1),  # error kind without error
        frame(3, {}, "1", 1, 5),  # error is not a string
        frame(1, {"a": 1}, "1", "T", []),  # header value not a string
        frame("1"),
        b"\x01\xc1",  # reserved byte
        b"\x00",  # empty payload
        b"\x06\x94\x05\x80\xa1\x80\x00",  # invalid UTF-8 in the invocation id
        b"\x01\x92",  # array claims 2 items, frame holds none
    ],
)
def test_malformed_messages_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_all(data)


def test_invalid_result_kind_text() -> None:
    with pytest.raises(ProtocolError, match=r"^Invalid invocation result kind\.$"):
        decode_all(frame(3, {}, "1", 4, None))


def test_errors_keep_earlier_messages_and_leave_the_bad_frame() -> None:
    long_bad = frame(1, {}, "1", "x" * 200)  # two-byte length prefix
    buffer = bytearray(frame(6) + long_bad + frame(6))
    out: list[HubMessage] = []
    with pytest.raises(ProtocolError):
        proto.decode_messages(buffer, None, into=out)
    assert out == [PingMessage()]
    assert bytes(buffer) == long_bad + frame(6)


def test_message_size_limit_counts_the_prefix() -> None:
    ping = frame(6)
    assert decode_all(ping, limit=len(ping)) == [PingMessage()]
    with pytest.raises(MessageTooLargeError):
        decode_all(ping, limit=len(ping) - 1)
    # The claimed length alone is enough to refuse.
    with pytest.raises(MessageTooLargeError):
        proto.decode_messages(bytearray(encode_varint(1_000_000)), 32 * 1024)


def test_decode_argument() -> None:
    raw = msgspec.Raw(msgspec.msgpack.encode(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
    assert proto.decode_argument(raw, dt.datetime) == dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    assert proto.decode_argument(msgspec.Raw(b"\xc4\x01\x07"), bytes) == b"\x07"
    assert proto.decode_argument(
        msgspec.Raw(msgspec.msgpack.encode({"stringValue": "s"})), Inner
    ) == Inner("s")
    with pytest.raises(InvalidArguments):
        proto.decode_argument(msgspec.Raw(msgspec.msgpack.encode("x")), int)
    with pytest.raises(InvalidArguments):
        proto.decode_argument(msgspec.Raw(b"\xa1\x80"), str)


NODE_SCRIPT = """
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import { NullLogger } from "@microsoft/signalr";
const chunks = [];
process.stdin.on("data", (d) => chunks.push(d));
process.stdin.on("end", () => {
  const buf = Buffer.concat(chunks);
  const bytes = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  const msgs = new MessagePackHubProtocol().parseMessages(bytes, NullLogger.instance);
  process.stdout.write(JSON.stringify(msgs, function (key, value) {
    const raw = this[key];
    if (raw instanceof Date) return { $date: raw.toISOString() };
    if (raw instanceof Uint8Array) return { $bytes: Array.from(raw) };
    return value;
  }));
});
"""


def test_official_client_parses_what_we_encode() -> None:
    sent: list[HubMessage] = [
        InvocationMessage(
            target="CustomObject",
            arguments=(
                {
                    "byteArray": b"\x01\x02\x03",
                    "dateTime": dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                    "guid": uuid.UUID("00010203-0405-0607-0706-050403020100"),
                    "intArray": [1, 2, 3],
                    "string": "hello world",
                },
            ),
        ),
        StreamItemMessage(invocation_id="1", item="a"),
        CompletionMessage(invocation_id="1", result=None, has_result=True),
        CompletionMessage(invocation_id="2", error="boom"),
        CompletionMessage(invocation_id="3"),
        PingMessage(),
        CloseMessage(error="bye", allow_reconnect=True),
    ]
    payload = b"".join(proto.encode_message(m) for m in sent)
    result = subprocess.run(
        ["node", "--input-type=module", "-e", NODE_SCRIPT],
        input=payload,
        capture_output=True,
        cwd=ROOT,
        timeout=30,
        check=True,
    )
    parsed = json.loads(result.stdout)
    assert parsed[0]["type"] == 1
    assert parsed[0]["target"] == "CustomObject"
    assert parsed[0]["arguments"] == [
        {
            "byteArray": {"$bytes": [1, 2, 3]},
            "dateTime": {"$date": "2000-01-01T00:00:00.000Z"},
            "guid": "00010203-0405-0607-0706-050403020100",
            "intArray": [1, 2, 3],
            "string": "hello world",
        }
    ]
    assert [(m["type"], m.get("invocationId")) for m in parsed[1:6]] == [
        (2, "1"),
        (3, "1"),
        (3, "2"),
        (3, "3"),
        (6, None),
    ]
    assert parsed[1]["item"] == "a"
    assert "result" in parsed[2]
    assert parsed[2]["result"] is None
    assert parsed[3]["error"] == "boom"
    assert "error" not in parsed[4] or parsed[4]["error"] is None
    assert parsed[6]["type"] == 7
    assert parsed[6]["error"] == "bye"
    assert parsed[6]["allowReconnect"] is True
