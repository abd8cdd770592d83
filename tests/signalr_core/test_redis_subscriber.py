"""The backplane's subscriber against a scripted pub/sub connection: what it subscribes after
a reconnection, and how it notices a connection that went quiet."""

from __future__ import annotations

from typing import Any

import anyio

from signalr_core._logging import get_logger
from signalr_core._redis_subscriber import Subscriber

FIXED = ("all",)
LAST = "servers"


class ScriptedPubSub:
    """Records commands; the first SUBSCRIBE waits for ``release`` (a slow reconnection)."""

    def __init__(self, release: anyio.Event | None = None) -> None:
        self.commands: list[tuple[str, ...]] = []
        self.release = release
        self.subscribing = anyio.Event()
        self.pings = 0
        self.closed = False

    async def subscribe(self, *channels: str) -> None:
        self.commands.append(("SUBSCRIBE", *channels))
        if self.release is not None and len(self.commands) == 1:
            self.subscribing.set()
            await self.release.wait()

    async def unsubscribe(self, *channels: str) -> None:
        self.commands.append(("UNSUBSCRIBE", *channels))

    async def ping(self) -> None:
        self.pings += 1

    async def get_message(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - redis-py's signature
    ) -> dict[str, Any] | None:
        await anyio.sleep(timeout if timeout is not None else 3600)
        return None  # quiet: neither messages nor an answer to a PING

    async def aclose(self) -> None:
        self.closed = True


class ScriptedClient:
    def __init__(self, pubsub: ScriptedPubSub) -> None:
        self._pubsub = pubsub

    def pubsub(self) -> ScriptedPubSub:
        return self._pubsub


def client_of(pubsub: ScriptedPubSub) -> Any:  # stands in for redis.asyncio.Redis
    return ScriptedClient(pubsub)


def subscriber(lost: list[str], keepalive: float = 3600.0) -> Subscriber:
    return Subscriber(
        fixed=FIXED,
        last=LAST,
        on_message=lambda channel, data: None,
        on_ready=lambda: None,
        on_lost=lambda: lost.append("lost"),
        subscribe_timeout=1.0,
        reconnect_delay=(3600.0, 3600.0),
        keepalive=keepalive,
        log=get_logger("tests.redis_subscriber"),
    )


async def test_channels_wanted_while_a_reconnection_subscribes_are_subscribed_before_last() -> None:
    lost: list[str] = []
    sub = subscriber(lost)
    sub.wanted.update({"group:kept", "group:left"})
    pubsub = ScriptedPubSub(release=anyio.Event())
    async with anyio.create_task_group() as tg:
        tg.start_soon(sub.run, client_of(pubsub))
        with anyio.fail_after(5):
            await pubsub.subscribing.wait()
            # A connection arrives and a member leaves a group while that SUBSCRIBE is on its
            # way: recorded only (no connection yet to send them on).
            await sub.subscribe("connection:late")
            await sub.unsubscribe("group:left")
            assert pubsub.release is not None
            pubsub.release.set()
            while len(pubsub.commands) < 4:  # noqa: ASYNC110 - commands the loop sends
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    first, *rest = pubsub.commands
    assert first[0] == "SUBSCRIBE"
    assert set(first[1:]) == {"all", "group:kept", "group:left"}
    assert rest == [
        ("SUBSCRIBE", "connection:late"),
        ("UNSUBSCRIBE", "group:left"),
        ("SUBSCRIBE", LAST),  # the gate opens only once everything wanted is in place
    ]


async def test_a_quiet_connection_is_pinged_and_lost_when_nothing_answers() -> None:
    lost: list[str] = []
    sub = subscriber(lost, keepalive=0.05)
    pubsub = ScriptedPubSub()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sub.run, client_of(pubsub))
            while not lost:  # noqa: ASYNC110 - the subscriber's own loop reports it
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert pubsub.pings == 1  # asked once, then given up on
    assert pubsub.closed
    assert not sub.connected
