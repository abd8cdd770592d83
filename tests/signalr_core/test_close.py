"""Closing connections from outside a hub (hub_context) and from inside (context.abort())."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from signalr_core import (
    AuthRequest,
    CloseRequest,
    DefaultHubLifetimeManager,
    Hub,
    HubContext,
    HubEndpoint,
    Principal,
)
from tests.services import async_wait_until
from tests.signalr_core._hub_server import JsonWsClient, json_ws, running_server

pytestmark = pytest.mark.timeout(30)


def authenticate(request: AuthRequest) -> Principal | None:
    """``?access_token=user:session`` -> user ``user`` with claim ``sid`` = ``session``."""
    token = request.access_token
    if not token:
        return None
    user, _, session = token.partition(":")
    return Principal(user_id=user, claims={"sid": session})


class RecordingManager(DefaultHubLifetimeManager):
    """Records what would be forwarded to other servers."""

    def __init__(self) -> None:
        super().__init__()
        self.remote: list[CloseRequest] = []

    async def close_remote(self, request: CloseRequest) -> None:
        self.remote.append(request)


@dataclass
class Server:
    endpoint: HubEndpoint
    manager: RecordingManager
    url: str
    disconnected: list[str] = field(default_factory=list)


def make_hub(server: dict[str, Any]) -> type[Hub]:
    class CloseHub(Hub):
        def whoami(self) -> str:
            return self.context.connection_id

        def abort_me(self) -> None:
            self.context.abort()

        async def close_user(self, user: str, error: str | None) -> int:
            context: HubContext = server["endpoint"].hub_context
            return await context.close_user(user, error=error)

        async def close_session(self, sid: str) -> int:
            context: HubContext = server["endpoint"].hub_context
            return await context.close_connections(
                where=lambda c: c.user is not None and c.user.claims.get("sid") == sid,
                allow_reconnect=True,
            )

        async def close_id(self, connection_id: str) -> bool:
            context: HubContext = server["endpoint"].hub_context
            return await context.close_connection(connection_id, error="bye")

        async def close_nothing(self) -> str:
            context: HubContext = server["endpoint"].hub_context
            try:
                await context.close_connections()
            except ValueError as exc:
                return str(exc)
            return "no error"

        async def on_disconnected(self, exception: Exception | None) -> None:
            server["disconnected"].append(self.context.connection_id)

    return CloseHub


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state: dict[str, Any] = {"disconnected": []}
    manager = RecordingManager()
    endpoint = HubEndpoint(make_hub(state), authenticate=authenticate, lifetime_manager=manager)
    state["endpoint"] = endpoint
    async with running_server(endpoint) as url:
        yield Server(endpoint, manager, url, state["disconnected"])


async def _id(client: JsonWsClient) -> str:
    answer = await client.invoke("WhoAmI", invocation_id="id")
    result: str = answer["result"]
    return result


async def _expect_closed(client: JsonWsClient) -> dict[str, Any]:
    close = await client.receive()
    assert close["type"] == 7, close
    with pytest.raises(ConnectionClosed), anyio.fail_after(5):
        await client.ws.recv()
    return close


async def test_close_user_closes_every_connection_of_that_user(server: Server) -> None:
    async with (
        json_ws(server.url + "?access_token=alice:s1") as a1,
        json_ws(server.url + "?access_token=alice:s2") as a2,
        json_ws(server.url + "?access_token=bob:s3") as bob,
    ):
        a1_id, a2_id, bob_id = await _id(a1), await _id(a2), await _id(bob)
        answer = await bob.invoke("CloseUser", "alice", "Logged out.")
        assert answer["result"] == 2
        for client in (a1, a2):
            assert await _expect_closed(client) == {"type": 7, "error": "Logged out."}
        assert (await bob.invoke("WhoAmI"))["result"] == bob_id
        await async_wait_until(lambda: {a1_id, a2_id} <= set(server.disconnected))
        assert bob_id not in server.disconnected
    assert server.manager.remote == [
        CloseRequest(user_ids=frozenset({"alice"}), error="Logged out.")
    ]


async def test_close_by_predicate_on_claims_is_local_only(server: Server) -> None:
    async with (
        json_ws(server.url + "?access_token=alice:s1") as s1,
        json_ws(server.url + "?access_token=alice:s2") as s2,
    ):
        answer = await s2.invoke("CloseSession", "s1")
        assert answer["result"] == 1
        assert await _expect_closed(s1) == {"type": 7, "allowReconnect": True}
        assert (await s2.invoke("WhoAmI"))["type"] == 3
    assert server.manager.remote == []  # a predicate cannot travel to other servers


async def test_close_connection_by_id_and_unknown_ids(server: Server) -> None:
    async with (
        json_ws(server.url + "?access_token=alice:s1") as a,
        json_ws(server.url + "?access_token=bob:s2") as b,
    ):
        a_id = await _id(a)
        assert (await b.invoke("CloseId", "no-such-id"))["result"] is False
        assert (await b.invoke("CloseId", a_id))["result"] is True
        assert await _expect_closed(a) == {"type": 7, "error": "bye"}
        await async_wait_until(lambda: a_id in server.disconnected)
        assert (await b.invoke("CloseId", a_id))["result"] is False
        answer = await b.invoke("CloseNothing")
        assert answer["result"] == "close_connections() needs connection_ids, user_ids or where"


async def test_context_abort_ends_only_the_callers_connection(server: Server) -> None:
    async with (
        json_ws(server.url + "?access_token=alice:s1") as a,
        json_ws(server.url + "?access_token=alice:s2") as b,
    ):
        a_id = await _id(a)
        await a.send({"type": 1, "invocationId": "x", "target": "AbortMe", "arguments": []})
        # No completion for the aborted invocation: Close (no error, no reconnect) ends it.
        assert await _expect_closed(a) == {"type": 7}
        await async_wait_until(lambda: a_id in server.disconnected)
        assert (await b.invoke("WhoAmI"))["type"] == 3


def test_close_request_matching() -> None:
    @dataclass
    class Handle:
        connection_id: str
        user_id: str | None

        def write(self, message: Any) -> None:
            raise AssertionError(message)

    by_user = CloseRequest(user_ids=frozenset({"u"}))
    both = CloseRequest(connection_ids=frozenset({"c1"}), user_ids=frozenset({"u"}))
    assert by_user.matches(Handle("c1", "u"))
    assert by_user.matches(Handle("c2", "u"))
    assert not by_user.matches(Handle("c3", None))
    assert both.matches(Handle("c1", "u"))
    assert not both.matches(Handle("c2", "u"))
    assert not both.matches(Handle("c1", "v"))
