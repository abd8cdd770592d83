"""A hub served through the Redis backplane, for the scale-out tests (one process per server).

``python -m tests.signalr_core.redis_app --port P --redis URL --hub-name NAME``

The access token is the user id (test only). Through ``endpoint.hub_context`` (outside any hub,
as the export engine does):

- ``POST /notify?message=M`` pushes ``Notify(M)`` to every client;
- ``POST /invoke?connection_id=C&method=M&args=JSON_LIST&timeout=S`` asks connection ``C``
  (on any server) for a client result converted to ``int``; answers
  ``{"result": R}`` or ``{"error": "<exception class>", "message": "<text>"}``;
- ``POST /close_user?user=U&error=E`` closes user ``U``'s connections on every server and
  answers ``{"closed": <how many were on this server>}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from signalr_core import Hub, HubEndpoint, Principal, SignalRError, hub_method
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

    async def invoke(request: Request) -> JSONResponse:
        params = request.query_params
        client = endpoint.hub_context.clients.client(params["connection_id"])
        try:
            result = await client.invoke(
                params["method"],
                *json.loads(params.get("args", "[]")),
                result_type=int,
                timeout=float(params.get("timeout", "5")),
            )
        except (SignalRError, TimeoutError) as exc:
            return JSONResponse({"error": type(exc).__name__, "message": str(exc)})
        return JSONResponse({"result": result})

    async def close_user(request: Request) -> JSONResponse:
        params = request.query_params
        closed = await endpoint.hub_context.close_user(params["user"], error=params.get("error"))
        return JSONResponse({"closed": closed})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with endpoint.lifespan():
            yield

    return Starlette(
        routes=[
            Route("/notify", notify, methods=["POST"]),
            Route("/invoke", invoke, methods=["POST"]),
            Route("/close_user", close_user, methods=["POST"]),
            *endpoint.routes("/hub"),
        ],
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
