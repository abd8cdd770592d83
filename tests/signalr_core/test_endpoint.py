"""The endpoint: negotiate, routing statuses, lifespan, keep-alive, timeouts, limits."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import pytest
from anyio.abc import SocketAttribute
from starlette.applications import Starlette
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from signalr_core import AuthRequest, HttpTransportType, HubEndpoint, HubOptions
from tests.services import async_wait_until
from tests.signalr_core._hub_server import (
    FeatureHub,
    frame,
    json_ws,
    negotiate,
    parse_frames,
    running_server,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with running_server(HubEndpoint(FeatureHub)) as base:
        yield base


async def test_negotiate_v1_and_v0(url: str) -> None:
    async with httpx.AsyncClient() as http:
        v1 = await negotiate(http, url, 1)
        assert v1["negotiateVersion"] == 1
        assert v1["connectionId"] != v1["connectionToken"]
        assert len(v1["connectionId"]) == 22
        assert v1["availableTransports"] == [
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ]
        assert "useStatefulReconnect" not in v1
        assert "ProtocolVersion" not in v1
        v0 = (await http.post(f"{url}/negotiate")).json()
        assert "connectionToken" not in v0
        assert v0["negotiateVersion"] == 0
        newer = await negotiate(http, url, 7)
        assert newer["negotiateVersion"] == 1
        bad = await http.post(f"{url}/negotiate?negotiateVersion=x")
        assert bad.json() == {"error": "The client requested a non-integer protocol version."}
        wrong_method = await http.get(f"{url}/negotiate")
        assert wrong_method.status_code == 405


async def test_v1_token_is_the_transport_id_and_connection_id_is_public(url: str) -> None:
    async with httpx.AsyncClient() as http:
        body = await negotiate(http, url)
        by_id = await http.get(url, params={"id": body["connectionId"]})
        assert by_id.status_code == 404
        async with json_ws(f"{url}?id={body['connectionToken']}") as client:
            context = (await client.invoke("GetContext"))["result"]
            assert context["connectionId"] == body["connectionId"]


async def test_v0_uses_the_connection_id(url: str) -> None:
    async with httpx.AsyncClient() as http:
        body = (await http.post(f"{url}/negotiate")).json()
        async with json_ws(f"{url}?id={body['connectionId']}") as client:
            assert (await client.invoke("Echo", "v0"))["result"] == "v0"


async def test_transport_statuses(url: str) -> None:
    async with httpx.AsyncClient() as http:
        missing = await http.get(url)
        assert (missing.status_code, missing.text) == (400, "Connection ID required")
        unknown = await http.get(url, params={"id": "nope"})
        assert (unknown.status_code, unknown.text) == (404, "No Connection with that ID")
        assert (await http.post(url, params={"id": "nope"}, content=b"x")).status_code == 404
        assert (await http.delete(url, params={"id": "nope"})).status_code == 404
        assert (await http.put(url, params={"id": "nope"})).status_code == 405
        body = await negotiate(http, url)
        token = body["connectionToken"]
        first_poll = await http.get(url, params={"id": token})
        assert first_poll.status_code == 200
        sse = await http.get(url, params={"id": token}, headers={"accept": "text/event-stream"})
        assert (sse.status_code, sse.text) == (400, "Cannot change transports mid-connection")
        await http.delete(url, params={"id": token})


async def test_second_persistent_transport_is_a_conflict(url: str) -> None:
    async with httpx.AsyncClient() as http:
        token = (await negotiate(http, url))["connectionToken"]
        async with json_ws(f"{url}?id={token}"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"{url.replace('http', 'ws')}?id={token}"):
                    pass
            assert refused.value.response.status_code == 409
            post = await http.post(url, params={"id": token}, content=b"{}\x1e")
            assert post.status_code == 405
            delete = await http.delete(url, params={"id": token})
            assert (delete.status_code, delete.text) == (
                400,
                "Cannot terminate this connection using the DELETE endpoint.",
            )


async def test_disabled_transports() -> None:
    options = HubOptions(transports=HttpTransportType.LONG_POLLING)
    async with (
        running_server(HubEndpoint(FeatureHub, options=options)) as base,
        httpx.AsyncClient() as http,
    ):
        body = await negotiate(http, base)
        assert [t["transport"] for t in body["availableTransports"]] == ["LongPolling"]
        sse = await http.get(
            base,
            params={"id": body["connectionToken"]},
            headers={"accept": "text/event-stream"},
        )
        assert (sse.status_code, sse.text) == (
            404,
            "ServerSentEvents transport not supported by this end point type",
        )
        with pytest.raises(InvalidStatus) as refused:
            async with connect(base.replace("http", "ws")):
                pass
        assert refused.value.response.status_code == 404


async def test_stateful_reconnect_is_advertised_only_when_enabled_and_asked() -> None:
    options = HubOptions(allow_stateful_reconnect=True)
    async with (
        running_server(HubEndpoint(FeatureHub, options=options)) as base,
        httpx.AsyncClient() as http,
    ):
        asked = await http.post(f"{base}/negotiate?negotiateVersion=1&useStatefulReconnect=true")
        assert asked.json()["useStatefulReconnect"] is True
        not_asked = await negotiate(http, base)
        assert "useStatefulReconnect" not in not_asked


async def test_redirect_and_header_hooks() -> None:
    def redirect(request: AuthRequest) -> tuple[str, str | None] | None:
        if request.query.get("go") == "1":
            return "http://elsewhere/hub", "tok"
        return None

    def cookies(request: AuthRequest) -> list[tuple[str, str]]:
        return [("set-cookie", "a=1; Path=/"), ("set-cookie", "b=2; Path=/")]

    options = HubOptions(negotiate_redirect=redirect, negotiate_headers=cookies)
    async with (
        running_server(HubEndpoint(FeatureHub, options=options)) as base,
        httpx.AsyncClient() as http,
    ):
        moved = await http.post(f"{base}/negotiate?negotiateVersion=1&go=1")
        assert moved.json() == {"url": "http://elsewhere/hub", "accessToken": "tok"}
        normal = await http.post(f"{base}/negotiate?negotiateVersion=1")
        assert "connectionId" in normal.json()
        assert normal.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]


async def test_context_carries_request_details(url: str) -> None:
    async with json_ws(
        f"{url}?q=query-value",
        additional_headers={"X-Test": "header-value", "Cookie": "c=cookie-value"},
    ) as client:
        context = (await client.invoke("GetContext"))["result"]
    assert context["transport"] == "WebSockets"
    assert (context["header"], context["query"], context["cookie"]) == (
        "header-value",
        "query-value",
        "cookie-value",
    )


async def test_context_keeps_every_value_of_a_repeated_query_parameter(url: str) -> None:
    async with json_ws(f"{url}?q=a&access_token=secret&q=b") as client:
        context = (await client.invoke("GetContext"))["result"]
    assert context["query"] == "b"  # last value wins
    assert context["queryValues"] == {"q": ["a", "b"]}  # never the access token


async def test_keep_alive_pings_and_client_timeout() -> None:
    options = HubOptions(keep_alive_interval=0.2, client_timeout=1.0)
    async with (
        running_server(HubEndpoint(FeatureHub, options=options)) as base,
        json_ws(base) as client,
    ):
        assert await client.receive(skip_pings=False) == {"type": 6}
        started = time.monotonic()
        # Keep sending pings for a while: the server must not time out.
        for _ in range(4):
            await client.send({"type": 6})
            await anyio.sleep(0.4)
        assert (await client.invoke("Echo", "alive"))["result"] == "alive"
        # Then stay silent: the server drops the connection after about a second.
        with anyio.fail_after(5):
            while True:
                try:
                    await client.receive(skip_pings=True)
                except Exception:
                    break
        assert time.monotonic() - started >= 1.6


async def test_handshake_timeout() -> None:
    options = HubOptions(handshake_timeout=0.3)
    async with (
        running_server(HubEndpoint(FeatureHub, options=options)) as base,
        connect(base.replace("http", "ws")) as ws,
    ):
        with anyio.fail_after(5):
            answer = await ws.recv()
        assert answer == '{"error":"Handshake was canceled."}\x1e'


async def test_bad_handshake_answers_error() -> None:
    async with (
        running_server(HubEndpoint(FeatureHub)) as base,
        connect(base.replace("http", "ws")) as ws,
    ):
        await ws.send(frame({"protocol": "xml", "version": 1}))
        answer = await ws.recv()
        assert answer == '{"error":"The protocol \'xml\' is not supported."}\x1e'


async def test_graceful_shutdown_sends_close_with_allow_reconnect() -> None:
    endpoint = HubEndpoint(FeatureHub)
    received: list[Any] = []

    async with running_server(endpoint, before_shutdown=endpoint.shutdown) as base:
        ws_cm = json_ws(base)
        client = await ws_cm.__aenter__()
    try:
        with anyio.fail_after(5):
            received.append(await client.receive())
    finally:
        with contextlib.suppress(Exception):
            await ws_cm.__aexit__(None, None, None)
    assert received == [{"type": 7, "allowReconnect": True}]


async def _silent_ws_client(port: int) -> anyio.abc.SocketStream:
    """A WebSocket client that completes the handshakes and then never reads."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    raw = stream.extra(SocketAttribute.raw_socket)  # noqa: S610 - anyio, not Django
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send(ws.send(Request(host="127.0.0.1", target="/")))
    ws.receive_data(await stream.receive())
    assert any(isinstance(event, AcceptConnection) for event in ws.events())
    await stream.send(ws.send(TextMessage(frame({"protocol": "json", "version": 1}))))
    return stream


