"""RedisHubLifetimeManager against a real redis-server.

Two managers with the same hub name stand for two server processes sharing one Redis; the
connection handles are recording stand-ins for the server layer's connections. The end-to-end
tests (two hypercorn servers, the official Node client) are at the bottom.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from structlog.testing import capture_logs

from signalr_core.messages import HubMessage, InvocationMessage
from signalr_core.redis import RedisBackplaneError, RedisHubLifetimeManager, RedisInvocation
from tests.services import RedisServer, free_port, wait_for_port


@dataclass
class Conn:
    """Records what the lifetime manager writes to one connection."""

    connection_id: str
    user_id: str | None = None
    received: list[InvocationMessage] = field(default_factory=list)

    def write(self, message: HubMessage) -> None:
        assert isinstance(message, InvocationMessage)
        self.received.append(message)

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
        assert any(e["event"] == "redis_backplane_bad_message" for e in logs)
        assert b1.calls() == [("Fine", ())]


def _hub_of(manager: RedisHubLifetimeManager) -> str:
    return manager._channels.prefix.split(":", 1)[1]


def test_invocation_struct_is_messagepack_array() -> None:
    payload = msgspec.msgpack.encode(RedisInvocation(target="T", arguments=(1,), exclude=("x",)))
    assert msgspec.msgpack.decode(payload) == ["T", [1], ["x"], []]


async def test_publish_without_lifespan_raises() -> None:
    manager = RedisHubLifetimeManager("redis://127.0.0.1:1/0")
    with pytest.raises(RedisBackplaneError):
        await manager.send_all("X", [])


# ------------------------------------------------------------------------ Redis restarts ---
@contextlib.contextmanager
def redis_on(port: int) -> Iterator[None]:
    binary = shutil.which("redis-server")
    assert binary is not None
    base = Path(tempfile.mkdtemp(prefix="redis-restart-"))
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(base, ignore_errors=True)


async def test_reconnects_and_resubscribes_after_redis_restart() -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with capture_logs() as logs, redis_on(port):
        async with two_servers(url, reconnect_delay=(0.05, 0.2), publish_timeout=1.0) as (a, b):
            b1 = Conn("b1", "u")
            await b.on_connected(b1)
            await a.add_to_group("b1", "g")
            await a.send_all("Before", [])
            await eventually(lambda: len(b1.received) == 1)
            # Redis goes away: both subscribers notice, publishing fails loudly.
            _kill_redis(port)
            await eventually(lambda: not a.connected and not b.connected)
            with pytest.raises(RedisBackplaneError):
                await a.send_all("Lost", [])
            # Redis is back on the same port: group, user and connection channels again.
            with redis_on(port):
                await eventually(lambda: a.connected and b.connected)
                await a.send_groups(["g"], "Group", [])
                await a.send_users(["u"], "User", [])
                await a.send_connections(["b1"], "Conn", [])
                await a.send_all("All", [])
                await eventually(lambda: len(b1.received) == 5)
                assert [t for t, _ in b1.calls()] == ["Before", "Group", "User", "Conn", "All"]
    events = [e["event"] for e in logs]
    assert "redis_backplane_connection_lost" in events
    assert "redis_backplane_reconnected" in events
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
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.compat
def test_official_client_across_two_servers(redis: RedisServer) -> None:
    hub_name = f"scale-{uuid.uuid4().hex}"
    with hub_server(redis.url, hub_name) as a, hub_server(redis.url, hub_name) as b:
        out = subprocess.run(
            ["node", str(Path(__file__).with_name("redis_scaleout.mjs")), a, b],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    got = result["got"]
    # Every message reached exactly the connections it was meant for, on either server.
    assert got["c1"] == [["All", "hello"], ["User", "u1"], ["Notify", "n1"]]
    assert got["c2"] == [["All", "hello"], ["Group", "room", "g1"], ["Notify", "n1"]]
    assert got["c3"] == [["All", "hello"], ["User", "u1"], ["Direct", "d1"], ["Notify", "n1"]]
