"""Client results: the server invokes a client method and awaits its Completion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from signalr_core import (
    ClientResultError,
    ClientResultsNotAllowedError,
    ClientUnavailableError,
    Hub,
    HubEndpoint,
    HubOptions,
)
from tests.signalr_core._hub_server import JsonWsClient, json_ws, running_server

pytestmark = pytest.mark.timeout(30)


class Point(msgspec.Struct):
    x: int
    y: int


class ResultHub(Hub):
    seen: list[str]  # set per test by the fixture
    endpoint: HubEndpoint

    async def ask(self, method: str) -> Any:
        return await self.clients.caller.invoke(method, "question", timeout=5)

    async def ask_point(self) -> str:
        point = await self.clients.caller.invoke("Point", result_type=Point, timeout=5)
        return f"{type(point).__name__}({point.x},{point.y})"

    async def ask_and_report(self) -> str:
        try:
            await self.clients.caller.invoke("Result", timeout=5)
        except ClientUnavailableError as exc:
            return f"unavailable: {exc}"
        except ClientResultError as exc:
            return f"client error: {exc}"
        return "no error"

    async def ask_other(self, connection_id: str) -> str:
        try:
            await self.clients.client(connection_id).invoke("Result")
        except ClientUnavailableError as exc:
            self.seen.append(str(exc))
            return str(exc)
        return "answered"

    async def on_connected(self) -> None:
        if self.context.query.get("ask") == "1":
            try:
                await self.clients.caller.invoke("Result")
            except ClientResultsNotAllowedError as exc:
                self.context.items["error"] = str(exc)

    async def ask_via_hub_context(self, connection_id: str) -> Any:
        # What a background job does: the endpoint's hub context, not self.clients.
        proxy = self.endpoint.hub_context.clients.client(connection_id)
        return await proxy.invoke("Result", "from outside", timeout=5)

    def my_id(self) -> str:
        return self.context.connection_id

    def connect_error(self) -> str | None:
        error: str | None = self.context.items.get("error")
        return error


@pytest.fixture
async def url() -> AsyncIterator[str]:
    ResultHub.seen = []
    options = HubOptions(enable_detailed_errors=True, max_pending_client_results=2)
    ResultHub.endpoint = HubEndpoint(ResultHub, options=options)
    async with running_server(ResultHub.endpoint) as base:
        yield base


async def _answer_next(client: JsonWsClient, **completion: Any) -> dict[str, Any]:
    """Read the server's invocation and answer it with a Completion."""
    invocation = await client.receive()
    assert invocation["type"] == 1, invocation
    assert invocation["invocationId"], "a client-result invocation carries an id"
    await client.send({"type": 3, "invocationId": invocation["invocationId"], **completion})
    return invocation


async def test_result_error_and_missing_result(url: str) -> None:
    async with json_ws(url) as client:
        await client.send({"type": 1, "invocationId": "1", "target": "Ask", "arguments": ["M"]})
        invocation = await _answer_next(client, result={"any": ["json", 1]})
        assert invocation["target"] == "M"
        assert invocation["arguments"] == ["question"]
        assert (await client.receive())["result"] == {"any": ["json", 1]}

        await client.send({"type": 1, "invocationId": "2", "target": "Ask", "arguments": ["M"]})
        await _answer_next(client, error="Error: nope")
        assert (await client.receive())["error"] == (
            "An unexpected error occurred invoking 'Ask' on the server. HubException: Error: nope"
        )


async def test_result_type_conversion(url: str) -> None:
    async with json_ws(url) as client:
        await client.send({"type": 1, "invocationId": "1", "target": "AskPoint", "arguments": []})
        await _answer_next(client, result={"x": 1, "y": 2})
        assert (await client.receive())["result"] == "Point(1,2)"
        await client.send({"type": 1, "invocationId": "2", "target": "AskPoint", "arguments": []})
        await _answer_next(client, result="not a point")
        assert (await client.receive())["error"].endswith(
            "HubException: Error trying to deserialize result to Point."
        )


async def test_pending_results_are_bounded(url: str) -> None:
    async with json_ws(url) as asker, json_ws(url) as target:
        del target
        # Two results outstanding on `asker` (the limit), the third is refused at once.
        for n in ("1", "2", "3"):
            await asker.send(
                {"type": 1, "invocationId": n, "target": "AskAndReport", "arguments": []}
            )
        first, second = await asker.receive(), await asker.receive()
        assert first["type"] == second["type"] == 1
        third = await asker.receive()
        assert third["invocationId"] == "3"
        assert third["result"] == (
            "unavailable: Connection '"
            + third["result"].split("'")[1]
            + "' has too many pending client results."
        )
        for invocation in (first, second):
            await asker.send({"type": 3, "invocationId": invocation["invocationId"], "result": 1})
        results = {(await asker.receive())["result"], (await asker.receive())["result"]}
        assert results == {"no error"}


async def test_closed_while_waiting_and_unknown_connection(url: str) -> None:
    async with json_ws(url) as asker:
        async with json_ws(url) as target:
            target_id = (await target.invoke("MyId"))["result"]
            await asker.send(
                {"type": 1, "invocationId": "w", "target": "AskOther", "arguments": [target_id]}
            )
            assert (await target.receive())["target"] == "Result"
            # The target leaves without answering.
        answer = await asker.receive()
        assert answer["invocationId"] == "w"
        assert answer["result"] == f"Connection '{target_id}' disconnected."
        answer = await asker.invoke("AskOther", "no-such-id")
        assert answer["result"] == "Connection 'no-such-id' does not exist."


async def test_not_allowed_in_on_connected(url: str) -> None:
    async with json_ws(url + "?ask=1") as client:
        answer = await client.invoke("ConnectError")
        assert (
            answer["result"]
            == "Client results inside OnConnectedAsync Hub methods are not allowed."
        )


async def test_hub_context_asks_a_client(url: str) -> None:
    async with json_ws(url) as asker, json_ws(url) as target:
        target_id = (await target.invoke("MyId"))["result"]
        await asker.send(
            {"type": 1, "invocationId": "h", "target": "AskViaHubContext", "arguments": [target_id]}
        )
        invocation = await _answer_next(target, result=42)
        assert invocation["arguments"] == ["from outside"]
        assert (await asker.receive())["result"] == 42
