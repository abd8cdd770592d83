"""Compatibility test server: the hubs the official ``@microsoft/signalr`` client is tested against.

A fixed contract (issue 2). It mirrors the ASP.NET Core functional-test server of the
TypeScript client (``dotnet/aspnetcore``: ``src/SignalR/clients/ts/FunctionalTests``), so the
behaviours its tests expect hold here too::

    python examples/compat_server.py --host 127.0.0.1 --port 5000 [--server uvicorn] [--loop uvloop]

Endpoints (detailed errors on everywhere):

- ``/testhub``: :class:`TestHub`, every transport and both protocols.
- ``/testhub-nowebsockets``: the same hub with Server-Sent Events and Long Polling only.
- ``/authorizedhub``: :class:`AuthorizedHub` (``Echo``), only with a valid JWT.
- ``/adminhub``: :class:`AdminHub`, for admins only: anonymous requests get 401, ``testuser``
  (authenticated, no admin role) 403; the refusals' bodies carry the reason (``Unauthorized``,
  ``Forbidden``) so the client's error reads as with Kestrel.
- ``GET /generateJwtToken``: an HS256 JWT for ``testuser`` as ``text/plain``; the key is
  generated at start, so tokens never outlive the process.
- ``/uncreatable``: :class:`UncreatableHub`, whose creation always fails.
- ``/statefulhub``: :class:`TestHub` with stateful reconnect allowed (ASP.NET 8's
  ``AllowStatefulReconnects``).
- ``/redirect``: its negotiate answers with a redirect to ``/testhub?numRedirects=N`` (``N``
  counts up from 1) and an access token.

Every negotiate answer sets the cookies ``testCookie=testValue``, ``testCookie2=testValue2`` and
an already expired ``expiredCookie`` (the client must not send that one back). CORS is open to
every origin, with credentials (the hubs echo the ``Origin``, as the ASP.NET test server does;
``/generateJwtToken`` does so for ``http://localhost:*`` and ``http://127.0.0.1:*``).

Beyond the ASP.NET test hub, :class:`TestHub` has methods used by the compatibility suite:
``ThrowHubException(message)`` (a :class:`~signalr_core.HubException`, whose text reaches
the client), ``StreamThrowMidway(message)`` (streams "a", then fails),
``SendToCaller(method, argument)``, ``AbortConnection()`` (``self.context.abort()``) and, for
client results, ``GetClientResult(message)`` (returns what the caller's ``Result(message)``
handler returns), ``GetClientResultFrom(connectionId, message)`` (asks another connection)
and ``GetClientResultWithTimeout(message, seconds)``; for stateful reconnect,
``SendNumbers(count)`` (calls the caller's ``Number(i)`` for ``i`` below ``count``, a few ms
apart, then returns ``count``), ``Increment()`` and ``GetCount()`` (a per-connection counter).
``POST /closeConnection?id=ID[&error=TEXT][&allowReconnect=true]`` closes a connection of any
hub from outside the hub (``hub_context.close_connection``) and answers ``{"closed": N}``.

For the client's ``HttpConnection`` (the transport layer, ASP.NET's ``ConnectionTests.ts``)
and the rest of its functional tests' server:

- ``/echo``: :class:`EchoConnectionHandler`, a raw connection handler
  (:class:`~signalr_core.ConnectionHandlerEndpoint`) echoing every chunk, over every transport.
  As the ASP.NET one, it ends the connection at once when the request lacks the ``testCookie``
  negotiate sets (the ``withCredentials: false`` test).
- ``/echoredirect...``: an HTTP 307 redirect to the same path and query under ``/echo``
  (the "follows HTTP redirects" test).
- ``/bad-negotiate...``: ``400`` with the body ``Some response from server`` (the client's
  error must contain the server's answer).
- ``GET /clientresult/{connectionId}``: asks that ``/testhub`` connection for a client result
  (``Result()``, through the hub context) and answers it as text, or the error's text
  (``Error: from callback``, ``Client didn't provide a result.``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import signal
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from signalr_core import (
    AuthRequest,
    ClientResultError,
    ClientUnavailableError,
    ConnectionContext,
    ConnectionHandler,
    ConnectionHandlerEndpoint,
    HttpTransportType,
    Hub,
    HubEndpoint,
    HubException,
    HubOptions,
    Principal,
    hub_method,
)

TOKEN_LIFETIME_SECONDS = 60
TEST_ORIGIN_PREFIXES = ("http://localhost:", "http://127.0.0.1:")


class InvalidOperationException(Exception):
    """Raised by the test hub like the ASP.NET hub raises .NET's InvalidOperationException.

    With detailed errors on, ASP.NET formats an error as ``"<text> <ExceptionType>: <message>"``;
    naming the class after the .NET type makes those texts identical.
    """


class CustomObject(msgspec.Struct, rename="pascal"):
    """``{"Name": ..., "Value": ...}`` (the ASP.NET server uses PascalCase property names)."""

    name: str
    value: int


class ComplexObject(msgspec.Struct, rename="pascal"):
    """The ASP.NET functional tests' ``ComplexObject`` with its .NET property names."""

    string: str
    int_array: list[int]
    byte_array: bytes
    guid: uuid.UUID
    date_time: dt.datetime


