"""Connection handlers (``MapConnectionHandler``): raw bytes over negotiate and every transport."""

from __future__ import annotations

import ast
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

import signalr_core.transports
from signalr_core import (
    AuthRequest,
    ConnectionContext,
    ConnectionHandler,
    ConnectionHandlerEndpoint,
    HubOptions,
    Principal,
    TransferFormat,
)
from tests.signalr_core._hub_server import negotiate, running_server

pytestmark = pytest.mark.timeout(30)

SSE = {"accept": "text/event-stream"}


class Echo(ConnectionHandler):
    """Echoes every chunk; ``binary`` and ``bye`` change its behaviour; records its end."""

    def __init__(self) -> None:
        self.ended = threading.Event()
        self.transports: list[str] = []

    async def on_connected(self, connection: ConnectionContext) -> None:
        self.transports.append(connection.transport)
        try:
            async for data in connection:
                if data == b"binary":
                    connection.transfer_format = TransferFormat.BINARY
                    await connection.send(b"\x00\xff")
                elif data == b"bye":
                    await connection.send("bye from " + (connection.query.get("name") or "?"))
                    return  # ends the connection
                else:
                    await connection.send(data)
        finally:
            self.ended.set()


class Private(ConnectionHandler):
    authorize = True

    async def on_connected(self, connection: ConnectionContext) -> None:
        assert connection.user is not None
        await connection.send(connection.user.user_id)


def authenticate(request: AuthRequest) -> Principal | None:
    return Principal(user_id="alice") if request.access_token == "good" else None


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, Echo]]:
    handler = Echo()
    endpoint = ConnectionHandlerEndpoint(handler, options=HubOptions(long_poll_timeout=5))
    async with running_server(endpoint) as base:
        yield base, handler


async def test_websockets_echo_text_then_binary_then_the_handler_ends_it(
    echo: tuple[str, Echo],
) -> None:
    url, handler = echo
    async with httpx.AsyncClient() as http:
        body = await negotiate(http, url)
    # The same negotiate as hubs, without stateful reconnect.
    assert [t["transport"] for t in body["availableTransports"]] == [
        "WebSockets",
        "ServerSentEvents",
        "LongPolling",
    ]
    assert "useStatefulReconnect" not in body
    ws_url = url.replace("http://", "ws://") + f"?id={body['connectionToken']}&name=ws"
    async with connect(ws_url) as ws:
        with anyio.fail_after(5):
            await ws.send("Hello World!")  # no handshake: the first message is data
            assert await ws.recv() == "Hello World!"
            await ws.send(b"binary")
            assert await ws.recv() == b"\x00\xff"  # a binary message now
            await ws.send("bye")
            assert await ws.recv() == b"bye from ws"
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
    assert ws.close_code == 1000
    assert handler.transports == ["WebSockets"]
    assert handler.ended.is_set()


async def test_server_sent_events_and_posts(echo: tuple[str, Echo]) -> None:
    url, handler = echo
    async with httpx.AsyncClient() as http:
        token = (await negotiate(http, url))["connectionToken"]
        async with http.stream("GET", url, params={"id": token}, headers=SSE) as events:
            chunks = events.aiter_raw()
            with anyio.fail_after(5):
                assert await chunks.__anext__() == b":\r\n"
                sent = await http.post(url, params={"id": token}, content=b"one\ntwo")
                assert sent.status_code == 200
                assert await chunks.__anext__() == b"data: one\r\ndata: two\r\n\r\n"
        # The client went away: the handler reads the end of input and returns.
        await anyio.to_thread.run_sync(handler.ended.wait, 10)
    assert handler.transports == ["ServerSentEvents"]


