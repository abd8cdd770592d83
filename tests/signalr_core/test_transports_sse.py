"""Server-Sent Events: event framing, POST sends, text protocols only, statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from typing import Any, cast

import anyio
import httpx
import pytest

from signalr_core import HubEndpoint
from signalr_core.transports import OutgoingBuffer, TransportConnection
from signalr_core.transports.sse import format_event, serve_sse
from tests.services import async_wait_until
from tests.signalr_core._hub_server import (
    FeatureHub,
    frame,
    negotiate,
    parse_frames,
    running_server,
)

pytestmark = pytest.mark.timeout(30)

SSE = {"accept": "text/event-stream"}


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with running_server(HubEndpoint(FeatureHub)) as base:
        yield base


def test_format_event_prefixes_every_line() -> None:
    assert format_event(b"a\x1e") == b"data: a\x1e\r\n\r\n"
    assert format_event(b"one\ntwo") == b"data: one\r\ndata: two\r\n\r\n"


class _Events:
    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_raw()
        self._buffer = b""

    async def read(self, size: int) -> bytes:
        with anyio.fail_after(5):
            while len(self._buffer) < size:
                self._buffer += await self._chunks.__anext__()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    async def next_data(self) -> str:
        with anyio.fail_after(5):
            while b"\r\n\r\n" not in self._buffer:
                self._buffer += await self._chunks.__anext__()
        event, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = [
            line.removeprefix(b"data: ")
            for line in event.split(b"\r\n")
            if line.startswith(b"data: ")
        ]
        return b"\n".join(lines).decode()


async def test_sse_round_trip(url: str) -> None:
    async with httpx.AsyncClient() as http:
        token = (await negotiate(http, url))["connectionToken"]
        async with http.stream("GET", url, params={"id": token}, headers=SSE) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            events = _Events(response)
            assert await events.read(3) == b":\r\n"
            await http.post(
                url, params={"id": token}, content=frame({"protocol": "json", "version": 1})
            )
            assert await events.next_data() == "{}\x1e"
            busy = await http.get(url, params={"id": token}, headers=SSE)
            assert busy.status_code == 409
            await http.post(
                url,
                params={"id": token},
                content=frame(
                    {"type": 1, "invocationId": "1", "target": "GetContext", "arguments": []}
                ),
            )
            [completion] = parse_frames(await events.next_data())
            assert completion["result"]["transport"] == "ServerSentEvents"
            await http.post(url, params={"id": token}, content=frame({"type": 7}))
            with anyio.fail_after(5):
                async for _ in events._chunks:
                    pass  # the server ends the stream when the client closes


async def test_messagepack_is_refused_on_sse(url: str) -> None:
    async with httpx.AsyncClient() as http:
        token = (await negotiate(http, url))["connectionToken"]
        async with http.stream("GET", url, params={"id": token}, headers=SSE) as response:
            events = _Events(response)
            await http.post(
                url, params={"id": token}, content=frame({"protocol": "messagepack", "version": 1})
            )
            answer = await events.next_data()
            assert answer == (
                '{"error":"Cannot use the \'messagepack\' protocol on the current transport. '
                "The transport does not support 'Binary' transfer format.\"}\x1e"
            )


class _StalledClient:
    """A connection as serve_sse sees it, whose client stops reading after the stream opened:
    every send after the first two never returns."""

    def __init__(self) -> None:
        self.outgoing = OutgoingBuffer(100, 1 << 20)
        self.transport_attached = False
        self.transport_scope: anyio.CancelScope | None = None
        self.direct_writer: Any = None
        self.aborted = False
        self.sends: list[MutableMapping[str, Any]] = []
        self.stalled = anyio.Event()
        self.loop_scope = anyio.CancelScope()  # the message loop's, which writes the events

    def transport_closed(self) -> None:
        pass

    def abort(self) -> None:  # what HubServerConnection.abort does to the transport
        self.aborted = True
        self.outgoing.close(discard=True)
        if self.transport_scope is not None:
            self.transport_scope.cancel()
        self.loop_scope.cancel()

    async def write_queued(self) -> None:
        with self.loop_scope:
            await self.direct_writer.send_queued()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sends.append(message)
        if len(self.sends) > 2:
            self.stalled.set()
            await anyio.sleep_forever()

    async def receive(self) -> MutableMapping[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover


async def test_an_aborted_stream_whose_client_stopped_reading_ends_at_once() -> None:
    # A slow consumer is aborted: nothing more is sent to it (its client reads no more), and
    # the request ends instead of waiting forever on a last send.
    client = _StalledClient()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            connection = cast("TransportConnection", client)
            tg.start_soon(serve_sse, connection, client.receive, client.send)
            await async_wait_until(lambda: client.direct_writer is not None)
            client.outgoing.put(b'{"type":6}\x1e')
            tg.start_soon(client.write_queued)
            await client.stalled.wait()  # the event is being written, and never will be
            client.abort()
    assert len(client.sends) == 3  # the start, the opening comment, the stalled event
