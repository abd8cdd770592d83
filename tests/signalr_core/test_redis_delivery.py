"""No publish acknowledged into the void: the Redis backplane's delivery gate.

The gate's rules are first driven through a scripted ``publish`` (the subscriber counts Redis
would answer); then real managers share a redis-server: a phantom peer that never answers, and a
redis-server restarted in the middle of a stream from three servers, after which every message
the API accepted must have reached every connection exactly once, in order.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from signalr_core._redis_delivery import DeliveryGate
from signalr_core._redis_wire import RedisHello, encode
from signalr_core.redis import RedisBackplaneError, RedisHubLifetimeManager
from tests.services import RedisServer, free_port, redis_server
from tests.signalr_core.test_redis import Conn, _kill_redis, eventually

SERVERS = "p:internal:servers"


# ------------------------------------------------------------------ the gate, scripted ---
@dataclass
class ScriptedRedis:
    """Answers PUBLISH like Redis would: ``counts[channel]`` subscribers (1 by default)."""

    counts: dict[str, int] = field(default_factory=dict)
    failing: bool = False
    published: list[tuple[str, bytes]] = field(default_factory=list)
    gate: DeliveryGate | None = None
    hold: anyio.Event | None = None  # PUBLISH on "all" waits for it (a slow Redis)
    holding: bool = False

    async def publish(self, channel: str, payload: bytes) -> int:
        await anyio.lowlevel.checkpoint()
        if channel == "all" and self.hold is not None:
            self.holding = True
            await self.hold.wait()
        if self.failing:
            raise RedisBackplaneError("Publishing to Redis failed: ConnectionError")
        self.published.append((channel, payload))
        if channel == SERVERS and self.gate is not None:
            # The announcement comes back through this server's own subscription.
            self.gate.on_hello(RedisHello(server_name="me"))
        return self.counts.get(channel, 1)

    def sent(self, channel: str = "all") -> list[bytes]:
        return [p for c, p in self.published if c == channel]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def scripted_gate(**options: Any) -> AsyncIterator[tuple[DeliveryGate, ScriptedRedis]]:
    redis = ScriptedRedis()
    settings: dict[str, Any] = {
        "buffer_limit": 10,
        "buffer_max_age": 5.0,
        "heartbeat_interval": 60.0,
        "peer_timeout": 120.0,
    }
    settings.update(options)
    gate = DeliveryGate(redis.publish, server_name="me", servers_channel=SERVERS, **settings)
    redis.gate = gate
    gate.start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(gate.run_announcements)
        tg.start_soon(gate.run_flusher)
        gate.subscribed()
        with anyio.fail_after(5):
            await gate.wait_open()
        yield gate, redis
        tg.cancel_scope.cancel()


async def send_recorded(gate: DeliveryGate, outcome: list[str]) -> None:
    """Send one broadcast; ``outcome`` gets ``"sent"`` or the refusal's text."""
    try:
        await gate.send("all", b"x", gate.expected_all)
    except RedisBackplaneError as exc:
        outcome.append(str(exc))
    else:
        outcome.append("sent")


async def test_a_send_nobody_received_waits_and_goes_out_once_everyone_is_back() -> None:
    async with scripted_gate() as (gate, redis):
        gate.on_hello(RedisHello(server_name="peer"))
        assert gate.expected_all() == 2
        redis.counts["all"] = 0  # PUBLISH reached nobody: our own subscription is not back
        returned: list[bytes] = []

        async def send(payload: bytes) -> None:
            await gate.send("all", payload, gate.expected_all)
            returned.append(payload)

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, b"first")
            await eventually(lambda: gate.buffered == 1)
            assert not gate.is_open
            tg.start_soon(send, b"second")  # queued behind it, never overtaking
            await eventually(lambda: gate.buffered == 2)
            # Our own announcement came back (scripted), the peer's has not: still closed.
            await eventually(lambda: len(redis.sent(SERVERS)) >= 2)
            assert not gate.is_open
            assert returned == []
            redis.counts["all"] = 2
            gate.on_hello(RedisHello(server_name="peer"))
        assert gate.is_open
        assert returned == [b"first", b"second"]
        assert redis.sent() == [b"first", b"first", b"second"]


