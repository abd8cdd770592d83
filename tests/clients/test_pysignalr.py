"""``pysignalr`` (PyPI, asyncio, WebSockets only) against a real hub server, JSON and MessagePack.

pysignalr has no stop method: ``run()`` loops until cancelled, and the WebSocket it holds stays
open inside a suspended ``websockets.connect`` iterator. :func:`connected` runs it in a task
group, cancels it at the end and then closes that socket, so no connection outlives the test
(an unclosed socket would fail it: warnings are errors).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import anyio
import httpx
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pysignalr.client import SignalRClient
from pysignalr.exceptions import AuthorizationError
from pysignalr.messages import CompletionMessage
from pysignalr.protocol.abstract import Protocol
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

TIMEOUT = 10
PROTOCOLS = ("json", "messagepack")


def _protocol(name: str) -> Protocol:
    return MessagepackProtocol() if name == "messagepack" else JSONProtocol()


@dataclass
class Client:
    """A running pysignalr client and what it received, in arrival order."""

    signalr: SignalRClient
    send_events: MemoryObjectSendStream[tuple[str, Any]]
    events: MemoryObjectReceiveStream[tuple[str, Any]]

    def listen(self, *methods: str) -> None:
        for method in methods:

            async def handler(arguments: Any, method: str = method) -> None:
                await self.send_events.send((method, arguments))

            self.signalr.on(method, handler)

    async def next_event(self) -> tuple[str, Any]:
        with anyio.fail_after(TIMEOUT):
            return await self.events.receive()

    def assert_no_event(self) -> None:
        try:
            event = self.events.receive_nowait()
        except anyio.WouldBlock:
            return
        pytest.fail(f"unexpected event {event!r}")

    async def invoke(self, method: str, *arguments: Any) -> CompletionMessage:
        """Invoke and wait for the completion (other events stay queued before it)."""
        done = anyio.Event()
        completion: list[CompletionMessage] = []

        async def on_completion(message: Any) -> None:
            completion.append(message)
            done.set()

        # pysignalr annotates arguments as list[dict]; any JSON value is what it sends.
        await self.signalr.send(method, cast(Any, list(arguments)), on_invocation=on_completion)
        with anyio.fail_after(TIMEOUT):
            await done.wait()
        return completion[0]


@contextlib.asynccontextmanager
async def connected(url: str, protocol: str, **kwargs: Any) -> AsyncIterator[Client]:
    signalr = SignalRClient(
        url, protocol=_protocol(protocol), retry_count=1, connection_timeout=TIMEOUT, **kwargs
    )
    send_events, events = anyio.create_memory_object_stream[tuple[str, Any]](100)
    client = Client(signalr, send_events, events)
    opened = anyio.Event()
    errors: list[CompletionMessage] = []

    async def on_open() -> None:
        opened.set()

    async def on_error(message: CompletionMessage) -> None:
        errors.append(message)  # also reaches the invocation's own callback

    signalr.on_open(on_open)
    signalr.on_error(on_error)
    with send_events, events:
        async with anyio.create_task_group() as tg:
            tg.start_soon(signalr.run)
            try:
                with anyio.fail_after(TIMEOUT):
                    await opened.wait()
                yield client
            finally:
                ws = signalr._transport._ws
                tg.cancel_scope.cancel()
        if ws is not None:
            with anyio.fail_after(TIMEOUT):
                await ws.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_echo_add_and_errors(base_url: str, protocol: str) -> None:
    async with connected(f"{base_url}/hub", protocol) as client:
        assert (await client.invoke("Echo", "héllo ☃")).result == "héllo ☃"
        assert (await client.invoke("Add", 2, 40)).result == 42
        failed = await client.invoke("Fail", "boom")
        assert failed.error == (
            "An unexpected error occurred invoking 'Fail' on the server. HubException: boom"
        )
        missing = await client.invoke("NoSuchMethod")
        assert missing.error == (
            "Failed to invoke 'NoSuchMethod' due to an error on the server. "
            "HubException: Method does not exist."
        )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_server_push(base_url: str, protocol: str) -> None:
    async with connected(f"{base_url}/hub", protocol) as client:
        client.listen("Pushed")
        await client.signalr.send("Push", cast(Any, ["Pushed", {"n": 1}]))  # fire and forget
        assert await client.next_event() == ("Pushed", [{"n": 1}])
        completion = await client.invoke("Push", "Pushed", "second")
        assert completion.error is None
        assert await client.next_event() == ("Pushed", ["second"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_groups(base_url: str, protocol: str) -> None:
    hub = f"{base_url}/hub"
    async with connected(hub, protocol) as member, connected(hub, protocol) as other:
        member.listen("GroupMessage")
        other.listen("GroupMessage")
        await member.invoke("JoinGroup", "room")
        await other.invoke("SendToGroup", "room", "hi")
        assert await member.next_event() == ("GroupMessage", ["room", "hi"])
        # The server sends to the group before it completes SendToGroup: a message for
        # `other` would be queued ahead of its completion.
        other.assert_no_event()

        await member.invoke("LeaveGroup", "room")
        await other.invoke("SendToGroup", "room", "gone")
        await member.invoke("Echo", "after")  # anything sent to member came before this
        member.assert_no_event()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_server_to_client_stream(base_url: str, protocol: str) -> None:
    async with connected(f"{base_url}/hub", protocol) as client:
        done = anyio.Event()
        items: list[int] = []
        completions: list[CompletionMessage] = []

        async def on_next(item: Any) -> None:
            items.append(item)

        async def on_complete(message: Any) -> None:
            completions.append(message)
            done.set()

        await client.signalr.stream(
            "Counter", cast(Any, [5]), on_next=on_next, on_complete=on_complete
        )
        with anyio.fail_after(TIMEOUT):
            await done.wait()
        assert items == [0, 1, 2, 3, 4]
        assert completions[0].error is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_client_to_server_stream(base_url: str, protocol: str) -> None:
    async with connected(f"{base_url}/hub", protocol) as client:
        client.listen("Uploaded")
        async with client.signalr.client_stream("UploadToCaller") as stream:
            for item in ("a", "b", "c"):
                await stream.send(item)
        assert await client.next_event() == ("Uploaded", ["a,b,c"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_client_results(base_url: str, protocol: str) -> None:
    async with connected(f"{base_url}/hub", protocol) as client:
        client.listen("Answer")

        async def result(arguments: Any) -> str:
            return f"answer to {arguments[0]}"

        client.signalr.on("Result", result)
        await client.invoke("AskClient", "life")
        assert await client.next_event() == ("Answer", ["answer to life"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_bearer_token_header(base_url: str, protocol: str) -> None:
    async with httpx.AsyncClient() as http:
        token = (await http.get(f"{base_url}/token", params={"user": "alice"})).text
    headers = {"Authorization": f"Bearer {token}"}
    async with connected(f"{base_url}/authhub", protocol, headers=headers) as client:
        assert (await client.invoke("Whoami")).result == "alice"


async def test_refused_without_token(base_url: str) -> None:
    client = SignalRClient(f"{base_url}/authhub", retry_count=1, connection_timeout=TIMEOUT)
    with anyio.fail_after(TIMEOUT), pytest.raises(AuthorizationError):
        await client.run()


async def test_access_token_factory_comes_too_late(base_url: str) -> None:
    """pysignalr 1.3 sets the factory's token only after negotiate and the WebSocket upgrade.

    A server that authenticates the connection (ASP.NET's ``[Authorize]``, ours) refuses the
    negotiate with 401, so with pysignalr pass ``headers={"Authorization": "Bearer ..."}``.
    This test documents the difference listed in docs/COMPATIBILITY.md.
    """
    async with httpx.AsyncClient() as http:
        token = (await http.get(f"{base_url}/token")).text
    client = SignalRClient(
        f"{base_url}/authhub",
        retry_count=1,
        connection_timeout=TIMEOUT,
        access_token_factory=lambda: token,
    )
    with anyio.fail_after(TIMEOUT), pytest.raises(AuthorizationError):
        await client.run()
