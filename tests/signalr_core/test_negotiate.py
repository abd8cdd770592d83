from __future__ import annotations

import base64
import json

from signalr_core.negotiate import (
    LONG_POLLING,
    SERVER_SENT_EVENTS,
    WEBSOCKETS,
    build_negotiate_response,
    encode_negotiate_error,
    encode_negotiate_redirect,
    new_connection_id,
)


def test_version_1_has_a_public_id_and_a_secret_token() -> None:
    body = build_negotiate_response(
        negotiate_version=1,
        connection_id="pub",
        connection_token="secret",
        transports=[WEBSOCKETS, SERVER_SENT_EVENTS, LONG_POLLING],
    )
    assert json.loads(body) == {
        "negotiateVersion": 1,
        "connectionId": "pub",
        "connectionToken": "secret",
        "availableTransports": [
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ],
    }
    assert b"ProtocolVersion" not in body
    assert b"useStatefulReconnect" not in body


def test_version_0_has_no_token_and_stateful_reconnect_only_when_on() -> None:
    body = json.loads(
        build_negotiate_response(
            negotiate_version=0,
            connection_id="id",
            connection_token="id",
            transports=[LONG_POLLING],
            use_stateful_reconnect=True,
        )
    )
    assert body == {
        "negotiateVersion": 0,
        "connectionId": "id",
        "useStatefulReconnect": True,
        "availableTransports": [
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]}
        ],
    }


def test_empty_transport_list_is_still_written() -> None:
    body = json.loads(
        build_negotiate_response(
            negotiate_version=1, connection_id="a", connection_token="b", transports=[]
        )
    )
    assert body["availableTransports"] == []


def test_redirect_and_error() -> None:
    assert json.loads(encode_negotiate_redirect("http://h/testhub?numRedirects=1", "tok")) == {
        "url": "http://h/testhub?numRedirects=1",
        "accessToken": "tok",
    }
    assert json.loads(encode_negotiate_redirect("http://h/", None)) == {"url": "http://h/"}
    assert json.loads(encode_negotiate_error("Negotiate failed.")) == {"error": "Negotiate failed."}


def test_connection_ids_are_16_random_bytes_in_base64url() -> None:
    ids = {new_connection_id() for _ in range(200)}
    assert len(ids) == 200
    for value in ids:
        assert len(value) == 22
        assert "=" not in value
        assert "+" not in value
        assert "/" not in value
        assert len(base64.urlsafe_b64decode(value + "==")) == 16
