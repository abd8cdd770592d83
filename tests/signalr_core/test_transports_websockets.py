"""WebSockets: JSON in text frames, MessagePack in binary frames, skipNegotiation, close."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

from signalr_core import (
    CompletionMessage,
    HubEndpoint,
    InvocationMessage,
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


async def test_client_close_message_closes_the_socket_normally(url: str) -> None:
    async with json_ws(url) as client:
        await client.send({"type": 7})
        with pytest.raises(ConnectionClosedOK):
            with anyio.fail_after(5):
                await client.ws.recv()
        assert client.ws.close_code == 1000
