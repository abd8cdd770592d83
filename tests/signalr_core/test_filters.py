"""Hub filters (ASP.NET's ``IHubFilter``): order, arguments, results, errors, streams, hooks."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from signalr_core import (
    DisconnectedNext,
    HubEndpoint,
    HubException,
    HubFilter,
    HubInvocationContext,
    HubLifetimeContext,
    HubOptions,
    InvokeNext,
    LifetimeNext,
)
from tests.signalr_core._hub_server import FeatureHub, json_ws, running_server

pytestmark = pytest.mark.timeout(30)


class Recorder(HubFilter):
    """Records when it is entered and left, for every kind of call."""

    def __init__(self, name: str, log: list[str], disconnected: threading.Event) -> None:
        self.name = name
        self.log = log
        self.disconnected = disconnected

    async def invoke_method(self, invocation: HubInvocationContext, next: InvokeNext) -> Any:
        self.log.append(f"{self.name}>{invocation.method_name}")
        try:
            return await next(invocation)
        finally:
            self.log.append(f"{self.name}<{invocation.method_name}")

    async def on_connected(self, context: HubLifetimeContext, next: LifetimeNext) -> None:
        assert context.hub.context is context.context
        self.log.append(f"{self.name}>connected")
        await next(context)
        self.log.append(f"{self.name}<connected")

    async def on_disconnected(
        self, context: HubLifetimeContext, error: Exception | None, next: DisconnectedNext
    ) -> None:
        self.log.append(f"{self.name}>disconnected:{error is None}")
        await next(context, error)
        self.log.append(f"{self.name}<disconnected")
        if self.name == "global-1":  # the outermost: every filter is done
            self.disconnected.set()


class Upper(HubFilter):
    """Changes the arguments: every string becomes upper-case."""

    async def invoke_method(self, invocation: HubInvocationContext, next: InvokeNext) -> Any:
        invocation.arguments = [
            a.upper() if isinstance(a, str) else a for a in invocation.arguments
        ]
        return await next(invocation)


class Policy(HubFilter):
    """Short-circuits: refuses, answers itself, or fails; observes results and exceptions."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    async def invoke_method(self, invocation: HubInvocationContext, next: InvokeNext) -> Any:
        name = invocation.method_name
        if name == "add" and invocation.arguments[0] < 0:
            raise HubException("Negative numbers are rate limited")
        if name == "add" and invocation.arguments[0] == 0:
            return "answered by the filter"  # next is never called
        if name == "void":
            raise RuntimeError("a bug in the filter")
        if name == "forever":
            raise HubException("No infinite streams")
        try:
            result = await next(invocation)
        except Exception as exc:
            self.seen.append((name, type(exc).__name__))
            raise
        if name == "counter":
            return _doubled(result)  # wrap the stream: the client gets the items doubled
        self.seen.append((name, result))
        return result


async def _doubled(stream: AsyncIterator[int]) -> AsyncIterator[int]:
    async for item in stream:
        yield item * 2


class FilteredHub(FeatureHub):
    filters = (Upper(),)


async def test_filters_run_in_order_around_invocations_and_hooks() -> None:
    log: list[str] = []
    done = threading.Event()
    global_filters = [Recorder("global-1", log, done), Recorder("global-2", log, done)]

    class OrderHub(FeatureHub):
        filters = (Recorder("hub", log, done),)

    endpoint = HubEndpoint(OrderHub, options=HubOptions(hub_filters=global_filters))
    async with running_server(endpoint) as url:
        async with json_ws(url) as client:
            assert (await client.invoke("Echo", "hi"))["result"] == "hi"
        await anyio.to_thread.run_sync(done.wait, 10)
    assert log == [
        "global-1>connected",
        "global-2>connected",
        "hub>connected",
        "hub<connected",
        "global-2<connected",
        "global-1<connected",
        "global-1>echo",
        "global-2>echo",
        "hub>echo",
        "hub<echo",
        "global-2<echo",
        "global-1<echo",
        "global-1>disconnected:True",
        "global-2>disconnected:True",
        "hub>disconnected:True",
        "hub<disconnected",
        "global-2<disconnected",
        "global-1<disconnected",
    ]


