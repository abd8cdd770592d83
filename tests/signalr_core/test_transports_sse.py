"""Server-Sent Events: event framing, POST sends, text protocols only, statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from signalr_core import HubEndpoint
from signalr_core.transports.sse import format_event
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
