"""WebSockets: JSON in text frames, MessagePack in binary frames, skipNegotiation, close."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from signalr_core import (
    CompletionMessage,
    HubEndpoint,
    HubOptions,
    InvocationMessage,
    MessageEncodeError,
    MessagePackHubProtocol,
    StreamInvocationMessage,
    StreamItemMessage,
)
from tests.signalr_core._hub_server import FeatureHub, frame, json_ws, negotiate, running_server

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with running_server(HubEndpoint(FeatureHub)) as base:
        yield base


async def test_json_uses_text_frames_and_skip_negotiation_works(url: str) -> None:
    async with json_ws(url) as client:  # no id: the request creates the connection
        assert (await client.invoke("Echo", "text"))["result"] == "text"
        await client.send({"type": 4, "invocationId": "2", "target": "Counter", "arguments": [2]})
        items = [await client.receive() for _ in range(3)]
        assert items[-1] == {"type": 3, "invocationId": "2"}


async def test_messagepack_uses_binary_frames(url: str) -> None:
    protocol = MessagePackHubProtocol()
    async with httpx.AsyncClient() as http:
        token = (await negotiate(http, url))["connectionToken"]
    async with connect(f"{url.replace('http', 'ws')}?id={token}") as ws:
        await ws.send(frame({"protocol": "messagepack", "version": 1}))
        answer = await ws.recv()
        assert answer == b"{}\x1e"  # binary frame: the active format is binary
        await ws.send(
            protocol.encode_message(
                InvocationMessage(target="Echo", arguments=("m",), invocation_id="1")
            )
            + protocol.encode_message(
                StreamInvocationMessage(target="Counter", arguments=(2,), invocation_id="2")
            )
        )
        buffer = bytearray()
        messages: list[object] = []
        with anyio.fail_after(5):
            while len(messages) < 4:
                data = await ws.recv()
                assert isinstance(data, bytes)
                buffer += data
                messages.extend(protocol.decode_messages(buffer, None))
        echo = next(
            m for m in messages if isinstance(m, CompletionMessage) and m.invocation_id == "1"
        )
        assert protocol.decode_argument(echo.result, str) == "m"
        items = [
            protocol.decode_argument(m.item, int)
            for m in messages
            if isinstance(m, StreamItemMessage)
        ]
        assert items == [0, 1]


def test_every_encode_failure_is_one_library_error() -> None:
    with pytest.raises(MessageEncodeError, match="OverflowError"):
        MessagePackHubProtocol().encode_message(
            CompletionMessage(invocation_id="1", result=2**70, has_result=True)
        )


async def test_unencodable_result_sends_a_completion_error(url: str) -> None:
    protocol = MessagePackHubProtocol()
    async with connect(url.replace("http", "ws")) as ws:
        await ws.send(frame({"protocol": "messagepack", "version": 1}))
        assert await ws.recv() == b"{}\x1e"
        await ws.send(
            protocol.encode_message(
                InvocationMessage(target="Huge", arguments=(), invocation_id="1")
            )
            + protocol.encode_message(
                InvocationMessage(target="Echo", arguments=("ok",), invocation_id="2")
            )
        )
        buffer = bytearray()
        completions: list[CompletionMessage] = []
        with anyio.fail_after(5):
            while len(completions) < 2:
                data = await ws.recv()
                assert isinstance(data, bytes)
                buffer += data
                completions.extend(
                    m
                    for m in protocol.decode_messages(buffer, None)
                    if isinstance(m, CompletionMessage)
                )
        assert completions[0].invocation_id == "1"
        assert completions[0].error == "An unexpected error occurred invoking 'Huge' on the server."
        assert completions[1].invocation_id == "2"  # the connection lives on
        assert protocol.decode_argument(completions[1].result, str) == "ok"


async def _read_until_closed(ws: ClientConnection) -> None:
    while True:
        await ws.recv()


async def test_websocket_message_over_the_buffer_size_closes_with_1009() -> None:
    endpoint = HubEndpoint(FeatureHub, options=HubOptions(application_max_buffer_size=4096))
    async with running_server(endpoint) as base, json_ws(base) as client:
        assert (await client.invoke("Echo", "small"))["result"] == "small"
        await client.send(
            {"type": 1, "invocationId": "2", "target": "Echo", "arguments": ["z" * 5000]}
        )
        with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
            await _read_until_closed(client.ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def test_client_close_message_closes_the_socket_normally(url: str) -> None:
    async with json_ws(url) as client:
        await client.send({"type": 7})
        with pytest.raises(ConnectionClosedOK):
            with anyio.fail_after(5):
                await client.ws.recv()
        assert client.ws.close_code == 1000
