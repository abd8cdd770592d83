"""The hub that third-party Python clients (``pysignalr``, ``signalrcore``) are tested against.

Run as a process of its own, on hypercorn or uvicorn::

    python -m tests.clients.app --port 5000 [--server uvicorn]

Endpoints:

- ``/hub``: :class:`ClientsHub`, every transport, JSON and MessagePack.
- ``/authhub``: :class:`AuthHub`, only for a valid bearer token (header or ``access_token``).
- ``GET /token?user=NAME``: a new opaque access token for ``NAME`` (kept in memory).

Both clients send uploads as invocations without an id (their results are dropped), so
``UploadToCaller`` pushes what it read back to the caller: the test sees the upload arrive.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from signalr_core import (
    AuthRequest,
    Hub,
    HubEndpoint,
    HubException,
    HubOptions,
    Principal,
    hub_method,
)


class ClientsHub(Hub):
    """Echo, server push, groups, streams both ways, client results and errors."""

    @hub_method("Echo")
    def echo(self, message: str) -> str:
        return message

    @hub_method("Add")
    def add(self, a: int, b: int) -> int:
        return a + b

    @hub_method("Push")
    async def push(self, method: str, argument: Any) -> None:
        await self.clients.caller.send(method, argument)

    @hub_method("JoinGroup")
    async def join_group(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    @hub_method("LeaveGroup")
    async def leave_group(self, group: str) -> None:
        await self.groups.remove(self.context.connection_id, group)

    @hub_method("SendToGroup")
    async def send_to_group(self, group: str, message: str) -> None:
        await self.clients.group(group).send("GroupMessage", group, message)

    @hub_method("Counter")
    async def counter(self, count: int) -> AsyncIterator[int]:
        for i in range(count):
            yield i

    @hub_method("GatedCounter")
    async def gated_counter(self, count: int) -> AsyncIterator[int]:
        # Streams once the caller invokes OpenGate: signalrcore's ``stream()`` sends the
        # invocation before its ``subscribe()`` sets the callbacks, so items must wait.
        await self._gate().wait()
        for i in range(count):
            yield i

    @hub_method("OpenGate")
    def open_gate(self) -> None:
        self._gate().set()

    def _gate(self) -> anyio.Event:
        gate: anyio.Event = self.context.items.setdefault("gate", anyio.Event())
        return gate

    @hub_method("UploadToCaller")
    async def upload_to_caller(self, items: AsyncIterator[str]) -> str:
        text = ",".join([item async for item in items])
        await self.clients.caller.send("Uploaded", text)
        return text

    @hub_method("AskClient")
    async def ask_client(self, question: str) -> None:
        # A client result, then the answer pushed back: the caller's invocation of AskClient
        # may itself be fire-and-forget.
        answer = await self.clients.caller.invoke("Result", question, timeout=10)
        await self.clients.caller.send("Answer", answer)

    @hub_method("Fail")
    def fail(self, message: str) -> None:
        raise HubException(message)


class AuthHub(Hub):
    """Refuses anonymous connections; tells the caller who it is."""

    authorize = True

    @hub_method("Whoami")
    def whoami(self) -> str | None:
        return self.context.user_id


def create_app() -> Starlette:
    users_by_token: dict[str, str] = {}

    def authenticate(request: AuthRequest) -> Principal | None:
        user = users_by_token.get(request.access_token or "")
        return None if user is None else Principal(user_id=user)

    options = HubOptions(enable_detailed_errors=True)
    hub = HubEndpoint(ClientsHub, options=options)
    auth = HubEndpoint(AuthHub, options=options, authenticate=authenticate)

    async def token(request: Request) -> Response:
        issued = secrets.token_urlsafe(24)
        users_by_token[issued] = request.query_params.get("user", "testuser")
        return PlainTextResponse(issued)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with hub.lifespan(), auth.lifespan():
            yield

    return Starlette(
        routes=[
            Route("/token", token, methods=["GET"]),
            *hub.routes("/hub"),
            *auth.routes("/authhub"),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Hub for third-party Python client tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=("hypercorn", "uvicorn"), default="hypercorn")
    args = parser.parse_args(argv)
    app = create_app()
    if args.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=2
        )
    else:
        import asyncio

        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"{args.host}:{args.port}"]
        config.accesslog = None
        config.graceful_timeout = 1.0
        asyncio.run(serve(app, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
