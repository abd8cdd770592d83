"""The servers under test, each run by hypercorn in its own process.

``python -m benchmarks._servers KIND PORT`` with KIND one of:

- ``echo``: a bare ASGI WebSocket app (the ceiling). A text message starting with ``B`` is
  broadcast to every open socket; anything else is echoed back on the same socket with the same
  frame type.
- ``signalr_core``: ``BenchHub`` on a ``signalr_core.HubEndpoint`` mounted at ``/hub`` in a
  Starlette app (``endpoint.routes("/hub")``).
- ``signalr_core_root``: the same endpoint as the root ASGI app (no framework, like ``echo``).
- ``aiosignalr``: the same hub written against aiosignalr 0.1.1's server API at ``/hub``.
- ``signalr_core_redis``: ``signalr_core`` with ``RedisHubLifetimeManager`` (Redis at
  ``$BENCH_REDIS_URL``), so every broadcast goes through Redis pub/sub.

``$BENCH_SIGNALR_CORE_PATH`` (a directory containing a ``signalr_core`` package) makes the
server import that copy instead, to compare two versions on the same machine.

Every hub offers ``Echo(message) -> message`` and ``Broadcast(message)`` (all clients receive
``Receive(message)``). All three run on the same server (hypercorn, asyncio loop) with the same
settings, so the only difference is the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def make_echo_app() -> ASGIApp:
    """The ceiling: WebSocket echo plus a naive broadcast, no framework at all."""
    sockets: set[Send] = set()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        sockets.add(send)
        try:
            while True:
                event = await receive()
                if event["type"] == "websocket.disconnect":
                    return
                text = event.get("text")
                if text is None:
                    await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})
                elif text.startswith("B"):
                    out = {"type": "websocket.send", "text": text}
                    for target in list(sockets):
                        with contextlib.suppress(Exception):
                            await target(out)
                else:
                    await send({"type": "websocket.send", "text": text})
        finally:
            sockets.discard(send)

    return app


def make_signalr_core_app(redis_url: str | None = None, *, root: bool = False) -> ASGIApp:
    import structlog
    from starlette.applications import Starlette

    from signalr_core import Hub, HubEndpoint, hub_method
    from signalr_core.redis import RedisHubLifetimeManager

    class BenchHub(Hub):
        @hub_method("Echo")
        def echo(self, message: str) -> str:
            return message

        @hub_method("Broadcast")
        async def broadcast(self, message: str) -> None:
            await self.clients.all.send("Receive", message)

    # As in production: warnings and errors only (the default prints every connect/disconnect
    # through structlog's console renderer, ~0.4 ms each).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    manager = RedisHubLifetimeManager(redis_url, hub_name="bench") if redis_url else None
    endpoint = HubEndpoint(BenchHub, lifetime_manager=manager)
    if root:
        return endpoint  # the endpoint as the root ASGI app (it answers lifespan itself)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with endpoint.lifespan():
            yield

    return Starlette(routes=[*endpoint.routes("/hub")], lifespan=lifespan)


def make_aiosignalr_app() -> ASGIApp:
    from aiosignalr.server import Hub, SignalRServer

    class BenchHub(Hub):  # type: ignore[misc]
        async def echo(self, message: str) -> str:
            return message

        async def broadcast(self, message: str) -> None:
            await self.clients.all_.send("Receive", message)

    server = SignalRServer(BenchHub)  # logs through stdlib logging: WARNING by default
    inner: ASGIApp = server.asgi_app(path="/hub")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # aiosignalr's ASGI app ignores lifespan
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await inner(scope, receive, send)

    return app


def make_signalr_core_redis_app() -> ASGIApp:
    """signalr_core with the Redis backplane (``BENCH_REDIS_URL``): every send via Redis."""
    return make_signalr_core_app(os.environ["BENCH_REDIS_URL"])


def make_signalr_core_root_app() -> ASGIApp:
    """``signalr_core`` with no framework around it, as the bare app has none."""
    return make_signalr_core_app(root=True)


FACTORIES: dict[str, Callable[[], ASGIApp]] = {
    "echo": make_echo_app,
    "signalr_core": make_signalr_core_app,
    "signalr_core_root": make_signalr_core_root_app,
    "aiosignalr": make_aiosignalr_app,
    "signalr_core_redis": make_signalr_core_redis_app,
}


async def _serve(app: ASGIApp, port: int) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.backlog = 2048
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    baseline = os.environ.get("BENCH_SIGNALR_CORE_PATH")
    if baseline:
        # A/B runs: import signalr_core from another checkout (a directory holding it).
        sys.path.insert(0, baseline)
    kind, port = args[0], int(args[1])
    app = FACTORIES[kind]()
    asyncio.run(_serve(app, port))


if __name__ == "__main__":
    main()