async def test_filters_change_arguments_short_circuit_and_map_errors() -> None:
    policy = Policy()
    endpoint = HubEndpoint(FilteredHub, options=HubOptions(hub_filters=[policy]))
    async with running_server(endpoint) as url, json_ws(url) as client:
        # The hub's filter changes the arguments; the global one sees the result.
        assert (await client.invoke("Echo", "quiet"))["result"] == "QUIET"
        assert (await client.invoke("Add", 2, 3))["result"] == 5
        # A HubException from a filter reaches the client with its text (detailed errors off).
        refused = await client.invoke("Add", -1, 3)
        assert refused["error"] == (
            "An unexpected error occurred invoking 'Add' on the server. "
            "HubException: Negative numbers are rate limited"
        )
        assert (await client.invoke("Add", 0, 3))["result"] == "answered by the filter"
        # Any other exception is hidden, as one from the method itself.
        crashed = await client.invoke("Void")
        assert crashed["error"] == "An unexpected error occurred invoking 'Void' on the server."
        # The filter observes the method's exception, which then reaches the client as usual.
        failed = await client.invoke("HubError", "nope")
        assert failed["error"].endswith("HubException: NOPE")  # upper-cased by the hub filter
        assert policy.seen == [
            ("echo", "QUIET"),
            ("add", 5),
            ("hub_error", "HubException"),
        ]


async def test_filters_see_streaming_methods_and_upload_streams() -> None:
    policy = Policy()
    endpoint = HubEndpoint(FilteredHub, options=HubOptions(hub_filters=[policy]))
    async with running_server(endpoint) as url, json_ws(url) as client:
        await client.send({"type": 4, "invocationId": "s", "target": "Counter", "arguments": [3]})
        items = []
        while (message := await client.receive())["type"] == 2:
            items.append(message["item"])
        assert items == [0, 2, 4]
        assert message == {"type": 3, "invocationId": "s"}
        await client.send({"type": 4, "invocationId": "f", "target": "Forever", "arguments": []})
        assert (await client.receive())["error"] == (
            "An unexpected error occurred invoking 'Forever' on the server. "
            "HubException: No infinite streams"
        )
        # Upload streams are arguments too (the async iterators the method reads).
        await client.send(
            {
                "type": 1,
                "invocationId": "u",
                "target": "Concat",
                "arguments": [],
                "streamIds": ["a"],
            }
        )
        await client.send({"type": 2, "invocationId": "a", "item": "ab"})
        await client.send({"type": 2, "invocationId": "a", "item": "c"})
        await client.send({"type": 3, "invocationId": "a"})
        assert (await client.receive())["result"] == "abc"
        assert policy.seen[-1] == ("concat", "abc")


def test_filters_must_be_hub_filters() -> None:
    with pytest.raises(TypeError, match="HubFilter instances"):
        HubEndpoint(FeatureHub, options=HubOptions(hub_filters=[object()]))  # type: ignore[list-item]


class Gate(HubFilter):
    """Refuses connections without ``?key=open`` from ``on_connected``."""

    async def on_connected(self, context: HubLifetimeContext, next: LifetimeNext) -> None:
        if context.context.query.get("key") != "open":
            raise HubException("Closed for maintenance")
        await next(context)


async def test_a_filter_refusing_on_connected_closes_the_connection() -> None:
    endpoint = HubEndpoint(FeatureHub, options=HubOptions(hub_filters=[Gate()]))
    async with running_server(endpoint) as url:
        async with json_ws(url + "?key=open") as client:
            assert (await client.invoke("Echo", "in"))["result"] == "in"
        async with json_ws(url) as client:
            # As an exception from on_connected: Close with the error (a HubException's text
            # shows even with detailed errors off).
            assert await client.receive() == {
                "type": 7,
                "error": "Connection closed with an error. HubException: Closed for maintenance",
            }