async def test_a_send_some_servers_missed_is_refused_and_later_ones_wait() -> None:
    clock = FakeClock()
    async with scripted_gate(heartbeat_interval=0.02, peer_timeout=10.0, clock=clock) as (
        gate,
        redis,
    ):
        gate.on_hello(RedisHello(server_name="peer"))
        redis.counts["all"] = 1  # only we got it: the peer is not subscribed
        with pytest.raises(RedisBackplaneError, match="1 of 2 servers"):
            await gate.send("all", b"partial", gate.expected_all)
        assert not gate.is_open
        returned: list[bytes] = []

        async def send() -> None:
            await gate.send("all", b"later", gate.expected_all)
            returned.append(b"later")

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            await eventually(lambda: gate.buffered == 1)
            clock.now = 10.5  # the peer stays silent past peer_timeout: taken for gone
            await eventually(lambda: gate.is_open)
        assert gate.expected_all() == 1
        assert returned == [b"later"]
        assert redis.sent() == [b"partial", b"later"]


async def test_a_failed_publish_is_refused_never_repeated() -> None:
    async with scripted_gate() as (gate, redis):
        redis.failing = True
        with pytest.raises(RedisBackplaneError, match="ConnectionError"):
            await gate.send("all", b"x", gate.expected_all)
        redis.failing = False
        await gate.send("all", b"y", gate.expected_all)
        assert redis.sent() == [b"y"]


async def test_the_buffer_is_bounded_in_size_and_age_and_kept_in_order() -> None:
    async with scripted_gate(buffer_limit=2, buffer_max_age=5.0) as (gate, redis):
        gate.unsubscribed()
        returned: list[bytes] = []

        async def send(payload: bytes) -> None:
            await gate.send("all", payload, gate.expected_all)
            returned.append(payload)

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, b"a")
            tg.start_soon(send, b"b")
            await eventually(lambda: gate.buffered == 2)
            with pytest.raises(RedisBackplaneError, match="2 messages are waiting"):
                await gate.send("all", b"c", gate.expected_all)
            gate.subscribed()  # own announcement comes back, no peers: open, flush in order
        assert returned == [b"a", b"b"]
        assert redis.sent() == [b"a", b"b"]


async def test_a_send_waits_at_most_buffer_max_age_and_a_cancelled_one_leaves() -> None:
    async with scripted_gate(buffer_max_age=0.1) as (gate, redis):
        gate.unsubscribed()
        with anyio.fail_after(5), pytest.raises(RedisBackplaneError, match=r"within 0\.1 s"):
            await gate.send("all", b"old", gate.expected_all)
        assert gate.buffered == 0
        with anyio.move_on_after(0.01):
            await gate.send("all", b"cancelled", gate.expected_all)
        assert gate.buffered == 0
        gate.subscribed()
        await gate.wait_open()
        await gate.send("all", b"new", gate.expected_all)
        assert redis.sent() == [b"new"]


async def test_a_send_nobody_receives_is_refused_at_its_deadline_without_a_spin() -> None:
    # A subscription Redis lost alone: every PUBLISH reaches nobody, and the server's own
    # announcement still comes back, so the gate reopens each time; it pauses first.
    async with scripted_gate(buffer_max_age=0.3, heartbeat_interval=0.05, peer_timeout=1.0) as (
        gate,
        redis,
    ):
        redis.counts["all"] = 0
        with anyio.fail_after(5), pytest.raises(RedisBackplaneError, match=r"within 0\.3 s"):
            await gate.send("all", b"x", gate.expected_all)
        assert 2 <= len(redis.sent()) <= 12  # a few tries, one pause (0.05 s) apart
        assert gate.buffered == 0


async def test_a_send_in_flight_at_its_deadline_that_nobody_got_is_refused() -> None:
    async with scripted_gate(buffer_max_age=0.2) as (gate, redis):
        redis.counts["all"] = 0
        redis.hold = anyio.Event()
        gate.unsubscribed()
        outcome: list[str] = []
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_recorded, gate, outcome)
                await eventually(lambda: gate.buffered == 1)
                past = anyio.current_time() + 0.2
                gate.subscribed()  # opens: the flusher publishes it, Redis is slow to answer
                await eventually(lambda: redis.holding)
                await eventually(lambda: anyio.current_time() > past)  # the send's deadline
                redis.hold.set()  # the answer: nobody got it
        assert outcome == [
            "The Redis backplane did not come back within 0.2 s; the message was not sent."
        ]
        assert gate.buffered == 0


