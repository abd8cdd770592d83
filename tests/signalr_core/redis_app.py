"""A hub served through the Redis backplane, for the scale-out tests (one process per server).

``python -m tests.signalr_core.redis_app --port P --redis URL --hub-name NAME``

The access token is the user id (test only). ``POST /notify?message=M`` pushes ``Notify(M)`` to
every client through ``endpoint.hub_context`` (as the export engine does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from signalr_core import Hub, HubEndpoint, Principal, hub_method
from signalr_core.auth import AuthRequest
from signalr_core.redis import RedisHubLifetimeManager


class ScaleHub(Hub):
    @hub_method("GetConnectionId")
    def get_connection_id(self) -> str:
        return self.context.connection_id

    @hub_method("SendAll")
    async def send_all(self, message: str) -> None:
        await self.clients.all.send("All", message)

    @hub_method("AddToGroup")
    async def add_to_group(self, connection_id: str, group: str) -> None:
        await self.groups.add(connection_id, group)

    @hub_method("SendToGroup")
    async def send_to_group(self, group: str, message: str) -> None:
        await self.clients.group(group).send("Group", group, message)

    @hub_method("SendToUser")
    async def send_to_user(self, user_id: str, message: str) -> None:
        await self.clients.user(user_id).send("User", message)

    @hub_method("SendToConnection")
    async def send_to_connection(self, connection_id: str, message: str) -> None:
        await self.clients.client(connection_id).send("Direct", message)


def authenticate(request: AuthRequest) -> Principal | None:
    return Principal(user_id=request.access_token) if request.access_token else None


def create_app(redis_url: str, hub_name: str) -> Starlette:
    manager = RedisHubLifetimeManager(redis_url, hub_name=hub_name)
    endpoint = HubEndpoint(ScaleHub, authenticate=authenticate, lifetime_manager=manager)

    async def notify(request: Request) -> PlainTextResponse:
        await endpoint.hub_context.clients.all.send("Notify", request.query_params["message"])
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with endpoint.lifespan():
            yield

    return Starlette(
        routes=[Route("/notify", notify, methods=["POST"]), *endpoint.routes("/hub")],
        lifespan=lifespan,
    )


async def _serve(app: Starlette, port: int) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--hub-name", required=True)
    args = parser.parse_args()
    asyncio.run(_serve(create_app(args.redis, args.hub_name), args.port))


if __name__ == "__main__":
    main()
