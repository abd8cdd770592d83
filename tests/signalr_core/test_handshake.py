from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalr_core.errors import HandshakeError, ProtocolError
from signalr_core.handshake import (
    HANDSHAKE_CANCELED,
    HANDSHAKE_FAILED,
    encode_handshake_response,
    parse_handshake_request,
    protocol_not_supported,
    transfer_format_not_supported,
    version_not_supported,
)
from signalr_core.messages import HandshakeRequest


def test_parses_the_request_and_leaves_following_bytes() -> None:
    buffer = bytearray(b'{"protocol":"messagepack","version":1}\x1e\x02\x91\x06')
    assert parse_handshake_request(buffer, 1024) == HandshakeRequest(
        protocol="messagepack", version=1
    )
    assert buffer == b"\x02\x91\x06"


def test_waits_for_the_terminator() -> None:
    buffer = bytearray(b'{"protocol":"json",')
    assert parse_handshake_request(buffer, 1024) is None
    assert buffer == b'{"protocol":"json",'
    buffer += b'"version":1,"extra":[1]}\x1e'
    assert parse_handshake_request(buffer, 1024) == HandshakeRequest(protocol="json", version=1)
    assert buffer == b""


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (
            b'{"version":1}\x1e',
            "InvalidDataException: Missing required property 'protocol'. "
            'Message content: {"version":1}',
        ),
        (
            b'{"protocol":"json"}\x1e',
            "InvalidDataException: Missing required property 'version'. "
            'Message content: {"protocol":"json"}',
        ),
        (b'{"protocol":"json","version":4294967296}\x1e', None),
        (b'{"protocol":"json","version":"1"}\x1e', None),
        (b"[]\x1e", None),
        (b"\x1e", None),
        (b"\xff\xfe\x1e", None),
        (b'{"protocol":"\x80","version":1}\x1e', None),
    ],
)
def test_malformed_requests(data: bytes, detail: str | None) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_handshake_request(bytearray(data), 1024)
    assert (
        str(info.value)
        == HANDSHAKE_FAILED
        == ("An unexpected error occurred during connection handshake.")
    )
    assert info.value.detail
    assert info.value.detail.startswith("InvalidDataException: ")
    if detail is not None:
        assert info.value.detail == detail


def test_size_limit_cancels_the_handshake() -> None:
    request = b'{"protocol":"json","version":1}\x1e'
    assert parse_handshake_request(bytearray(request), len(request)) is not None
    with pytest.raises(HandshakeError, match=r"^Handshake was canceled\.$"):
        parse_handshake_request(bytearray(request), len(request) - 1)
    # Even without a terminator, a request that cannot fit is refused at once.
    with pytest.raises(HandshakeError) as info:
        parse_handshake_request(bytearray(b"{" * 64), 64)
    assert str(info.value) == HANDSHAKE_CANCELED


def test_responses() -> None:
    assert encode_handshake_response() == b"{}\x1e"
    response = encode_handshake_response(protocol_not_supported("x"))
    assert response.endswith(b"\x1e")
    assert json.loads(response[:-1]) == {"error": "The protocol 'x' is not supported."}


def test_error_texts_match_aspnet() -> None:
    assert version_not_supported("json", 3) == (
        "The server does not support version 3 of the 'json' protocol."
    )
    assert transfer_format_not_supported("messagepack", "Binary") == (
        "Cannot use the 'messagepack' protocol on the current transport. "
        "The transport does not support 'Binary' transfer format."
    )


@settings(deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=100))
def test_any_bytes_parse_wait_or_raise_protocol_error(data: bytes, limit: int) -> None:
    buffer = bytearray(data)
    try:
        result = parse_handshake_request(buffer, limit)
    except ProtocolError:
        return
    if result is None:
        assert buffer == data
        assert len(data) < limit