async def test_a_stopped_gate_refuses_at_once() -> None:
    async with scripted_gate() as (gate, _redis):
        gate.unsubscribed()
        async with anyio.create_task_group() as tg:

            async def send() -> None:
                with pytest.raises(RedisBackplaneError, match="stopped"):
                    await gate.send("all", b"x", gate.expected_all)

            tg.start_soon(send)
            await eventually(lambda: gate.buffered == 1)
            gate.stop("The Redis backplane stopped.")
        with pytest.raises(RedisBackplaneError, match="not running"):
            await gate.send("all", b"y", gate.expected_all)


async def test_stopping_while_a_buffered_send_is_being_published_refuses_it_once() -> None:
    async with scripted_gate() as (gate, redis):
        redis.hold = anyio.Event()
        gate.unsubscribed()
        outcome: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_recorded, gate, outcome)
            await eventually(lambda: gate.buffered == 1)
            gate.subscribed()  # opens: the flusher publishes it, and Redis is slow to answer
            await eventually(lambda: redis.holding)
            gate.stop("The Redis backplane stopped.")
            redis.hold.set()
        assert outcome == ["The Redis backplane stopped."]
        assert gate.buffered == 0


# ------------------------------------------------------------------------- real Redis ---
async def test_servers_learn_each_other_and_stop_without_warnings(redis: RedisServer) -> None:
    hub = f"hub-{uuid.uuid4().hex}"
    a = RedisHubLifetimeManager(redis.url, hub_name=hub)
    b = RedisHubLifetimeManager(redis.url, hub_name=hub)
    with capture_logs() as logs:
        async with a.lifespan():
            async with b.lifespan():
                await eventually(lambda: a.peers == 1 and b.peers == 1)
                assert a.ready
                assert b.ready
            await eventually(lambda: a.peers == 0)  # b said goodbye: nothing is held back
            assert a.ready
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == []


async def test_a_server_that_vanished_without_goodbye_holds_broadcasts_until_its_timeout(
    redis: RedisServer,
) -> None:
    import redis.asyncio as aioredis

    hub = f"hub-{uuid.uuid4().hex}"
    options: dict[str, Any] = {"heartbeat_interval": 0.05, "peer_timeout": 0.5}
    a = RedisHubLifetimeManager(redis.url, hub_name=hub, **options)
    b = RedisHubLifetimeManager(redis.url, hub_name=hub, **options)
    client = aioredis.Redis.from_url(redis.url)
    try:
        async with a.lifespan(), b.lifespan():
            b1 = Conn("b1")
            await b.on_connected(b1)
            await eventually(lambda: a.peers == 1 and a.ready)
            # A server that announced itself once and is gone (crashed: no goodbye).
            await client.publish(
                f"signalr:{hub}:internal:servers", encode(RedisHello(server_name="ghost"))
            )
            await eventually(lambda: a.peers == 2)
            with pytest.raises(RedisBackplaneError, match="2 of 3 servers"):
                await a.send_all("Refused", [])
            assert not a.ready
            with anyio.fail_after(5):
                await a.send_all("Held", [])  # waits until the ghost's silence runs out
            assert a.ready
            assert a.peers == 1
            await eventually(lambda: len(b1.received) == 2)
            assert b1.calls() == [("Refused", ()), ("Held", ())]  # refused: reached only some
    finally:
        await client.aclose()


async def test_a_server_started_while_redis_is_down_holds_sends_until_it_is_up() -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    manager = RedisHubLifetimeManager(
        url,
        hub_name=f"hub-{uuid.uuid4().hex}",
        reconnect_delay=(0.02, 0.1),
        publish_timeout=1.0,
        subscribe_timeout=30.0,
    )
    conn = Conn("c1")
    with contextlib.ExitStack() as servers:
        async with contextlib.AsyncExitStack() as stack:
            started = anyio.current_time()
            await stack.enter_async_context(manager.lifespan())
            # Started at once, not after subscribe_timeout (30 s) for a gate that cannot open.
            assert anyio.current_time() - started < 10
            await manager.on_connected(conn)
            assert not manager.ready
            async with anyio.create_task_group() as tg:
                tg.start_soon(manager.send_all, "Early", [])
                await eventually(lambda: manager._gate.buffered == 1)
                await anyio.to_thread.run_sync(servers.enter_context, redis_server(port))
            assert manager.ready
            await eventually(lambda: conn.calls() == [("Early", ())])


