"""Shared helpers for signalr_core's server tests: a real hypercorn server and raw clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import httpx
import msgspec
from hypercorn.asyncio import serve
from hypercorn.config import Config
from websockets.asyncio.client import ClientConnection, connect

from signalr_core import Hub, HubException, hub_method
from tests.services import free_port

RS = "\x1e"


@contextlib.asynccontextmanager
async def running_server(
    app: Any, *, before_shutdown: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` (handling its own lifespan) with hypercorn on a free port.

    The server runs in its own thread and event loop, so fixtures may start it in one task and
    stop it in another. ``before_shutdown`` runs in the server's loop when the test ends,
    before hypercorn stops accepting requests.
    """
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 0.5
    config.accesslog = None
    config.errorlog = None
    started = threading.Event()
    state: dict[str, Any] = {}

    async def trigger() -> None:
        await state["stop"].wait()
        if before_shutdown is not None:
            await before_shutdown()

    async def main() -> None:
        state["loop"] = asyncio.get_running_loop()
        state["stop"] = asyncio.Event()
        started.set()
        await serve(app, config, shutdown_trigger=trigger)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    with anyio.fail_after(10):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.02)
            else:
                await stream.aclose()
                break
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        started.wait()
        state["loop"].call_soon_threadsafe(state["stop"].set)
        await anyio.to_thread.run_sync(thread.join, 15)


def frame(message: dict[str, Any]) -> str:
    return json.dumps(message) + RS


def parse_frames(data: str) -> list[dict[str, Any]]:
    return [json.loads(part) for part in data.split(RS) if part]


class JsonWsClient:
    """A minimal JSON-protocol client over a raw WebSocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(frame(message))

    async def receive(self, *, skip_pings: bool = True) -> dict[str, Any]:
        while True:
            while self.pending:
                message = self.pending.pop(0)
                if skip_pings and message.get("type") == 6:
                    continue
                return message
            with anyio.fail_after(10):
                data = await self.ws.recv()
            assert isinstance(data, str), "JSON must arrive in text frames"
            self.pending.extend(parse_frames(data))

    async def invoke(self, target: str, *args: Any, invocation_id: str = "1") -> dict[str, Any]:
        await self.send(
            {"type": 1, "invocationId": invocation_id, "target": target, "arguments": list(args)}
        )
        others: list[dict[str, Any]] = []
        while True:
            message = await self.receive()
            if message.get("type") == 3 and message.get("invocationId") == invocation_id:
                self.pending[:0] = others  # messages that arrived first stay first
                return message
            others.append(message)


@contextlib.asynccontextmanager
async def json_ws(url: str, **kwargs: Any) -> AsyncIterator[JsonWsClient]:
    """Connect over WebSockets (skipNegotiation unless ``url`` has an id) and handshake."""
    ws_url = url.replace("http://", "ws://", 1)
    async with connect(ws_url, **kwargs) as ws:
        await ws.send(frame({"protocol": "json", "version": 1}))
        with anyio.fail_after(10):
            answer = await ws.recv()
        assert isinstance(answer, str), "the JSON handshake answer arrives in a text frame"
        first, _, rest = answer.partition(RS)
        assert first == "{}", answer
        client = JsonWsClient(ws)
        client.pending.extend(parse_frames(rest))
        yield client


async def negotiate(client: httpx.AsyncClient, url: str, version: int = 1) -> dict[str, Any]:
    response = await client.post(f"{url}/negotiate?negotiateVersion={version}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- a hub exercising most features -----------------------------------------------------------


class Item(msgspec.Struct):
    name: str
    count: int


class FeatureHub(Hub):
    """Used by several test modules."""

    def echo(self, message: str) -> str:
        return message

    async def add(self, a: int, b: int) -> int:
        return a + b

    def huge(self) -> int:
        return 2**70  # MessagePack cannot encode it

    def void(self) -> None:
        return None

    def describe(self, item: Item) -> str:
        return f"{item.name}x{item.count}"

    async def counter(self, count: int) -> AsyncIterator[int]:
        for i in range(count):
            yield i

    async def forever(self) -> AsyncIterator[int]:
        i = 0
        try:
            while True:
                yield i
                i += 1
                await anyio.sleep(0.01)
        finally:
            await self.clients.caller.send("StreamCanceled")

    async def broken_stream(self) -> AsyncIterator[int]:
        yield 1
        raise HubException("stream broke")

    async def concat(self, stream: AsyncIterator[str]) -> str:
        return "".join([item async for item in stream])

    async def sum_upload(self, prefix: str, numbers: AsyncIterator[int]) -> str:
        total = 0
        async for number in numbers:
            total += number
        return f"{prefix}{total}"

    def hub_error(self, message: str) -> None:
        raise HubException(message)

    def crash(self) -> None:
        raise ValueError("secret detail")

    async def sleep(self, seconds: float) -> str:
        await anyio.sleep(seconds)
        return "slept"

    async def notify_caller(self, text: str) -> None:
        await self.clients.caller.send("Notified", text)

    async def join(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def leave(self, group: str) -> None:
        await self.groups.remove(self.context.connection_id, group)

    async def to_group(self, group: str, message: str) -> None:
        await self.clients.group(group).send("GroupMessage", group, message)

    async def to_others(self, message: str) -> None:
        await self.clients.others.send("OthersMessage", message)

    async def to_all(self, message: str) -> None:
        await self.clients.all.send("AllMessage", message)

    def whoami(self) -> str | None:
        return self.context.user_id

    def get_context(self) -> dict[str, Any]:
        return {
            "connectionId": self.context.connection_id,
            "transport": self.context.transport,
            "header": self.context.headers.get("x-test"),
            "query": self.context.query.get("q"),
            "queryValues": {k: list(v) for k, v in self.context.query_values.items()},
            "cookie": self.context.cookies.get("c"),
            "user": self.context.user_id,
        }

    def remember(self, value: str) -> None:
        self.context.items["value"] = value

    def recall(self) -> str | None:
        value: str | None = self.context.items.get("value")
        return value

    @hub_method("Secret", authorize=True)
    def secret(self) -> str:
        return "classified"

    @hub_method("ExplicitName")
    def some_python_name(self) -> str:
        return "explicit"
