"""RedisHubLifetimeManager against a real redis-server.

Two managers with the same hub name stand for two server processes sharing one Redis; the
connection handles are recording stand-ins for the server layer's connections. The end-to-end
tests (two hypercorn servers, the official Node client) are at the bottom.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from structlog.testing import capture_logs

from signalr_core.errors import ClientResultError, ClientUnavailableError
from signalr_core.lifetime import CloseRequest, LocalConnection
from signalr_core.messages import HubMessage, InvocationMessage
from signalr_core.protocols import HubProtocol
from signalr_core.protocols.json import JsonHubProtocol
from signalr_core.protocols.messagepack import MessagePackHubProtocol
from signalr_core.redis import RedisBackplaneError, RedisHubLifetimeManager, RedisInvocation
from tests.services import RedisServer, free_port, redis_server, stop_process, wait_for_port

Handler = Callable[[str, Sequence[Any]], Awaitable[Any]]


@dataclass
class Conn:
    """Records what the lifetime manager writes to one connection.

    As a :class:`~signalr_core.lifetime.LocalConnection` it records ``close`` calls and answers
    client results with ``handler``: the value is encoded with ``protocol`` (as a client would)
    and decoded to ``result_type`` by that protocol, as the server layer does.
    """

    connection_id: str
    user_id: str | None = None
    received: list[InvocationMessage] = field(default_factory=list)
    protocol: HubProtocol | None = None
    handler: Handler | None = None
    closed: list[tuple[str | None, bool]] = field(default_factory=list)
    context: None = None

    def write(self, message: HubMessage) -> None:
        assert isinstance(message, InvocationMessage)
        self.received.append(message)

    def close(self, error: str | None = None, *, allow_reconnect: bool = False) -> None:
        self.closed.append((error, allow_reconnect))

    async def invoke_client(
        self,
        method: str,
        args: Sequence[Any],
        *,
        result_type: Any = Any,
        timeout: float | None = None,  # noqa: ASYNC109 - the interface's signature
    ) -> Any:
        assert self.handler is not None
        with anyio.fail_after(timeout):
            value = await self.handler(method, args)
        if self.protocol is None:
            return value
        if isinstance(self.protocol, JsonHubProtocol):
            raw = msgspec.Raw(msgspec.json.encode(value))
        else:
            raw = msgspec.Raw(msgspec.msgpack.encode(value))
        try:
            return self.protocol.decode_argument(raw, result_type)
        except Exception as exc:
            raise ClientResultError("Error trying to deserialize result.") from exc

    def calls(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(m.target, m.arguments) for m in self.received]


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - polling state the code under test owns
            await anyio.sleep(0.01)


@contextlib.asynccontextmanager
async def two_servers(
    url: str, **options: Any
) -> AsyncIterator[tuple[RedisHubLifetimeManager, RedisHubLifetimeManager]]:
    hub = f"hub-{uuid.uuid4().hex}"  # isolates the tests sharing the session's Redis
    a = RedisHubLifetimeManager(url, hub_name=hub, **options)
    b = RedisHubLifetimeManager(url, hub_name=hub, **options)
    async with a.lifespan(), b.lifespan():
        yield a, b


async def test_send_all_reaches_both_servers_with_exclusions(redis: RedisServer) -> None:
    async with two_servers(redis.url) as (a, b):
        a1, b1, b2 = Conn("a1"), Conn("b1"), Conn("b2")
        await a.on_connected(a1)
        await b.on_connected(b1)
        await b.on_connected(b2)

        await a.send_all("Hello", ["world", 1, {"x": [1, 2]}])
        await eventually(lambda: all(c.received for c in (a1, b1, b2)))
        for c in (a1, b1, b2):
            assert c.calls() == [("Hello", ("world", 1, {"x": [1, 2]}))]

        await b.send_all("Bye", [], exclude=["a1", "b2"])
        await eventually(lambda: len(b1.received) == 2)
        await anyio.sleep(0.1)
        assert a1.calls()[-1][0] == "Hello"
        assert b2.calls()[-1][0] == "Hello"
        assert b1.calls()[-1] == ("Bye", ())


async def test_one_message_object_per_server_for_a_broadcast(redis: RedisServer) -> None:
    # The server layer caches one encoding per protocol per message object: a backplane
    # broadcast must hand the very same object to every local connection.
    async with two_servers(redis.url) as (a, b):
        conns = [Conn(f"b{i}") for i in range(5)]
        for c in conns:
            await b.on_connected(c)
        await a.send_all("M", ["x"])
        await eventually(lambda: all(c.received for c in conns))
        assert len({id(c.received[0]) for c in conns}) == 1


async def test_group_send_and_remote_group_management(redis: RedisServer) -> None:
    async with two_servers(redis.url) as (a, b):
        a1, b1, b2 = Conn("a1"), Conn("b1"), Conn("b2")
        await a.on_connected(a1)
        await b.on_connected(b1)
        await b.on_connected(b2)

        # b1 joins on its own server, b2 is added from server A (lives on B: ack round trip).
        await b.add_to_group("b1", "room")
        await a.add_to_group("b2", "room")
        await a.send_groups(["room"], "Msg", ["hi"])
        await eventually(lambda: bool(b1.received and b2.received))
        assert b1.calls() == b2.calls() == [("Msg", ("hi",))]

        await a.send_groups(["room"], "Msg", ["except"], exclude=["b1"])
        await eventually(lambda: len(b2.received) == 2)

        # Removing a remote connection is acknowledged too; afterwards it no longer receives.
        await a.remove_from_group("b2", "room")
        await a.send_groups(["room"], "Msg", ["after"])
        await eventually(lambda: b1.calls()[-1] == ("Msg", ("after",)))
        await anyio.sleep(0.1)
        assert b2.calls()[-1] == ("Msg", ("except",))
        assert a1.received == []


async def test_second_local_joiner_waits_for_the_group_subscription(redis: RedisServer) -> None:
    async with two_servers(redis.url) as (a, b):
        b1, b2 = Conn("b1"), Conn("b2")
        await b.on_connected(b1)
        await b.on_connected(b2)
        channel = b._channels.group("race")
        subscribed_when_returned: list[bool] = []

        async def join(connection_id: str) -> None:
            await b.add_to_group(connection_id, "race")
            subscribed_when_returned.append(channel not in b._subscriber.confirmations)

        async with anyio.create_task_group() as tg:
            tg.start_soon(join, "b1")
            tg.start_soon(join, "b2")  # starts while b1's SUBSCRIBE is in flight
        assert subscribed_when_returned == [True, True]
        await a.send_groups(["race"], "Msg", ["hi"])
        await eventually(lambda: bool(b1.received and b2.received))


async def test_several_groups_deliver_once_per_connection(redis: RedisServer) -> None:
    async with two_servers(redis.url) as (a, b):
        b1, b2 = Conn("b1"), Conn("b2")
        await b.on_connected(b1)
        await b.on_connected(b2)
        await a.add_to_group("b1", "g1")
        await a.add_to_group("b1", "g2")
        await b.add_to_group("b2", "g2")
        await a.send_groups(["g1", "g2"], "Once", [], exclude=["b2"])
        await a.send_groups(["g1", "g2"], "Marker", [])
        await eventually(lambda: len(b2.received) == 1)
        await eventually(lambda: len(b1.received) == 2)
        assert b1.calls() == [("Once", ()), ("Marker", ())]
        assert b2.calls() == [("Marker", ())]


async def test_user_and_connection_sends_cross_servers(redis: RedisServer) -> None:
    async with two_servers(redis.url) as (a, b):
        alice_a, alice_b, bob_b = Conn("c1", "alice"), Conn("c2", "alice"), Conn("c3", "bob")
        await a.on_connected(alice_a)
        await b.on_connected(alice_b)
        await b.on_connected(bob_b)

        await a.send_users(["alice"], "ForAlice", [1])
        await eventually(lambda: bool(alice_a.received and alice_b.received))
        await a.send_connections(["c3", "c1"], "Direct", ["x"])
        await eventually(lambda: bool(bob_b.received) and len(alice_a.received) == 2)
        assert alice_b.calls() == [("ForAlice", (1,))]
        assert bob_b.calls() == [("Direct", ("x",))]
        assert alice_a.calls() == [("ForAlice", (1,)), ("Direct", ("x",))]

        # After disconnecting, the server unsubscribes: nothing more arrives there.
        await b.on_disconnected(alice_b)
        await a.send_users(["alice"], "Again", [])
        await eventually(lambda: len(alice_a.received) == 3)
        await anyio.sleep(0.1)
        assert len(alice_b.received) == 1


async def test_rich_arguments_survive_the_backplane(redis: RedisServer) -> None:
    import datetime

    class Point(msgspec.Struct, rename="camel"):
        x_value: int
        label: str

    when = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    async with two_servers(redis.url) as (a, b):
        b1 = Conn("b1")
        await b.on_connected(b1)
        await a.send_all("Rich", [Point(1, "p"), b"\x01\x02", when, None, [1.5]])
        await eventually(lambda: bool(b1.received))
        assert b1.calls() == [
            ("Rich", ({"xValue": 1, "label": "p"}, b"\x01\x02", when, None, [1.5]))
        ]


async def test_unknown_remote_connection_times_out(redis: RedisServer) -> None:
    async with two_servers(redis.url, ack_timeout=0.3) as (a, _b):
        with pytest.raises(RedisBackplaneError, match="acknowledged"):
            await a.add_to_group("nobody", "g")


async def test_invalid_payloads_are_logged_and_skipped(redis: RedisServer) -> None:
    import redis.asyncio as aioredis

    async with two_servers(redis.url) as (a, b):
        b1 = Conn("b1")
        await b.on_connected(b1)
        client = aioredis.Redis.from_url(redis.url)
        try:
            with capture_logs() as logs:
                await client.publish(f"signalr:{_hub_of(a)}:all", b"\xc1 not msgpack")
                await a.send_all("Fine", [])
                await eventually(lambda: bool(b1.received))
        finally:
            await client.aclose()
        assert any(e["event"] == "backplane_message_malformed" for e in logs)
        assert b1.calls() == [("Fine", ())]


async def test_subscriptions_follow_local_state(redis: RedisServer) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis.url, decode_responses=True)

    async def channels(prefix: str) -> set[str]:
        return {str(c) for c in await client.pubsub_channels(f"{prefix}:*")}

    try:
        async with two_servers(redis.url) as (a, b):
            prefix = f"signalr:{_hub_of(a)}"
            fixed = {f"{prefix}:all", f"{prefix}:internal:groups", f"{prefix}:internal:servers"}
            fixed |= {f"{prefix}:internal:ack:{m.server_name}" for m in (a, b)}
            fixed |= {f"{prefix}:internal:return:{m.server_name}" for m in (a, b)}
            assert await channels(prefix) == fixed

            b1 = Conn("b1", "carol")
            await b.on_connected(b1)
            await a.add_to_group("b1", "g")
            assert await channels(prefix) == fixed | {
                f"{prefix}:connection:b1",
                f"{prefix}:user:carol",
                f"{prefix}:group:g",
            }
            await b.on_disconnected(b1)
            # UNSUBSCRIBE is not awaited for a confirmation: poll Redis until it is applied.
            with anyio.fail_after(5):
                while await channels(prefix) != fixed:  # noqa: ASYNC110 - Redis-side state
                    await anyio.sleep(0.02)
    finally:
        await client.aclose()


def _hub_of(manager: RedisHubLifetimeManager) -> str:
    return manager._channels.prefix.split(":", 1)[1]


def test_invocation_struct_is_messagepack_array() -> None:
    payload = msgspec.msgpack.encode(RedisInvocation(target="T", arguments=(1,), exclude=("x",)))
    assert msgspec.msgpack.decode(payload) == [1, "T", [1], ["x"], []]


# --------------------------------------------------------- client results and remote close ---
class Point(msgspec.Struct):
    x: int
    y: int


async def _add(method: str, args: Sequence[Any]) -> Any:
    assert method == "Add"
    return {"x": args[0] + args[1], "y": -1}


@pytest.mark.parametrize("protocol", [JsonHubProtocol(), MessagePackHubProtocol(), None])
async def test_client_result_from_a_connection_on_another_server(
    redis: RedisServer, protocol: HubProtocol | None
) -> None:
    async with two_servers(redis.url) as (a, b):
        b1 = Conn("b1", protocol=protocol, handler=_add)
        assert isinstance(b1, LocalConnection)
        await b.on_connected(b1)
        # Decoded to the caller's type with the client's protocol, as on the local path.
        assert await a.invoke_connection("b1", "Add", [2, 3], result_type=Point) == Point(5, -1)
        assert await a.invoke_connection("b1", "Add", [1, 1], timeout=5) == {"x": 2, "y": -1}
        with pytest.raises(ClientResultError, match="deserialize result to int"):
            await a.invoke_connection("b1", "Add", [1, 1], result_type=int)
        # A local connection is asked directly.
        local = await b.invoke_connection("b1", "Add", [0, 0], result_type=Point)
        assert local == (Point(0, -1) if protocol is not None else {"x": 0, "y": -1})


async def test_client_result_errors_map_to_the_local_exceptions(redis: RedisServer) -> None:
    release = anyio.Event()

    async def handler(method: str, args: Sequence[Any]) -> Any:
        if method == "Throw":
            raise ClientResultError("Error: boom")
        if method == "Gone":
            raise ClientUnavailableError("Connection 'b1' disconnected.")
        if method == "Nothing":
            return None
        await release.wait()
        return "late"

    async with two_servers(redis.url, max_pending_results=1) as (a, b):
        await b.on_connected(Conn("b1", protocol=JsonHubProtocol(), handler=handler))
        with pytest.raises(ClientResultError, match=r"^Error: boom$"):
            await a.invoke_connection("b1", "Throw", [])
        with pytest.raises(ClientUnavailableError, match=r"^Connection 'b1' disconnected\.$"):
            await a.invoke_connection("b1", "Gone", [])
        assert await a.invoke_connection("b1", "Nothing", [], result_type=int | None) is None
        with pytest.raises(ClientUnavailableError, match=r"^Connection 'nobody' does not exist\.$"):
            await a.invoke_connection("nobody", "Add", [], timeout=5)
        with anyio.fail_after(2), pytest.raises(TimeoutError):
            await a.invoke_connection("b1", "Wait", [], timeout=0.2)

        await eventually(lambda: b._results.serving == 0)  # B's own wait for "Wait" ended too

        # The waiting table is bounded (max_pending_results=1).
        results: list[Any] = []

        async def first() -> None:
            results.append(await a.invoke_connection("b1", "Wait", [], timeout=5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await eventually(lambda: len(a._results.waiting) == 1)
            with pytest.raises(ClientUnavailableError, match="Too many"):
                await a.invoke_connection("b1", "Wait", [])
            release.set()
        assert results == ["late"]
        assert a._results.waiting == {}
        assert b._results.serving == 0


async def test_waiters_fail_when_the_owning_server_stops(redis: RedisServer) -> None:
    hub = f"hub-{uuid.uuid4().hex}"
    a = RedisHubLifetimeManager(redis.url, hub_name=hub)
    b = RedisHubLifetimeManager(redis.url, hub_name=hub)
    never = anyio.Event()

    async def handler(method: str, args: Sequence[Any]) -> Any:
        await never.wait()

    async with a.lifespan():
        errors: list[BaseException] = []

        async def wait() -> None:
            try:
                await a.invoke_connection("b1", "Wait", [])
            except ClientUnavailableError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            async with b.lifespan():
                await b.on_connected(Conn("b1", handler=handler))
                tg.start_soon(wait)
                await eventually(lambda: b._results.serving == 1)
            # b stopped: its running invocation told a at once (no timeout was given).
            with anyio.fail_after(5):
                await eventually(lambda: bool(errors))
        assert str(errors[0]) == "Connection 'b1' disconnected."


async def test_close_remote_by_user_and_by_connection(redis: RedisServer) -> None:
    async with two_servers(redis.url) as (a, b):
        alice_a = Conn("a1", "alice")
        alice_b, bob_b, alice_b2 = Conn("b1", "alice"), Conn("b2", "bob"), Conn("b3", "alice")
        await a.on_connected(alice_a)
        for c in (alice_b, bob_b, alice_b2):
            await b.on_connected(c)

        await a.close_remote(CloseRequest(user_ids=frozenset({"alice"}), error="bye"))
        await eventually(lambda: bool(alice_b.closed and alice_b2.closed))
        assert alice_b.closed == alice_b2.closed == [("bye", False)]

        # Every filter must match: b2 is not carol's.
        await a.close_remote(
            CloseRequest(connection_ids=frozenset({"b2"}), user_ids=frozenset({"carol"}))
        )
        await a.close_remote(
            CloseRequest(connection_ids=frozenset({"b2", "a1"}), allow_reconnect=True)
        )
        await eventually(lambda: bool(bob_b.closed))
        await anyio.sleep(0.1)
        assert bob_b.closed == [(None, True)]
        # The publisher's own connections are its endpoint's business (closed before the hook).
        assert alice_a.closed == []
        assert alice_b.closed == [("bye", False)]


async def test_publish_without_lifespan_raises() -> None:
    manager = RedisHubLifetimeManager("redis://127.0.0.1:1/0")
    with pytest.raises(RedisBackplaneError):
        await manager.send_all("X", [])


# ------------------------------------------------------------------------ Redis restarts ---
async def test_reconnects_and_resubscribes_after_redis_restart() -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with capture_logs() as logs, redis_server(port):
        async with two_servers(
            url, reconnect_delay=(0.05, 0.2), publish_timeout=1.0, buffer_max_age=0.3
        ) as (a, b):
            b1 = Conn("b1", "u")
            await b.on_connected(b1)
            await a.add_to_group("b1", "g")
            await a.send_all("Before", [])
            await eventually(lambda: len(b1.received) == 1)
            # Redis goes away: both subscribers notice; a send waits buffer_max_age, then fails.
            _kill_redis(port)
            await eventually(lambda: not a.connected and not b.connected)
            with pytest.raises(RedisBackplaneError, match=r"did not come back within 0\.3 s"):
                await a.send_all("Lost", [])
            # Redis is back on the same port: group, user and connection channels again.
            with redis_server(port):
                await eventually(lambda: a.ready and b.ready)
                await a.send_groups(["g"], "Group", [])
                await a.send_users(["u"], "User", [])
                await a.send_connections(["b1"], "Conn", [])
                await a.send_all("All", [])
                await eventually(lambda: len(b1.received) == 5)
                assert [t for t, _ in b1.calls()] == ["Before", "Group", "User", "Conn", "All"]
    events = [e["event"] for e in logs]
    assert "backplane_connection_lost" in events
    assert "backplane_reconnected" in events
    assert all(url not in repr(e) for e in logs)  # the URL (credentials) is never logged


def _kill_redis(port: int) -> None:
    # SHUTDOWN NOSAVE stops the server the way a crash looks to clients (connections reset).
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as sock:
        sock.sendall(b"SHUTDOWN NOSAVE\r\n")
        sock.recv(16)


# ---------------------------------------------------------- two servers, official client ---
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def hub_server(redis_url: str, hub_name: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.signalr_core.redis_app",
            "--port",
            str(port),
            "--redis",
            redis_url,
            "--hub-name",
            hub_name,
        ],
        cwd=ROOT,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def two_hub_servers(redis: RedisServer) -> Iterator[tuple[str, str]]:
    """Two hypercorn processes serving the same hub through the session's Redis."""
    hub_name = f"scale-{uuid.uuid4().hex}"
    with hub_server(redis.url, hub_name) as a, hub_server(redis.url, hub_name) as b:
        yield a, b


