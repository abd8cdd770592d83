"""A small Starlette app with one hub, for the Node smoke test (``--port``)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import anyio
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette

from signalr_core import Hub, HubEndpoint, HubException, HubOptions


class SmokeHub(Hub):
    def echo(self, message: str) -> str:
        return message

    async def counter(self, count: int) -> AsyncIterator[int]:
        for i in range(count):
            yield i

    async def concat(self, stream: AsyncIterator[str]) -> str:
        return "".join([item async for item in stream])

    async def ping_me(self, text: str) -> None:
        await self.clients.caller.send("Pong", text)

    async def join_group(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def send_to_group(self, group: str, message: str) -> None:
        await self.clients.group(group).send("GroupMessage", group, message)

    def transport_name(self) -> str:
        return self.context.transport

    def fail(self) -> None:
        raise HubException("boom")


def build_app() -> Starlette:
    endpoint = HubEndpoint(SmokeHub, options=HubOptions(enable_detailed_errors=True))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with endpoint.lifespan():
            yield

    return Starlette(routes=endpoint.routes("/hubs/smoke"), lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.graceful_timeout = 0.5
    config.accesslog = None
    anyio.run(serve, build_app(), config)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
