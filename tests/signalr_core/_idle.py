"""Idle WebSocket connections driven in process, for memory measurements.

Each connection is one call of an ASGI app with a scripted ``receive``: ``websocket.connect``,
optionally the JSON handshake, then nothing until the measurement ends (the disconnect). No
sockets and no server: what is measured is the application's own state per connection. The
bare app (:func:`bare_app`) gets the same calls, so ``hub - bare`` is the hub's share.

Used by ``tests/signalr_core/test_memory.py`` (bounds) and ``benchmarks/memory_bench.py``
(the breakdown printed next to the RSS figures).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

HANDSHAKE = '{"protocol":"json","version":1}\x1e'


class IdleSocket:
    """The client side of one in-process WebSocket that goes quiet after its first messages."""

    def __init__(self, *, handshake: bool) -> None:
        loop = asyncio.get_running_loop()
        self._script: list[Message] = [{"type": "websocket.connect"}]
        if handshake:
            self._script.append({"type": "websocket.receive", "text": HANDSHAKE})
        self.idle: asyncio.Future[None] = loop.create_future()  # the app waits for more input
        self._hang_up: asyncio.Future[None] = loop.create_future()
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self._script:
            return self._script.pop(0)
        if not self.idle.done():
            self.idle.set_result(None)
        await self._hang_up
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def hang_up(self) -> None:
        if not self._hang_up.done():
            self._hang_up.set_result(None)


def scope() -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/hub",
        "raw_path": b"/hub",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"upgrade", b"websocket")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
    }


def bare_app() -> ASGIApp:
    """A bare ASGI WebSocket app: accept, then echo until the client leaves."""

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text") or ""})

    return app


@dataclass
class IdleMeasurement:
    connections: int
    bytes_per_connection: float
    tasks_per_connection: float
    top: list[tuple[str, float]]  # (source line, bytes per connection), largest first


async def settle() -> None:
    """Let every task that can run, run (no timing: a bounded number of loop turns)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def measure_idle(
    app: ASGIApp, count: int, *, handshake: bool, top: int = 0
) -> IdleMeasurement:
    """Open ``count`` idle connections on ``app``; bytes and tasks each one holds meanwhile."""
    sockets = [IdleSocket(handshake=handshake) for _ in range(count)]
    tasks_before = len(asyncio.all_tasks())
    gc.collect()
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot() if top else None
        baseline = tracemalloc.get_traced_memory()[0]
        calls = [asyncio.ensure_future(app(scope(), s.receive, s.send)) for s in sockets]
        for socket in sockets:
            await socket.idle
        await settle()
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - baseline
        tasks = len(asyncio.all_tasks()) - tasks_before
        lines: list[tuple[str, float]] = []
        if before is not None:
            stats = tracemalloc.take_snapshot().compare_to(before, "lineno")
            for stat in stats[:top]:
                frame = stat.traceback[0]
                lines.append((f"{frame.filename}:{frame.lineno}", stat.size_diff / count))
    finally:
        tracemalloc.stop()
    for socket in sockets:
        socket.hang_up()
    await asyncio.gather(*calls, return_exceptions=True)
    return IdleMeasurement(count, used / count, tasks / count, lines)
