"""The Redis backplane's subscriber: one pub/sub connection, kept across Redis restarts.

``wanted`` (the channels the local state needs besides the fixed ones) is the source of truth:
each (re)connection subscribes to the fixed channels, everything wanted (also what was wanted
while it subscribed) and, last, the channel whose confirmation tells the owner that all of them
are in place. A loss is logged and retried with exponential back-off; a connection that stays
quiet and does not answer a PING counts as lost. Messages are handed to the owner's callback
as ``(channel, data)``; undecodable ones are logged and skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis
from anyio.abc import TaskStatus
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from signalr_core._logging import StructuredLogger

__all__ = ["Subscriber"]


class Subscriber:
    """Subscriptions of one server, and the loop that holds them.

    Args:
        fixed: Channels always subscribed.
        last: Subscribed last on each (re)connection; ``on_ready`` runs on its confirmation.
        on_message: Called with ``(channel, data)`` for each message.
        on_ready: All channels are subscribed again.
        on_lost: The connection was lost (or the loop stops).
        subscribe_timeout: Seconds to wait for Redis to confirm a new subscription.
        reconnect_delay: ``(first, max)`` seconds between reconnection attempts.
        keepalive: Seconds of quiet after which Redis is pinged; as long again without an
            answer and the connection is taken for lost.
        log: The backplane's logger.
    """

    def __init__(
        self,
        *,
        fixed: Sequence[str],
        last: str,
        on_message: Callable[[str, bytes], None],
        on_ready: Callable[[], None],
        on_lost: Callable[[], None],
        subscribe_timeout: float,
        reconnect_delay: tuple[float, float],
        keepalive: float,
        log: StructuredLogger,
    ) -> None:
        self._fixed = tuple(fixed)
        self._last = last
        self._on_message = on_message
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._subscribe_timeout = subscribe_timeout
        self._reconnect_delay = reconnect_delay
        self._keepalive = keepalive
        self._log = log
        self.wanted: set[str] = set()
        self._pubsub: PubSub | None = None
        self.confirmations: dict[str, anyio.Event] = {}

    @property
    def connected(self) -> bool:
        """Whether the subscriber currently holds a connection to Redis."""
        return self._pubsub is not None

    async def subscribe(self, channel: str) -> None:
        """Want ``channel``; wait (bounded) for Redis to confirm it when connected."""
        self.wanted.add(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return  # subscribed with everything wanted on reconnection
        event = self.confirmations.setdefault(channel, anyio.Event())
        try:
            await pubsub.subscribe(channel)
        except (RedisError, OSError) as exc:
            self._log.warning("backplane_subscribe_failed", error=str(exc))
            return
        with anyio.move_on_after(self._subscribe_timeout) as scope:
            await event.wait()
        if scope.cancelled_caught:
            self.confirmations.pop(channel, None)
            self._log.warning("backplane_subscribe_unconfirmed")

    async def wait_confirmed(self, channel: str) -> None:
        """Wait (bounded) until a subscription to ``channel`` in flight is confirmed."""
        in_flight = self.confirmations.get(channel)
        if in_flight is not None:
            with anyio.move_on_after(self._subscribe_timeout):
                await in_flight.wait()

    async def unsubscribe(self, channel: str) -> None:
        """No longer want ``channel``."""
        self.wanted.discard(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            await pubsub.unsubscribe(channel)
        except (RedisError, OSError) as exc:
            self._log.warning("backplane_unsubscribe_failed", error=str(exc))

    async def run(
        self, client: aioredis.Redis, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold the subscriptions until cancelled; ``started`` after the first attempt."""
        first_delay, max_delay = self._reconnect_delay
        delay = first_delay
        started = False
        lost = False
        while True:
            pubsub = client.pubsub()
            try:
                await self._subscribe_all(pubsub)
                channels = len(self._fixed) + len(self.wanted) + 1
                if lost:
                    self._log.info("backplane_reconnected", channels=channels)
                else:
                    self._log.info("backplane_connected")
                lost, delay = False, first_delay
                if not started:
                    started = True
                    task_status.started()
                await self._read(pubsub)
            except (RedisError, OSError) as exc:
                self._log.warning(
                    "backplane_connection_lost",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=delay,
                )
                lost = True
            finally:
                self._pubsub = None
                self._on_lost()
                with anyio.CancelScope(shield=True):
                    try:
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                    except (RedisError, OSError) as exc:
                        self._log.debug("backplane_close_failed", error=str(exc))
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(delay)
            delay = min(delay * 2, max_delay)

    async def _subscribe_all(self, pubsub: PubSub) -> None:
        """Subscribe a new connection to every channel, ``last`` after all the others."""
        snapshot = set(self.wanted)
        await pubsub.subscribe(*self._fixed, *snapshot)
        # From here on subscribe() and unsubscribe() go to Redis themselves; what they recorded
        # while that SUBSCRIBE was on its way is caught up before ``last`` opens the gate.
        self._pubsub = pubsub
        if missing := self.wanted - snapshot:
            await pubsub.subscribe(*missing)
        if dropped := snapshot - self.wanted:
            await pubsub.unsubscribe(*dropped)
        await pubsub.subscribe(self._last)

    async def _read(self, pubsub: PubSub) -> None:
        """Hand messages over until the connection fails. Quiet for ``keepalive`` seconds, it is
        asked a PING; no answer within ``keepalive`` more is a lost connection (a network that
        drops it silently never says so, and Redis restarted meanwhile holds nothing for it)."""
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self._keepalive)
            if message is not None:
                pinged = False
                self._handle(message)
            elif pinged:
                raise RedisConnectionError(f"no answer from Redis within {self._keepalive:g} s")
            else:
                await pubsub.ping()
                pinged = True

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode()
        if kind == "subscribe":
            if channel == self._last:
                self._on_ready()
            event = self.confirmations.pop(channel, None)
            if event is not None:
                event.set()
            return
        if kind != "message":
            return
        try:
            self._on_message(channel, message["data"])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._log.warning("backplane_message_malformed", channel=channel, error=str(exc))