async def test_slow_consumer_is_disconnected() -> None:
    aborted: list[str] = []
    options = HubOptions(
        max_buffered_messages=50, max_buffered_bytes=64 * 1024, on_slow_consumer=aborted.append
    )
    endpoint = HubEndpoint(FeatureHub, options=options)
    async with running_server(endpoint) as base:
        slow = await _silent_ws_client(int(base.rsplit(":", 1)[1]))
        async with json_ws(base) as fast:
            await async_wait_until(lambda: endpoint.connection_count == 2)
            # Far more than the socket buffers hold: the server's buffer for `slow` fills up.
            payload = "z" * 10_000
            for i in range(3000):
                await fast.send({"type": 1, "target": "ToOthers", "arguments": [payload]})
                if endpoint.connection_count == 1:
                    break
                if i % 50 == 0:
                    await anyio.lowlevel.checkpoint()
            await async_wait_until(lambda: endpoint.connection_count == 1)
            # The sender is unaffected.
            assert (await fast.invoke("Echo", "done"))["result"] == "done"
        await slow.aclose()
    assert aborted == ["WebSockets"]  # the observer heard of it once


async def test_lifespan_must_be_running() -> None:
    endpoint = HubEndpoint(FeatureHub)
    app = Starlette(routes=endpoint.routes("/hub"))  # lifespan never entered
    async with running_server(app) as base, httpx.AsyncClient() as http:
        response = await http.post(f"{base}/hub/negotiate?negotiateVersion=1")
        assert response.status_code == 503