def run_client(servers: tuple[str, str], scenario: str) -> dict[str, Any]:
    out = subprocess.run(
        ["node", str(Path(__file__).with_name("redis_scaleout.mjs")), *servers, scenario],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    return result


@pytest.mark.compat
def test_official_client_across_two_servers(two_hub_servers: tuple[str, str]) -> None:
    got = run_client(two_hub_servers, "fanout")["got"]
    # Every message reached exactly the connections it was meant for, on either server.
    assert got["c1"] == [["All", "hello"], ["User", "u1"], ["Notify", "n1"]]
    assert got["c2"] == [["All", "hello"], ["Group", "room", "g1"], ["Notify", "n1"]]
    assert got["c3"] == [["All", "hello"], ["User", "u1"], ["Direct", "d1"], ["Notify", "n1"]]


@pytest.mark.compat
def test_official_client_answers_client_results_across_servers(
    two_hub_servers: tuple[str, str],
) -> None:
    # Server A's hub context asks connections living on server B (MessagePack and JSON).
    answers = run_client(two_hub_servers, "results")["answers"]
    assert answers["addMsgpack"] == {"result": 5}
    assert answers["addJson"] == {"result": 42}
    assert answers["fail"] == {"error": "ClientResultError", "message": "Error: nope"}
    assert answers["missing"] == {
        "error": "ClientResultError",
        "message": "Client didn't provide a result.",
    }
    assert answers["text"] == {
        "error": "ClientResultError",
        "message": "Error trying to deserialize result to int.",
    }
    assert answers["slow"]["error"] == "TimeoutError"
    assert answers["unknown"] == {
        "error": "ClientUnavailableError",
        "message": "Connection 'nobody' does not exist.",
    }
    assert answers["afterSlow"] == {"result": 2}


@pytest.mark.compat
def test_official_client_closed_by_close_user_on_another_server(
    two_hub_servers: tuple[str, str],
) -> None:
    result = run_client(two_hub_servers, "close")
    assert result["closed"] == {"closed": 0}  # carol has no connection on server A
    assert result["onclose"] == "Server returned an error on close: bye"
    assert result["reconnecting"] is False
    assert result["states"] == {"c1": "Connected", "c4": "Disconnected"}
