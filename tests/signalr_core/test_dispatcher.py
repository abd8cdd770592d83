"""Invocations over a real server: results, errors (ASP.NET's texts), streams, limits."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from signalr_core import Hub, HubEndpoint, HubOptions
from tests.services import async_wait_until
from tests.signalr_core._hub_server import (
    FeatureHub,
    JsonWsClient,
    frame,
    json_ws,
    running_server,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with running_server(HubEndpoint(FeatureHub)) as base:
        yield base


@pytest.fixture
async def detailed_url() -> AsyncIterator[str]:
    endpoint = HubEndpoint(FeatureHub, options=HubOptions(enable_detailed_errors=True))
    async with running_server(endpoint) as base:
        yield base


@pytest.fixture
async def client(url: str) -> AsyncIterator[JsonWsClient]:
    async with json_ws(url) as c:
        yield c


async def test_results_void_and_typed_arguments(client: JsonWsClient) -> None:
    assert await client.invoke("Echo", "hi") == {"type": 3, "invocationId": "1", "result": "hi"}
    assert (await client.invoke("add", 2, 3, invocation_id="2"))["result"] == 5
    assert await client.invoke("Void", invocation_id="3") == {
        "type": 3,
        "invocationId": "3",
        "result": None,
    }
    described = await client.invoke("Describe", {"name": "a", "count": 2}, invocation_id="4")
    assert described["result"] == "ax2"


async def test_names_are_case_insensitive_and_ignore_underscores(client: JsonWsClient) -> None:
    assert (await client.invoke("NOTIFYCALLER", "x"))["result"] is None
    assert (await client.receive()) == {"type": 1, "target": "Notified", "arguments": ["x"]}
    assert (await client.invoke("notify_caller", "y", invocation_id="2"))["result"] is None
    assert (await client.invoke("explicitname", invocation_id="3"))["result"] == "explicit"
    missing = await client.invoke("SomePythonName", invocation_id="4")
    assert "Method does not exist" in missing["error"]


async def test_error_texts_without_detailed_errors(client: JsonWsClient) -> None:
    assert (await client.invoke("Nope"))["error"] == (
        "Failed to invoke 'Nope' due to an error on the server. "
        "HubException: Method does not exist."
    )
    assert (await client.invoke("Echo", "a", "b", invocation_id="2"))["error"] == (
        "Failed to invoke 'Echo' due to an error on the server."
    )
    assert (await client.invoke("Add", "x", 1, invocation_id="3"))["error"] == (
        "Failed to invoke 'Add' due to an error on the server."
    )
    assert (await client.invoke("HubError", "told you", invocation_id="4"))["error"] == (
        "An unexpected error occurred invoking 'HubError' on the server. HubException: told you"
    )
    assert (await client.invoke("Crash", invocation_id="5"))["error"] == (
        "An unexpected error occurred invoking 'Crash' on the server."
    )
    assert (await client.invoke("Counter", 1, invocation_id="6"))["error"] == (
        "The client attempted to invoke the streaming 'Counter' method with a non-streaming "
        "invocation."
    )
    await client.send({"type": 4, "invocationId": "7", "target": "Echo", "arguments": ["x"]})
    assert (await client.receive())["error"] == (
        "The client attempted to invoke the non-streaming 'Echo' method with a streaming "
        "invocation."
    )
    assert (await client.invoke("Secret", invocation_id="8"))["error"] == (
        "Failed to invoke 'Secret' because user is unauthorized"
    )
    assert (await client.invoke("Concat", invocation_id="9"))["error"] == (
        "An unexpected error occurred invoking 'Concat' on the server. "
        "HubException: Client sent 0 stream(s), Hub method expects 1."
    )


async def test_error_texts_with_detailed_errors(detailed_url: str) -> None:
    async with json_ws(detailed_url) as client:
        assert (await client.invoke("Echo", "a", "b"))["error"] == (
            "Failed to invoke 'Echo' due to an error on the server. InvalidDataException: "
            "Invocation provides 2 argument(s) but target expects 1."
        )
        assert (await client.invoke("Add", "x", 1, invocation_id="2"))["error"].startswith(
            "Failed to invoke 'Add' due to an error on the server. InvalidDataException: "
            "Error binding arguments."
        )
        assert (await client.invoke("Crash", invocation_id="3"))["error"] == (
            "An unexpected error occurred invoking 'Crash' on the server. ValueError: secret detail"
        )


async def test_fire_and_forget_sends_no_completion(client: JsonWsClient) -> None:
    await client.send({"type": 1, "target": "HubError", "arguments": ["x"]})
    await client.send({"type": 1, "target": "Nope", "arguments": []})
    await client.send({"type": 1, "target": "NotifyCaller", "arguments": ["ff"]})
    assert await client.receive() == {"type": 1, "target": "Notified", "arguments": ["ff"]}
    assert (await client.invoke("Echo", "after"))["result"] == "after"


async def test_server_stream_items_then_completion(client: JsonWsClient) -> None:
    await client.send({"type": 4, "invocationId": "s", "target": "Counter", "arguments": [3]})
    received = [await client.receive() for _ in range(4)]
    assert [m.get("item") for m in received[:3]] == [0, 1, 2]
    assert received[3] == {"type": 3, "invocationId": "s"}


async def test_stream_error_text(client: JsonWsClient) -> None:
    await client.send({"type": 4, "invocationId": "s", "target": "BrokenStream", "arguments": []})
    assert (await client.receive())["item"] == 1
    assert (await client.receive())["error"] == (
        "An error occurred on the server while streaming results. HubException: stream broke"
    )


async def test_cancel_invocation_stops_stream_and_runs_cleanup(client: JsonWsClient) -> None:
    await client.send({"type": 4, "invocationId": "s", "target": "Forever", "arguments": []})
    assert (await client.receive())["type"] == 2
    await client.send({"type": 5, "invocationId": "s"})
    seen: list[dict[str, Any]] = []
    while True:
        message = await client.receive()
        seen.append(message)
        if message["type"] == 1:
            break
    assert seen[-1] == {"type": 1, "target": "StreamCanceled", "arguments": []}
    # Only stream items (sent before the cancel arrived) precede the cleanup call.
    assert all(m["type"] in (2, 3) for m in seen[:-1])
    assert (await client.invoke("Echo", "still open"))["result"] == "still open"


async def test_duplicate_stream_invocation_id(client: JsonWsClient) -> None:
    await client.send({"type": 4, "invocationId": "s", "target": "Forever", "arguments": []})
    await client.send({"type": 4, "invocationId": "s", "target": "Forever", "arguments": []})
    while True:
        message = await client.receive()
        if message["type"] == 3:
            assert message["error"] == "Invocation ID 's' is already in use."
            break
    await client.send({"type": 5, "invocationId": "s"})


async def test_client_to_server_streams(client: JsonWsClient) -> None:
    await client.send(
        {"type": 1, "invocationId": "1", "target": "Concat", "arguments": [], "streamIds": ["a"]}
    )
    for item in ("x", "y", "z"):
        await client.send({"type": 2, "invocationId": "a", "item": item})
    await client.send({"type": 3, "invocationId": "a"})
    assert (await client.receive()) == {"type": 3, "invocationId": "1", "result": "xyz"}
    await client.send(
        {
            "type": 1,
            "invocationId": "2",
            "target": "SumUpload",
            "arguments": ["total="],
            "streamIds": ["b"],
        }
    )
    for number in (1, 2, 3):
        await client.send({"type": 2, "invocationId": "b", "item": number})
    await client.send({"type": 3, "invocationId": "b"})
    assert (await client.receive())["result"] == "total=6"


async def test_client_stream_error_reaches_the_method(client: JsonWsClient) -> None:
    await client.send(
        {"type": 1, "invocationId": "1", "target": "Concat", "arguments": [], "streamIds": ["a"]}
    )
    await client.send({"type": 3, "invocationId": "a", "error": "client gave up"})
    # As ASP.NET since .NET 6 (a HubException): the client's text shows, detailed errors off.
    assert (await client.receive())["error"] == (
        "An unexpected error occurred invoking 'Concat' on the server. HubException: client gave up"
    )


async def test_one_invocation_at_a_time_by_default(client: JsonWsClient) -> None:
    started = time.monotonic()
    await client.send({"type": 1, "invocationId": "a", "target": "Sleep", "arguments": [0.3]})
    await client.send({"type": 1, "invocationId": "b", "target": "Sleep", "arguments": [0.3]})
    first, second = await client.receive(), await client.receive()
    assert {first["invocationId"], second["invocationId"]} == {"a", "b"}
    assert time.monotonic() - started >= 0.6


async def test_pipelined_invocations_complete_in_order(client: JsonWsClient) -> None:
    # One chunk: an async method, then a plain function; with one invocation at a time the
    # plain function must not run inline before the async one has even started.
    chunk = frame({"type": 1, "invocationId": "a", "target": "Sleep", "arguments": [0.05]}) + frame(
        {"type": 1, "invocationId": "b", "target": "Echo", "arguments": ["x"]}
    )
    await client.ws.send(chunk)
    first, second = await client.receive(), await client.receive()
    assert [first["invocationId"], second["invocationId"]] == ["a", "b"]


async def test_parallel_invocations_option() -> None:
    endpoint = HubEndpoint(FeatureHub, options=HubOptions(max_parallel_invocations=2))
    async with running_server(endpoint) as base, json_ws(base) as client:
        started = time.monotonic()
        await client.send({"type": 1, "invocationId": "a", "target": "Sleep", "arguments": [1.0]})
        await client.send({"type": 1, "invocationId": "b", "target": "Sleep", "arguments": [1.0]})
        await client.receive()
        await client.receive()
        assert time.monotonic() - started < 1.8  # one after the other would take 2 s


async def test_connection_items_and_groups(url: str) -> None:
    async with json_ws(url) as one, json_ws(url) as two:
        await one.invoke("Remember", "v")
        assert (await one.invoke("Recall", invocation_id="2"))["result"] == "v"
        assert (await two.invoke("Recall"))["result"] is None
        await one.invoke("Join", "g", invocation_id="3")
        await two.invoke("ToGroup", "g", "hello", invocation_id="2")
        assert await one.receive() == {
            "type": 1,
            "target": "GroupMessage",
            "arguments": ["g", "hello"],
        }
        await two.invoke("ToOthers", "psst", invocation_id="3")
        assert (await one.receive())["arguments"] == ["psst"]
        await one.invoke("Leave", "g", invocation_id="4")
        await two.invoke("ToGroup", "g", "nobody", invocation_id="4")
        await two.invoke("ToAll", "everyone", invocation_id="5")
        # The group message is not delivered after leaving: the next one is the broadcast.
        assert (await one.receive())["target"] == "AllMessage"
        assert (await two.receive())["target"] == "AllMessage"


class FailingConnectHub(Hub):
    async def on_connected(self) -> None:
        raise ValueError("no thanks")


async def test_on_connected_failure_closes_with_error() -> None:
    async with running_server(HubEndpoint(FailingConnectHub)) as base, json_ws(base) as client:
        assert await client.receive() == {"type": 7, "error": "Connection closed with an error."}


class UncreatableHub(Hub):
    def __init__(self) -> None:
        raise RuntimeError("cannot create")


async def test_uncreatable_hub_closes_with_detailed_error() -> None:
    endpoint = HubEndpoint(UncreatableHub, options=HubOptions(enable_detailed_errors=True))
    async with running_server(endpoint) as base, json_ws(base) as client:
        assert (await client.receive())["error"] == (
            "Connection closed with an error. RuntimeError: cannot create"
        )


class LifecycleHub(Hub):
    events: list[str]

    async def on_connected(self) -> None:
        type(self).events.append(f"connected {self.context.connection_id}")

    async def on_disconnected(self, error: Exception | None) -> None:
        type(self).events.append(f"disconnected {type(error).__name__ if error else None}")


async def test_on_disconnected_runs_once() -> None:
    LifecycleHub.events = []
    async with running_server(HubEndpoint(LifecycleHub)) as base:
        async with json_ws(base):
            pass
        await async_wait_until(lambda: len(LifecycleHub.events) >= 2)
    assert LifecycleHub.events[0].startswith("connected ")
    assert LifecycleHub.events[1:] == ["disconnected None"]


async def test_oversized_message_closes_connection() -> None:
    endpoint = HubEndpoint(FeatureHub, options=HubOptions(max_message_size=1024))
    async with running_server(endpoint) as base, json_ws(base) as client:
        assert (await client.invoke("Echo", "x" * 900))["result"] == "x" * 900
        await client.send(
            {"type": 1, "invocationId": "2", "target": "Echo", "arguments": ["y" * 2000]}
        )
        closing = await client.receive()
        assert closing["type"] == 7
        assert closing["error"] == "Connection closed with an error."


def test_a_single_failure_is_reported_without_its_task_group_wrappers() -> None:
    from signalr_core._session import _single_exception

    inner = ValueError("boom")
    wrapped = BaseExceptionGroup("tg", [ExceptionGroup("inner tg", [inner])])
    assert _single_exception(wrapped) is inner
    several = ExceptionGroup("tg", [ValueError("a"), KeyError("b")])
    assert _single_exception(several) is several
