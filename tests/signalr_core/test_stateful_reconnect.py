"""Stateful reconnect: replay buffer, Ack, Sequence, duplicates, timeouts (raw WebSockets)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from signalr_core import Hub, HubEndpoint, HubOptions
from tests.services import async_wait_until
from tests.signalr_core._hub_server import frame, parse_frames, running_server

pytestmark = pytest.mark.timeout(30)

INVOCATION, COMPLETION, CLOSE, ACK, SEQUENCE = 1, 3, 7, 8, 9


class CountingHub(Hub):
    disconnected: list[str]

    def bump(self) -> int:
        count: int = self.context.items.get("n", 0) + 1
        self.context.items["n"] = count
        return count

    async def numbers(self, count: int) -> None:
        for i in range(count):
            await self.clients.caller.send("Number", i)

    async def on_disconnected(self, exception: Exception | None) -> None:
        self.disconnected.append(self.context.connection_id)


class Client:
    """Raw JSON client speaking protocol version 2."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(frame(message))

    async def receive(self) -> dict[str, Any]:
        while True:
            while self.pending:
                message = self.pending.pop(0)
                if message.get("type") not in (6, ACK):  # pings and the server's acks
                    return message
            with anyio.fail_after(10):
                data = await self.ws.recv()
            assert isinstance(data, str)
            self.pending.extend(parse_frames(data))

    def cut(self) -> None:
        """Break the TCP connection without a close frame."""
        self.ws.transport.abort()


@contextlib.asynccontextmanager
async def ws_client(url: str, token: str, *, handshake: bool) -> AsyncIterator[Client]:
    async with connect(f"{url.replace('http', 'ws')}?id={token}") as ws:
        client = Client(ws)
        if handshake:
            await ws.send(frame({"protocol": "json", "version": 2}))
            first, _, rest = str(await ws.recv()).partition("\x1e")
            assert first == "{}"
            client.pending.extend(parse_frames(rest))
        yield client


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    CountingHub.disconnected = []
    options = HubOptions(allow_stateful_reconnect=True, disconnect_timeout=1.0)
    async with running_server(HubEndpoint(CountingHub, options=options)) as url:
        yield url, CountingHub.disconnected


