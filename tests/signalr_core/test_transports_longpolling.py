"""Long Polling: first poll at once, poll timeout, superseded polls, DELETE, statuses."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked

from signalr_core import HubEndpoint, HubOptions
from tests.services import async_wait_until
from tests.signalr_core._hub_server import (
    FeatureHub,
    frame,
    negotiate,
    parse_frames,
    running_server,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    endpoint = HubEndpoint(FeatureHub, options=HubOptions(long_poll_timeout=1.0))
    async with running_server(endpoint) as base:
        yield base


async def _connect(http: httpx.AsyncClient, url: str) -> str:
    token: str = (await negotiate(http, url))["connectionToken"]
    started = time.monotonic()
    first = await http.get(url, params={"id": token})
    assert (first.status_code, first.content) == (200, b"")
    assert time.monotonic() - started < 0.9  # answered at once, not after the poll timeout
    sent = await http.post(
        url, params={"id": token}, content=frame({"protocol": "json", "version": 1})
    )
    assert sent.status_code == 200
    answer = await http.get(url, params={"id": token})
    assert (answer.status_code, answer.text) == (200, "{}\x1e")
    return token


async def test_invoke_and_stream_over_long_polling(url: str) -> None:
    async with httpx.AsyncClient() as http:
        token = await _connect(http, url)
        await http.post(
            url,
            params={"id": token},
            content=frame({"type": 1, "invocationId": "1", "target": "GetContext", "arguments": []})
            + frame({"type": 4, "invocationId": "2", "target": "Counter", "arguments": [2]}),
        )
        messages: list[dict[str, object]] = []
        with anyio.fail_after(5):
            while len(messages) < 4:
                poll = await http.get(url, params={"id": token})
                assert poll.status_code == 200
                messages.extend(parse_frames(poll.text))
        completion = next(m for m in messages if m.get("invocationId") == "1")
        assert completion["result"]["transport"] == "LongPolling"  # type: ignore[index]
        assert [m.get("item") for m in messages if m.get("type") == 2] == [0, 1]
        await http.delete(url, params={"id": token})


async def test_poll_timeout_answers_200_empty(url: str) -> None:
    async with httpx.AsyncClient() as http:
        token = await _connect(http, url)
        started = time.monotonic()
        poll = await http.get(url, params={"id": token})
        assert (poll.status_code, poll.content) == (200, b"")
        assert time.monotonic() - started >= 0.95
        await http.delete(url, params={"id": token})


async def test_newer_poll_ends_older_with_204() -> None:
    endpoint = HubEndpoint(FeatureHub, options=HubOptions(long_poll_timeout=5))
    async with running_server(endpoint) as url, httpx.AsyncClient() as http:
        token = await _connect(http, url)
        results: dict[str, httpx.Response] = {}

        async def poll(name: str) -> None:
            results[name] = await http.get(url, params={"id": token})

        connection = endpoint._connections.by_token[token]
        async with anyio.create_task_group() as tg:
            # Ordered by what the server shows, not by sleeping: the old poll waits first.
            tg.start_soon(poll, "old")
            await async_wait_until(lambda: connection.current_poll is not None)
            first = connection.current_poll
            tg.start_soon(poll, "new")
            await async_wait_until(lambda: connection.current_poll not in (None, first))
            await async_wait_until(lambda: "old" in results)
            assert results["old"].status_code == 204
            await http.post(
                url,
                params={"id": token},
                content=frame(
                    {"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["x"]}
                ),
            )
        assert parse_frames(results["new"].text) == [
            {"type": 3, "invocationId": "1", "result": "x"}
        ]
        await http.delete(url, params={"id": token})


async def test_delete_ends_the_poll_and_removes_the_connection_at_once() -> None:
    # In-process (the app runs on the test's event loop), so "the poll is parked" is an event
    # (every task blocked), not a sleep. A disconnect timeout of an hour: the connection must
    # go at once, as ASP.NET's DisposeAndRemoveAsync, not when the timeout expires.
    endpoint = HubEndpoint(
        FeatureHub, options=HubOptions(long_poll_timeout=3600, disconnect_timeout=3600)
    )
    transport = httpx.ASGITransport(app=endpoint)
    async with (
        endpoint.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://hub") as http,
    ):
        url = "http://hub/hub"
        token = (await negotiate(http, url))["connectionToken"]
        assert (await http.get(url, params={"id": token})).status_code == 200
        await http.post(
            url, params={"id": token}, content=frame({"protocol": "json", "version": 1})
        )
        assert (await http.get(url, params={"id": token})).text == "{}\x1e"
        connection = endpoint._connections.by_token[token]
        results: dict[str, httpx.Response] = {}

        async def poll() -> None:
            results["poll"] = await http.get(url, params={"id": token})

        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            await wait_all_tasks_blocked()
            assert connection.poll_active
            assert (await http.delete(url, params={"id": token})).status_code == 202
        assert results["poll"].status_code == 204
        with anyio.fail_after(5):
            await connection.finished.wait()
        assert endpoint.connection_count == 0
        assert (await http.get(url, params={"id": token})).status_code == 404
        assert (await http.post(url, params={"id": token}, content=b"x")).status_code == 404
        assert (await http.delete(url, params={"id": token})).status_code == 404


async def test_server_close_is_delivered_then_204(url: str) -> None:
    async with httpx.AsyncClient() as http:
        token = await _connect(http, url)
        # A message over the size limit makes the server close the connection with an error.
        big = frame({"type": 1, "target": "Echo", "arguments": ["x" * 40_000]})
        await http.post(url, params={"id": token}, content=big)
        with anyio.fail_after(5):
            poll = await http.get(url, params={"id": token})
        assert parse_frames(poll.text) == [{"type": 7, "error": "Connection closed with an error."}]
        assert (await http.get(url, params={"id": token})).status_code == 204
        assert (await http.get(url, params={"id": token})).status_code == 404


async def test_binary_protocol_over_long_polling(url: str) -> None:
    from signalr_core import InvocationMessage, MessagePackHubProtocol

    protocol = MessagePackHubProtocol()
    async with httpx.AsyncClient() as http:
        token = (await negotiate(http, url))["connectionToken"]
        await http.get(url, params={"id": token})
        await http.post(
            url, params={"id": token}, content=frame({"protocol": "messagepack", "version": 1})
        )
        assert (await http.get(url, params={"id": token})).content == b"{}\x1e"
        call = InvocationMessage(target="Add", arguments=(1, 2), invocation_id="1")
        await http.post(url, params={"id": token}, content=protocol.encode_message(call))
        poll = await http.get(url, params={"id": token})
        assert poll.headers["content-type"] == "application/octet-stream"
        [completion] = protocol.decode_messages(bytearray(poll.content), None)
        assert completion.invocation_id == "1"  # type: ignore[union-attr]
        assert protocol.decode_argument(completion.result, int) == 3  # type: ignore[union-attr]
        await http.delete(url, params={"id": token})


async def test_idle_long_polling_client_outlives_the_client_timeout() -> None:
    # The official client never pings over Long Polling: the client timeout must not apply
    # until a Ping arrives (ASP.NET starts it with the first Ping).
    options = HubOptions(long_poll_timeout=0.3, client_timeout=0.4)
    async with (
        running_server(HubEndpoint(FeatureHub, options=options)) as url,
        httpx.AsyncClient() as http,
    ):
        token = await _connect(http, url)
        started = time.monotonic()
        while time.monotonic() - started < 1.2:
            poll = await http.get(url, params={"id": token})
            assert poll.status_code == 200
        sent = await http.post(
            url,
            params={"id": token},
            content=frame({"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["a"]}),
        )
        assert sent.status_code == 200
        poll = await http.get(url, params={"id": token})
        assert parse_frames(poll.text) == [{"type": 3, "invocationId": "1", "result": "a"}]
        await http.delete(url, params={"id": token})