async def test_long_polling_echo_and_delete(echo: tuple[str, Echo]) -> None:
    url, handler = echo
    async with httpx.AsyncClient() as http:
        token = (await negotiate(http, url))["connectionToken"]
        first = await http.get(url, params={"id": token})
        assert (first.status_code, first.content) == (200, b"")
        assert (await http.post(url, params={"id": token}, content=b"ping")).status_code == 200
        poll = await http.get(url, params={"id": token})
        assert (poll.status_code, poll.content) == (200, b"ping")
        assert poll.headers["content-type"].startswith("text/plain")
        await http.post(url, params={"id": token}, content=b"binary")
        poll = await http.get(url, params={"id": token})
        assert (poll.content, poll.headers["content-type"]) == (
            b"\x00\xff",
            "application/octet-stream",
        )
        assert (await http.delete(url, params={"id": token})).status_code == 202
        await anyio.to_thread.run_sync(handler.ended.wait, 10)
    assert handler.transports == ["LongPolling"]


async def test_authorize_and_the_user() -> None:
    endpoint = ConnectionHandlerEndpoint(Private(), authenticate=authenticate)
    async with running_server(endpoint) as url, httpx.AsyncClient() as http:
        refused = await http.post(f"{url}/negotiate?negotiateVersion=1")
        assert (refused.status_code, refused.text) == (401, "Unauthorized")
        token = (
            await http.post(
                f"{url}/negotiate?negotiateVersion=1", headers={"authorization": "Bearer good"}
            )
        ).json()["connectionToken"]
        ws_url = url.replace("http://", "ws://") + f"?id={token}&access_token=good"
        async with connect(ws_url) as ws:
            with anyio.fail_after(5):
                assert await ws.recv() == "alice"


def test_handler_must_be_a_connection_handler() -> None:
    with pytest.raises(TypeError, match="ConnectionHandler instance"):
        ConnectionHandlerEndpoint(Echo)  # type: ignore[arg-type]


def test_transports_never_import_the_hub_dispatcher_or_the_endpoint() -> None:
    # They know connections only through TransportConnection (no import cycle with them).
    package = Path(signalr_core.transports.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                assert node.module not in (
                    "signalr_core.dispatcher",
                    "signalr_core.endpoint",
                    "signalr_core.connection_handler",
                ), f"{source.name} imports {node.module}"


class Stubborn(ConnectionHandler):
    """Ignores the end of input: the connection must still end, after shutdown_timeout."""

    def __init__(self) -> None:
        self.cancelled = False
        self.started = anyio.Event()

    async def on_connected(self, connection: ConnectionContext) -> None:
        self.started.set()
        with pytest.raises(UnicodeDecodeError):
            await connection.send(b"\xff")  # a text connection takes UTF-8 only
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise


async def test_a_handler_ignoring_the_client_leaving_is_cancelled() -> None:
    from signalr_core.connection_handler import RawConnection
    from signalr_core.transports import TransportName

    handler = Stubborn()
    connection = RawConnection(
        handler, HubOptions(shutdown_timeout=0.05), connection_id="c", connection_token="t"
    )
    connection.activate(TransportName.LONG_POLLING, user=None, headers={}, query={}, cookies={})
    async with anyio.create_task_group() as tg:
        tg.start_soon(connection.run)
        await handler.started.wait()
        connection.transport_closed()  # the client went away (DELETE)
        with anyio.fail_after(5):
            await connection.finished.wait()
    assert handler.cancelled
    assert connection.outgoing.closed


class Farewell(ConnectionHandler):
    async def on_connected(self, connection: ConnectionContext) -> None:
        async for _ in connection:
            pass
        await connection.send("goodbye")  # input ended (shutdown): a last word still goes out


async def test_shutdown_ends_input_and_delivers_what_the_handler_sends_last() -> None:
    from signalr_core.connection_handler import RawConnection
    from signalr_core.transports import TransportName

    connection = RawConnection(Farewell(), HubOptions(), connection_id="c", connection_token="t")
    connection.activate(TransportName.WEBSOCKETS, user=None, headers={}, query={}, cookies={})
    async with anyio.create_task_group() as tg:
        tg.start_soon(connection.run)
        await anyio.wait_all_tasks_blocked()
        connection.close(None, allow_reconnect=True)
        with anyio.fail_after(5):
            await connection.finished.wait()
    assert connection.outgoing.drain() == [b"goodbye"]
    assert connection.outgoing.closed
