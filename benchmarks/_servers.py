"""The servers under test, each run by an ASGI server in its own process.

``python -m benchmarks._servers KIND PORT [ASGI]`` with KIND one of:

- ``echo``: a bare ASGI app (the ceiling). WebSocket: a text message starting with ``B`` is
  broadcast to every open socket; anything else is echoed back on the same socket with the same
  frame type. HTTP: ``GET /sse?id=X`` opens a Server-Sent Events stream and ``POST /send?id=X``
  sends its body back as one event on that stream (framed as the hub's SSE transport frames it),
  then answers 200.
- ``signalr_core``: ``BenchHub`` on a ``signalr_core.HubEndpoint`` mounted at ``/hub`` in a
  Starlette app (``endpoint.routes("/hub")``).
- ``signalr_core_root``: the same endpoint as the root ASGI app (no framework, like ``echo``).
- ``aiosignalr``: the same hub written against aiosignalr 0.1.1's server API at ``/hub``.
- ``signalr_core_redis``: ``signalr_core`` with ``RedisHubLifetimeManager`` (Redis at
  ``$BENCH_REDIS_URL``), so every broadcast goes through Redis pub/sub.

``$BENCH_SIGNALR_CORE_PATH`` (a directory containing a ``signalr_core`` package) makes the
server import that copy instead, to compare two versions on the same machine.

Every hub offers ``Echo(message) -> message`` and ``Broadcast(message)`` (all clients receive
``Receive(message)``).

ASGI is the ASGI server, one of :data:`ASGI_SERVERS` (default ``hypercorn``):

- ``hypercorn``: hypercorn on the standard asyncio event loop (``exporter-api serve`` today);
- ``hypercorn-uvloop``: the same on uvloop (``hypercorn --worker-class uvloop``);
- ``uvicorn``: uvicorn as ``uvicorn[standard]`` runs it: uvloop, httptools and ``websockets``.

Every app runs on the chosen server with the same settings, so with one ASGI server the only
difference is the application. ``$BENCH_PROFILE=FILE`` runs the server under cProfile and writes
the stats to FILE when it stops (``python -m pstats FILE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from hypercorn.asyncio import serve
from hypercorn.config import Config

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ASGI_SERVERS = ("hypercorn", "hypercorn-uvloop", "uvicorn")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def sse_event(data: bytes) -> bytes:
    """One SSE event, framed as ``signalr_core.transports.sse`` frames it."""
    return b"".join([*(b"data: " + line + b"\r\n" for line in data.split(b"\n")), b"\r\n"])


async def _bare_lifespan(receive: Receive, send: Send) -> None:
    """An ASGI lifespan with nothing to start or stop: each step acknowledged."""
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _bare_sse(scope: Scope, receive: Receive, send: Send, streams: dict[str, Any]) -> None:
    """``GET /sse?id=X`` (an event stream) and ``POST /send?id=X`` (one event on it)."""
    stream_id = parse_qs(scope["query_string"].decode()).get("id", [""])[0]
    if scope["method"] == "GET" and scope["path"] == "/sse":
        events: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)  # bounded, as the hub's
        streams[stream_id] = events
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": b":\r\n", "more_body": True})

        async def pump() -> None:
            while True:
                body = await events.get()
                await send({"type": "http.response.body", "body": body, "more_body": True})

        try:
            async with asyncio.TaskGroup() as tg:
                pumping = tg.create_task(pump())
                while (await receive())["type"] != "http.disconnect":
                    pass
                pumping.cancel()
        finally:
            streams.pop(stream_id, None)
        return
    if scope["method"] == "POST" and scope["path"] == "/send" and stream_id in streams:
        chunks = []
        while True:
            event = await receive()
            chunks.append(event.get("body", b""))
            if not event.get("more_body"):
                break
        await streams[stream_id].put(sse_event(b"".join(chunks)))
        headers = [(b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def make_echo_app() -> ASGIApp:
    """The ceiling: WebSocket echo, a naive broadcast and POST/SSE echo, no framework at all."""
    sockets: set[Send] = set()
    streams: dict[str, asyncio.Queue[bytes]] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _bare_lifespan(receive, send)
            return
        if scope["type"] == "http":
            await _bare_sse(scope, receive, send, streams)
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
            await _bare_lifespan(receive, send)
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


def _hypercorn_config(port: int) -> Config:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.backlog = 2048
    return config


async def _serve_hypercorn(app: ASGIApp, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, _hypercorn_config(port), shutdown_trigger=stop.wait)  # type: ignore[arg-type]


async def _serve_uvicorn(app: ASGIApp, port: int) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets",
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the stop signal once it has stopped, which would kill the process
    # before BENCH_PROFILE is written: stop it through should_exit instead.
    server.capture_signals = contextlib.nullcontext  # type: ignore[assignment,method-assign]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, setattr, server, "should_exit", True)
    await server.serve()


def run(asgi: str, app: ASGIApp, port: int) -> None:
    """Serve ``app`` on ``port`` with the ASGI server ``asgi`` until SIGTERM/SIGINT."""
    if asgi not in ASGI_SERVERS:
        raise SystemExit(f"unknown ASGI server {asgi!r}; one of {', '.join(ASGI_SERVERS)}")
    serving: Coroutine[Any, Any, None] = (
        _serve_uvicorn(app, port) if asgi == "uvicorn" else _serve_hypercorn(app, port)
    )
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if asgi != "hypercorn":
        import uvloop

        loop_factory = uvloop.new_event_loop
    profile_path = os.environ.get("BENCH_PROFILE")
    profiler = cProfile.Profile() if profile_path else None
    if profiler is not None:
        profiler.enable()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serving)
    finally:
        if profiler is not None and profile_path:
            profiler.disable()
            profiler.dump_stats(profile_path)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    baseline = os.environ.get("BENCH_SIGNALR_CORE_PATH")
    if baseline:
        # A/B runs: import signalr_core from another checkout (a directory holding it).
        sys.path.insert(0, baseline)
    kind, port = args[0], int(args[1])
    asgi = args[2] if len(args) > 2 else "hypercorn"
    run(asgi, FACTORIES[kind](), port)


if __name__ == "__main__":
    main()