async def test_starlette_routes_serve_bare_path_and_negotiate() -> None:
    endpoint = HubEndpoint(FeatureHub)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with endpoint.lifespan():
            yield

    app = Starlette(routes=endpoint.routes("/hubs/feature"), lifespan=lifespan)
    async with running_server(app) as base, httpx.AsyncClient() as http:
        token = (await negotiate(http, f"{base}/hubs/feature"))["connectionToken"]
        async with json_ws(f"{base}/hubs/feature?id={token}") as client:
            assert (await client.invoke("Echo", "mounted"))["result"] == "mounted"


def test_frames_helper_roundtrip() -> None:
    assert parse_frames(frame({"a": 1}) + frame({"b": 2})) == [{"a": 1}, {"b": 2}]


async def test_stateful_reconnect_acknowledges_received_messages() -> None:
    options = HubOptions(allow_stateful_reconnect=True, keep_alive_interval=0.4)
    async with running_server(HubEndpoint(FeatureHub, options=options)) as base:
        async with httpx.AsyncClient() as http:
            body = (
                await http.post(f"{base}/negotiate?negotiateVersion=1&useStatefulReconnect=true")
            ).json()
        async with connect(f"{base.replace('http', 'ws')}?id={body['connectionToken']}") as ws:
            await ws.send(frame({"protocol": "json", "version": 2}))
            assert await ws.recv() == "{}\x1e"
            for i in range(3):
                call = {"type": 1, "invocationId": str(i), "target": "Echo", "arguments": ["a"]}
                await ws.send(frame(call))
            seen: list[dict[str, Any]] = []
            with anyio.fail_after(5):
                while not any(m.get("type") == 8 for m in seen):
                    data = await ws.recv()
                    assert isinstance(data, str)
                    seen.extend(parse_frames(data))
            assert {"type": 8, "sequenceId": 3} in seen


async def test_new_connections_are_refused_once_shutdown_begins() -> None:
    """A client reconnecting at once must go elsewhere, not to a server that is going away."""
    endpoint = HubEndpoint(FeatureHub, options=HubOptions(shutdown_timeout=1.0))
    async with endpoint.lifespan():
        transport = httpx.ASGITransport(app=endpoint)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            before = await http.post("/negotiate?negotiateVersion=1")
            assert before.status_code == 200
            token = before.json()["connectionToken"]
            await endpoint.shutdown()
            after = await http.post("/negotiate?negotiateVersion=1")
            assert after.status_code == 503
            assert after.headers["retry-after"] == "1"
            assert after.text == "The server is shutting down"
            # A connection negotiated before the shutdown may not start a transport either.
            poll = await http.get("/", params={"id": token})
            assert poll.status_code != 200  # 200 would mean the poll activated it
            assert endpoint.connection_count == 0
        sent: list[MutableMapping[str, Any]] = []
        messages = iter([{"type": "websocket.connect"}])

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "websocket",
            "path": "/",
            "query_string": b"",
            "headers": [],
            "extensions": {"websocket.http.response": {}},
        }
        await endpoint(scope, receive, send)
        assert sent[0]["type"] == "websocket.http.response.start"
        assert sent[0]["status"] == 503


async def test_a_websocket_authenticated_while_shutdown_begins_is_refused() -> None:
    """The authentication hook may be slow (a store query): a shutdown that begins meanwhile
    must refuse the connection, not accept one it will never send ``Close`` to."""
    entered, release = anyio.Event(), anyio.Event()

    async def authenticate(request: AuthRequest) -> None:
        entered.set()
        await release.wait()

    endpoint = HubEndpoint(
        FeatureHub, options=HubOptions(shutdown_timeout=1.0), authenticate=authenticate
    )
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/",
        "query_string": b"",
        "headers": [],
        "extensions": {"websocket.http.response": {}},
    }
    async with endpoint.lifespan(), anyio.create_task_group() as tg:
        tg.start_soon(endpoint, scope, receive, send)
        await entered.wait()
        await endpoint.shutdown()
        release.set()
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 503
    assert endpoint.connection_count == 0