async def _token(url: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{url}/negotiate?negotiateVersion=1&useStatefulReconnect=true")
    token: str = response.json()["connectionToken"]
    return token


async def test_unacknowledged_messages_are_replayed_after_a_drop(
    server: tuple[str, list[str]],
) -> None:
    url, _ = server
    token = await _token(url)
    async with ws_client(url, token, handshake=True) as client:
        await client.send(
            {"type": INVOCATION, "invocationId": "1", "target": "Numbers", "arguments": [5]}
        )
        first = [await client.receive() for _ in range(6)]
        assert [m["arguments"][0] for m in first[:5]] == [0, 1, 2, 3, 4]
        assert first[5]["type"] == COMPLETION
        await client.send({"type": ACK, "sequenceId": 3})  # numbers 0..2 arrived
        # messages are handled in order: once Bump has answered, the Ack has been applied
        assert (await _invoke(client, "b", "Bump"))["result"] == 1
        client.cut()
    async with ws_client(url, token, handshake=False) as client:
        assert await client.receive() == {"type": SEQUENCE, "sequenceId": 4}
        replay = [await client.receive() for _ in range(4)]
        assert [m.get("arguments") for m in replay] == [["Number", 3][1:], [4], None, None]
        assert replay[2] == {"type": COMPLETION, "invocationId": "1", "result": None}
        assert replay[3] == {"type": COMPLETION, "invocationId": "b", "result": 1}
        await client.send({"type": SEQUENCE, "sequenceId": 3})  # we sent 2 messages so far
        answer = await _invoke(client, "2", "Bump")
        assert answer["result"] == 2


async def _invoke(client: Client, invocation_id: str, target: str) -> dict[str, Any]:
    await client.send(
        {"type": INVOCATION, "invocationId": invocation_id, "target": target, "arguments": []}
    )
    return await client.receive()


async def test_messages_resent_by_the_client_run_once(server: tuple[str, list[str]]) -> None:
    url, _ = server
    token = await _token(url)
    async with ws_client(url, token, handshake=True) as client:
        assert (await _invoke(client, "a", "Bump"))["result"] == 1  # client message 1
        assert (await _invoke(client, "b", "Bump"))["result"] == 2  # client message 2
        client.cut()
    async with ws_client(url, token, handshake=False) as client:
        assert (await client.receive())["type"] == SEQUENCE
        replayed = [await client.receive(), await client.receive()]
        assert [m["result"] for m in replayed] == [1, 2]
        # The client never saw an Ack, so it resends both, then a new one.
        await client.send({"type": SEQUENCE, "sequenceId": 1})
        await client.send(
            {"type": INVOCATION, "invocationId": "a", "target": "Bump", "arguments": []}
        )
        await client.send(
            {"type": INVOCATION, "invocationId": "b", "target": "Bump", "arguments": []}
        )
        answer = await _invoke(client, "c", "Bump")
        assert answer == {"type": COMPLETION, "invocationId": "c", "result": 3}
        # A Sequence ahead of what the server received breaks the protocol.
        await client.send({"type": SEQUENCE, "sequenceId": 99})
        close = await client.receive()
        assert close == {"type": CLOSE, "error": "Connection closed with an error."}


async def test_no_reconnect_after_the_timeout_or_a_clean_close(
    server: tuple[str, list[str]],
) -> None:
    url, disconnected = server
    token = await _token(url)
    async with ws_client(url, token, handshake=True) as client:
        await _invoke(client, "x", "Bump")
        client.cut()
    await async_wait_until(lambda: len(disconnected) == 1, 5)  # disconnect_timeout is 1 s
    with pytest.raises(InvalidStatus) as refused:
        async with ws_client(url, token, handshake=False):
            pass
    assert refused.value.response.status_code == 404

    token = await _token(url)
    async with ws_client(url, token, handshake=True) as client:
        await _invoke(client, "x", "Bump")
    # A close frame from the client (its stop()) ends the connection at once.
    await async_wait_until(lambda: len(disconnected) == 2, 5)


async def test_version_1_connections_do_not_survive_a_drop(
    server: tuple[str, list[str]],
) -> None:
    url, disconnected = server
    async with httpx.AsyncClient() as http:
        token = (await http.post(f"{url}/negotiate?negotiateVersion=1")).json()["connectionToken"]
    async with connect(f"{url.replace('http', 'ws')}?id={token}") as ws:
        await ws.send(frame({"protocol": "json", "version": 1}))
        assert await ws.recv() == "{}\x1e"
        ws.transport.abort()
    await async_wait_until(lambda: len(disconnected) == 1, 5)


async def test_detached_connection_waits_for_the_disconnect_timeout_not_client_timeout() -> None:
    CountingHub.disconnected = []
    options = HubOptions(allow_stateful_reconnect=True, disconnect_timeout=2.0, client_timeout=0.4)
    async with running_server(HubEndpoint(CountingHub, options=options)) as url:
        token = await _token(url)
        async with ws_client(url, token, handshake=True) as client:
            await client.send({"type": 6})  # a Ping starts the client timeout
            assert (await _invoke(client, "1", "Bump"))["result"] == 1
            client.cut()
        await anyio.sleep(1.0)  # longer than client_timeout, shorter than disconnect_timeout
        async with ws_client(url, token, handshake=False) as client:
            assert (await client.receive())["type"] == SEQUENCE
            await client.send({"type": SEQUENCE, "sequenceId": 2})
            answer = await _invoke(client, "2", "Bump")
            if answer.get("invocationId") == "1":  # replayed: it was never acknowledged
                answer = await client.receive()
            assert answer == {"type": COMPLETION, "invocationId": "2", "result": 2}