async def test_every_accepted_message_arrives_once_across_a_redis_restart() -> None:
    """Three servers, two connections each (all in group ``g``), two senders per server
    alternating ``send_all`` and ``send_groups``; Redis is shut down and started again while
    they send. Every message a send accepted reaches all six connections exactly once and in
    each sender's order; a refused one reaches each at most once."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    hub = f"hub-{uuid.uuid4().hex}"
    options: dict[str, Any] = {
        "reconnect_delay": (0.02, 0.2),
        "heartbeat_interval": 0.2,
        "peer_timeout": 3.0,
        "publish_timeout": 1.0,
    }
    managers = [RedisHubLifetimeManager(url, hub_name=hub, **options) for _ in range(3)]
    conns = {m: [Conn(f"s{s}c{c}") for c in range(2)] for s, m in enumerate(managers)}
    keys = {f"s{s}k{k}": m for s, m in enumerate(managers) for k in range(2)}
    accepted: dict[str, list[int]] = {key: [] for key in keys}
    refused: dict[str, list[int]] = {key: [] for key in keys}
    buffered = 0  # accepted sends that started while their server's gate was closed
    stop = anyio.Event()

    async def sender(key: str) -> None:
        nonlocal buffered
        manager = keys[key]
        i = 0
        while not stop.is_set():
            i += 1
            was_ready = manager.ready
            try:
                if i % 2:
                    await manager.send_all("M", [key, i])
                else:
                    await manager.send_groups(["g"], "M", [key, i])
            except RedisBackplaneError:
                refused[key].append(i)
            else:
                accepted[key].append(i)
                buffered += not was_ready
            await anyio.lowlevel.checkpoint()

    def at_least(counts: dict[str, int], more: int) -> bool:
        return all(len(accepted[k]) >= counts[k] + more for k in keys)

    with contextlib.ExitStack() as servers:
        servers.enter_context(redis_server(port))
        async with contextlib.AsyncExitStack() as stack:
            for manager in managers:
                await stack.enter_async_context(manager.lifespan())
            for manager, local in conns.items():
                for conn in local:
                    await manager.on_connected(conn)
                    await manager.add_to_group(conn.connection_id, "g")
            await eventually(lambda: all(m.ready and m.peers == 2 for m in managers))

            async with anyio.create_task_group() as tg:
                for key in keys:
                    tg.start_soon(sender, key)
                start = {k: 0 for k in keys}
                await eventually(lambda: at_least(start, 20), 20)
                await anyio.to_thread.run_sync(_kill_redis, port)
                await eventually(lambda: not any(m.connected for m in managers))
                await anyio.to_thread.run_sync(servers.enter_context, redis_server(port))
                back = {k: len(v) for k, v in accepted.items()}
                await eventually(lambda: at_least(back, 20), 20)
                stop.set()

            # Settle: a last broadcast from each server; accepted messages were confirmed
            # before it was published, so they arrived before it.
            for manager in managers:
                await manager.send_all("Done", [])
            everyone = [c for local in conns.values() for c in local]
            await eventually(lambda: all(_dones(c) == 3 for c in everyone))

    for conn in everyone:
        for key in keys:
            got = [a[1] for t, a in conn.calls() if t == "M" and a[0] == key]
            assert got == sorted(set(got)), (conn.connection_id, key)  # in order, each once
            missing = sorted(set(accepted[key]) - set(got))
            assert missing == [], (conn.connection_id, key, missing)
    assert buffered > 0  # the restart really held some sends back until everyone was back
    total = sum(map(len, accepted.values()))
    print(f"accepted={total} buffered={buffered} refused={sum(map(len, refused.values()))}")


def _dones(conn: Conn) -> int:
    return sum(1 for t, _ in conn.calls() if t == "Done")