class TestHub(Hub):
    """The ASP.NET functional-test ``TestHub``, method for method."""

    @hub_method("Echo")
    def echo(self, message: str) -> str:
        return message

    @hub_method("GetCallerConnectionId")
    def get_caller_connection_id(self) -> str:
        return self.context.connection_id

    @hub_method("GetNumRedirects")
    def get_num_redirects(self) -> int:
        return int(self.context.query["numRedirects"])

    @hub_method("ThrowException")
    def throw_exception(self, message: str) -> None:
        raise InvalidOperationException(message)

    @hub_method("ThrowHubException")
    def throw_hub_exception(self, message: str) -> None:
        raise HubException(message)

    @hub_method("InvokeWithString")
    async def invoke_with_string(self, message: str) -> None:
        await self.clients.client(self.context.connection_id).send("Message", message)

    @hub_method("SendCustomObject")
    async def send_custom_object(self, custom_object: CustomObject) -> None:
        await self.clients.client(self.context.connection_id).send("CustomObject", custom_object)

    @hub_method("SendToCaller")
    async def send_to_caller(self, method: str, argument: str) -> None:
        await self.clients.caller.send(method, argument)

    @hub_method("Stream")
    async def stream_letters(self) -> AsyncIterator[str]:
        for letter in ("a", "b", "c"):
            yield letter

    @hub_method("InfiniteStream")
    async def infinite_stream(self) -> AsyncIterator[str]:
        connection_id = self.context.connection_id
        try:
            await anyio.sleep_forever()
            yield ""  # never reached: makes this an async generator that streams nothing
        finally:
            # Cancelled by the client: tell it, as the ASP.NET hub does from its token callback.
            # Shielded because the surrounding scope is being cancelled.
            with anyio.CancelScope(shield=True):
                await self.clients.client(connection_id).send("StreamCanceled")

    @hub_method("StreamingConcat")
    async def streaming_concat(self, stream: AsyncIterator[str]) -> str:
        parts = [item async for item in stream]
        return "".join(parts)

    @hub_method("EmptyStream")
    async def empty_stream(self) -> AsyncIterator[int]:
        return
        yield 0  # never reached: makes this an async generator

    @hub_method("StreamThrowException")
    def stream_throw_exception(self, message: str) -> AsyncIterator[str]:
        # Raises before any stream exists, like the C# method that throws instead of returning
        # its ChannelReader: an invocation error, not an error while streaming.
        raise InvalidOperationException(message)

    @hub_method("StreamThrowMidway")
    async def stream_throw_midway(self, message: str) -> AsyncIterator[str]:
        yield "a"
        raise InvalidOperationException(message)

    @hub_method("GetActiveTransportName")
    def get_active_transport_name(self) -> str:
        return str(self.context.transport)

    @hub_method("EchoComplexObject")
    def echo_complex_object(self, complex_object: ComplexObject) -> ComplexObject:
        return complex_object

    @hub_method("SendComplexObject")
    def send_complex_object(self) -> ComplexObject:
        return ComplexObject(
            byte_array=bytes([1, 2, 3]),
            date_time=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
            guid=uuid.UUID("00010203-0405-0607-0706-050403020100"),
            int_array=[1, 2, 3],
            string="hello world",
        )

    @hub_method("GetContentTypeHeader")
    def get_content_type_header(self) -> str | None:
        return self.context.headers.get("content-type")

    @hub_method("GetCookie")
    def get_cookie(self, cookie_name: str) -> str | None:
        return self.context.cookies.get(cookie_name)

    @hub_method("GetHeader")
    def get_header(self, header_name: str) -> str | None:
        # Header names are case-insensitive; the context keeps them lower-case.
        return self.context.headers.get(header_name.lower())

    @hub_method("GetClientResult")
    async def get_client_result(self, message: str) -> Any:
        return await self.clients.caller.invoke("Result", message)

    @hub_method("GetClientResultFrom")
    async def get_client_result_from(self, connection_id: str, message: str) -> Any:
        return await self.clients.client(connection_id).invoke("Result", message)

    @hub_method("GetClientResultWithTimeout")
    async def get_client_result_with_timeout(self, message: str, seconds: float) -> Any:
        return await self.clients.caller.invoke("Result", message, timeout=seconds)

    @hub_method("SendNumbers")
    async def send_numbers(self, count: int) -> int:
        for i in range(count):
            await self.clients.caller.send("Number", i)
            await anyio.sleep(0.005)
        return count

    @hub_method("Increment")
    def increment(self) -> None:
        self.context.items["count"] = self.context.items.get("count", 0) + 1

    @hub_method("GetCount")
    def get_count(self) -> int:
        count: int = self.context.items.get("count", 0)
        return count

    @hub_method("AbortConnection")
    def abort_connection(self) -> None:
        self.context.abort()

    @hub_method("JoinGroup")
    async def join_group(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    @hub_method("LeaveGroup")
    async def leave_group(self, group: str) -> None:
        await self.groups.remove(self.context.connection_id, group)

    @hub_method("SendToGroup")
    async def send_to_group(self, group: str, message: str) -> None:
        await self.clients.group(group).send("GroupMessage", group, message)


class AuthorizedHub(Hub):
    """ASP.NET's ``HubWithAuthorization``: anonymous connections are refused."""

    authorize = True

    @hub_method("Echo")
    def echo(self, message: str) -> str:
        return message


def is_admin_user(user: Principal) -> bool:
    """The hub policy: only users with the admin role."""
    return user.claims.get("role") == "admin"


class AdminHub(Hub):
    """A hub with a policy (ASP.NET's ``[Authorize(Roles = "admin")]``): ``testuser`` is
    authenticated but not an admin, so its negotiate is refused with 403."""

    authorize = staticmethod(is_admin_user)

    @hub_method("Echo")
    def echo(self, message: str) -> str:
        return message


class EchoConnectionHandler(ConnectionHandler):
    """ASP.NET's functional-test ``EchoConnectionHandler``: sends back what it receives."""

    async def on_connected(self, connection: ConnectionContext) -> None:
        # The 'withCredentials' tests send no cookie for cross-site requests: end at once.
        if "testCookie" not in connection.cookies:
            return
        async for data in connection:
            await connection.send(data)


class FunctionalTestPaths:
    """ASGI middleware answering two path prefixes before routing, as ASP.NET's test server.

    ``/echoredirect...`` and ``/bad-negotiate...`` (any method, any path below).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket"):
            if _has_prefix(path, "/echoredirect"):
                await _echo_redirect(scope, receive, send)
                return
            if _has_prefix(path, "/bad-negotiate"):
                await _bad_negotiate(scope, send)
                return
        await self.app(scope, receive, send)


def _has_prefix(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


async def _echo_redirect(scope: Scope, receive: Receive, send: Send) -> None:
    """``/echoredirect/...`` -> 307 to ``/echo/...`` with the same query (method kept)."""
    path = scope["path"].replace("echoredirect", "echo", 1)
    query = scope.get("query_string", b"").decode("latin-1")
    # Absolute: Node's EventSource (the SSE transport) cannot follow a relative Location.
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    host = dict(scope.get("headers", ())).get(b"host", b"localhost").decode("latin-1")
    location = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
    headers = [(b"location", location.encode()), (b"content-length", b"0")]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 307, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 307, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": b""})
        else:
            await send({"type": "websocket.close", "code": 1008})


async def _bad_negotiate(scope: Scope, send: Send) -> None:
    """Every request under ``/bad-negotiate``: 400 with a body the client must show."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = b"Some response from server"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class UncreatableHub(Hub):
    """ASP.NET's ``UncreatableHub``: its constructor needs a service that does not exist."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise InvalidOperationException(
            "Unable to resolve service for type 'System.Object' while attempting to activate "
            "'FunctionalTests.UncreatableHub'."
        )


@dataclass
class JwtIssuer:
    """HS256 tokens for ``testuser`` signed with a key generated at start."""

    key: OctKey = field(default_factory=lambda: OctKey.generate_key(256))
    lifetime_seconds: int = TOKEN_LIFETIME_SECONDS

    def issue(self, subject: str = "testuser") -> str:
        now = int(time.time())
        claims = {
            "sub": subject,
            "iss": "SignalRTestServer",
            "aud": "SignalRTests",
            "iat": now,
            "exp": now + self.lifetime_seconds,
        }
        return jwt.encode({"alg": "HS256"}, claims, self.key)

    def verify(self, token: str) -> str | None:
        """The token's subject, or ``None`` when the token is forged, malformed or expired."""
        try:
            decoded = jwt.decode(token, self.key, algorithms=["HS256"])
            jwt.JWTClaimsRegistry(exp={"essential": True}, sub={"essential": True}).validate(
                decoded.claims
            )
        except (JoseError, ValueError):
            return None
        subject = decoded.claims.get("sub")
        return subject if isinstance(subject, str) else None

    def authenticate(self, request: AuthRequest) -> Principal | None:
        """``HubEndpoint``'s authenticate hook: a principal for a valid bearer token."""
        token = request.access_token
        if not token:
            return None
        subject = self.verify(token)
        if subject is None:
            return None
        return Principal(user_id=subject)


NEGOTIATE_COOKIES = (
    ("set-cookie", "testCookie=testValue; Path=/"),
    ("set-cookie", "testCookie2=testValue2; Path=/"),
    ("set-cookie", "expiredCookie=doesntmatter; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/"),
)


def negotiate_cookies(request: AuthRequest) -> Sequence[tuple[str, str]]:
    """The functional tests' cookies, set on every negotiate answer (as ASP.NET's Startup)."""
    return NEGOTIATE_COOKIES


def create_app() -> Starlette:
    """The compat server's ASGI app; every resource lives in its lifespan."""
    issuer = JwtIssuer()
    redirects = itertools.count(1)

    def redirect_to_testhub(request: AuthRequest) -> tuple[str, str | None]:
        # The ASP.NET server takes the target from ?baseUrl=; default to this server's own URL.
        base = request.query.get("baseUrl") or f"http://{request.headers.get('host', 'localhost')}"
        return f"{base.rstrip('/')}/testhub?numRedirects={next(redirects)}", issuer.issue()

    def options(**overrides: Any) -> HubOptions:
        return HubOptions(
            enable_detailed_errors=True,
            allowed_origins=("http://localhost:9876",),  # the origin the cors scenario uses
            negotiate_headers=negotiate_cookies,
            **overrides,
        )

    testhub = HubEndpoint(TestHub, options=options(), authenticate=issuer.authenticate)
    nowebsockets = HubEndpoint(
        TestHub,
        options=options(
            transports=HttpTransportType.SERVER_SENT_EVENTS | HttpTransportType.LONG_POLLING
        ),
        authenticate=issuer.authenticate,
    )
    authorized = HubEndpoint(AuthorizedHub, options=options(), authenticate=issuer.authenticate)
    admin = HubEndpoint(AdminHub, options=options(), authenticate=issuer.authenticate)
    uncreatable = HubEndpoint(UncreatableHub, options=options())
    redirect = HubEndpoint(TestHub, options=options(negotiate_redirect=redirect_to_testhub))
    stateful = HubEndpoint(
        TestHub, options=options(allow_stateful_reconnect=True), authenticate=issuer.authenticate
    )
    endpoints = (testhub, nowebsockets, authorized, admin, uncreatable, redirect, stateful)
    echo = ConnectionHandlerEndpoint(EchoConnectionHandler(), options=options())

    async def generate_jwt_token(request: Request) -> Response:
        response = PlainTextResponse(issuer.issue())
        origin = request.headers.get("origin")
        if origin is not None and origin.startswith(TEST_ORIGIN_PREFIXES):
            # A simple GET: no preflight, only the allow headers (as ASP.NET's test server).
            response.headers["access-control-allow-origin"] = origin
            response.headers["access-control-allow-credentials"] = "true"
            response.headers["vary"] = "Origin"
        return response

    async def close_connection(request: Request) -> Response:
        # What a logout does: end a connection from outside any hub method.
        connection_id = request.query_params.get("id", "")
        closed = 0
        for endpoint in endpoints:
            closed += await endpoint.hub_context.close_connections(
                connection_ids=(connection_id,),
                error=request.query_params.get("error"),
                allow_reconnect=request.query_params.get("allowReconnect") == "true",
            )
        return Response(msgspec.json.encode({"closed": closed}), media_type="application/json")

    async def client_result(request: Request) -> Response:
        # ASP.NET: hubContext.Clients.Client(id).InvokeAsync<int>("Result"), its text or the
        # error's message.
        client = testhub.hub_context.clients.client(request.path_params["connection_id"])
        try:
            result = await client.invoke("Result", result_type=int, timeout=10)
        except (ClientResultError, ClientUnavailableError, TimeoutError) as exc:
            return PlainTextResponse(str(exc))
        return PlainTextResponse(str(result))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for endpoint in (*endpoints, echo):
                await stack.enter_async_context(endpoint.lifespan())
            yield

    app = Starlette(
        routes=[
            Route("/generateJwtToken", generate_jwt_token, methods=["GET"]),
            Route("/closeConnection", close_connection, methods=["POST"]),
            Route("/clientresult/{connection_id}", client_result, methods=["GET"]),
            *echo.routes("/echo"),
            *testhub.routes("/testhub"),
            *nowebsockets.routes("/testhub-nowebsockets"),
            *authorized.routes("/authorizedhub"),
            *admin.routes("/adminhub"),
            *uncreatable.routes("/uncreatable"),
            *redirect.routes("/redirect"),
            *stateful.routes("/statefulhub"),
        ],
        lifespan=lifespan,
        middleware=[Middleware(FunctionalTestPaths)],
    )
    app.state.hub_endpoints = (*endpoints, echo)
    return app


async def _serve(host: str, port: int) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 5.0
    app = create_app()
    endpoints: tuple[HubEndpoint | ConnectionHandlerEndpoint, ...] = app.state.hub_endpoints
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        # Hypercorn waits for open requests (WebSockets, SSE streams, polls) before it ends the
        # lifespan, so tell clients to reconnect later (Close with allowReconnect) first.
        await asyncio.gather(*(endpoint.shutdown() for endpoint in endpoints))

    await serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]


async def _serve_uvicorn(host: str, port: int) -> None:
    import uvicorn

    app = create_app()
    endpoints: tuple[HubEndpoint, ...] = app.state.hub_endpoints
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def handle_exit(sig: int, frame: Any) -> None:
        # uvicorn calls this from its signal handler; as with hypercorn, tell clients to
        # reconnect later before uvicorn closes sockets and waits for open requests.
        loop.call_soon_threadsafe(stop.set)

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await stop.wait()
        await asyncio.gather(*(endpoint.shutdown() for endpoint in endpoints))
        server.should_exit = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--server", choices=("hypercorn", "uvicorn"), default="hypercorn")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop (uvloop: as `hypercorn --worker-class uvloop` or uvicorn[standard])",
    )
    args = parser.parse_args(argv)
    serve = _serve_uvicorn if args.server == "uvicorn" else _serve
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
