"""The Redis backplane's delivery gate: no publish acknowledged into the void.

Theory of operation
-------------------
Redis pub/sub hands a message to the subscribers connected at the moment of ``PUBLISH`` and
answers how many there were; nothing is kept for a subscriber that is away. After Redis restarts,
a server's publishing connections reconnect on their next command, but its subscriber only after
noticing the loss, backing off and subscribing again: a message published meanwhile reaches
fewer servers than it should, possibly none, and ``PUBLISH`` still succeeds.

So every server announces itself on ``{prefix}:internal:servers`` (:class:`RedisHello`) once its
subscriber holds every channel it needs (the announcement follows Redis's confirmation of the
one ``SUBSCRIBE`` that names them all), again every ``heartbeat_interval`` seconds, and says
goodbye when it stops. From the announcements each server knows its live peers
(:class:`PeerTable`) and hence how many subscribers ``{prefix}:all`` must have: itself plus every
live peer. A group or user channel with local members must have at least one: itself.

The :class:`DeliveryGate` is *open* while every live server, this one included (its own
announcement came back through its subscription), has announced itself since the last
disruption. While open, a send is published at once and the count checked:

- at least the expected count: the send returns (accepted);
- ``0``: nobody got it, so it is kept (buffered, below) and the gate closes;
- fewer, but not 0: some server got it, so it cannot be sent again without duplicates: the caller
  gets :class:`RedisBackplaneError` and the gate closes.

The gate *closes* when the subscriber loses Redis or a count comes up short. While closed, sends
wait in a FIFO buffer (at most ``buffer_limit``; beyond it a send is refused at once), and this
server asks its peers to announce themselves (``ask``). It opens again once this server and every
live peer have announced since the disruption; a peer silent for ``peer_timeout`` seconds,
counted only while this server is subscribed, is taken for gone. Then the buffer is published in
order, oldest first, before any newer send. A caller waits at most ``buffer_max_age`` seconds for
its message to go out; after that it is withdrawn and the caller gets
:class:`RedisBackplaneError`. A ``PUBLISH`` that fails (Redis unreachable, timeout) may or may not
have reached Redis, so it is refused too, never repeated. Every send therefore either returns
after Redis confirmed the subscribers it needed, or raises: it is never reported as sent and then
lost.

What a count cannot show: a server whose subscription alone drops, while the publisher's holds,
misses group, user and connection messages until it is back (its peers see the shortfall only on
``{prefix}:all``), and a peer that crashed without saying goodbye holds broadcasts back (one
refused, the rest buffered) until its ``peer_timeout`` runs out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

from signalr_core._logging import get_logger
from signalr_core._redis_wire import RedisHello, encode
from signalr_core.errors import SignalRError

__all__ = ["DeliveryGate", "PeerTable", "RedisBackplaneError"]

Clock = Callable[[], float]
Publish = Callable[[str, bytes], Awaitable[int]]


class RedisBackplaneError(SignalRError):
    """Redis is unreachable, a message could not be delivered to every server that needed it,
    or another server did not acknowledge a group command in time."""


class PeerTable:
    """The other servers of a hub, learnt from their announcements.

    Announcements are stamped with the *epoch* they arrived in (the gate starts a new one at
    each disruption), so "heard since the disruption" needs no clock; the clock only times the
    silence after which a peer is taken for gone.

    Args:
        own_name: This server's name (its announcements count as proof of its own subscription).
        timeout: Seconds of silence after which a peer is taken for gone.
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(self, own_name: str, timeout: float, clock: Clock = time.monotonic) -> None:
        self._own = own_name
        self._timeout = timeout
        self._clock = clock
        self._own_heard = -1
        self._heard: dict[str, int] = {}
        self._deadline: dict[str, float] = {}

    def heard(self, name: str, epoch: int) -> bool:
        """``name`` announced itself in ``epoch``; returns whether it is a new peer."""
        if name == self._own:
            self._own_heard = epoch
            return False
        new = name not in self._heard
        self._heard[name] = epoch
        self._deadline[name] = self._clock() + self._timeout
        return new

    def gone(self, name: str) -> None:
        """``name`` said goodbye."""
        self._heard.pop(name, None)
        self._deadline.pop(name, None)

    def listening_again(self) -> None:
        """This server is subscribed again: peers' silence counts from now on."""
        floor = self._clock() + self._timeout
        for name, deadline in self._deadline.items():
            self._deadline[name] = max(deadline, floor)

    def expire(self) -> list[str]:
        """Forget the peers silent for longer than the timeout; returns their names."""
        now = self._clock()
        gone = [name for name, deadline in self._deadline.items() if deadline < now]
        for name in gone:
            self.gone(name)
        return gone

    def __len__(self) -> int:
        return len(self._heard)

    def all_heard_in(self, epoch: int) -> bool:
        """Whether this server and every live peer announced themselves in ``epoch``."""
        return self._own_heard == epoch and all(e == epoch for e in self._heard.values())


class _Pending:
    __slots__ = ("channel", "deadline", "done", "error", "expected", "in_flight", "payload")

    def __init__(
        self, channel: str, payload: bytes, expected: Callable[[], int], deadline: float
    ) -> None:
        self.channel = channel
        self.payload = payload
        self.expected = expected
        self.deadline = deadline  # anyio time after which it is refused, never published
        self.in_flight = False
        self.error: RedisBackplaneError | None = None
        self.done = anyio.Event()

    def finish(self, error: RedisBackplaneError | None = None) -> None:
        self.error = error
        self.done.set()


class DeliveryGate:
    """Publishes sends only while every server that needs them is subscribed (see the module).

    Run :meth:`run_announcements` and :meth:`run_flusher` in the lifespan's task group; the
    subscriber reports :meth:`subscribed` / :meth:`unsubscribed` and each :class:`RedisHello`
    it receives (:meth:`on_hello`).

    Args:
        publish: Publishes a payload on a channel and returns Redis's subscriber count (raises
            :class:`RedisBackplaneError` when Redis is unreachable).
        server_name: This server's name.
        servers_channel: The channel announcements travel on.
        buffer_limit: Sends that may wait while the gate is closed; beyond it they are refused.
        buffer_max_age: Seconds a send may wait for the gate before it is refused.
        heartbeat_interval: Seconds between announcements.
        peer_timeout: Seconds of silence after which a peer is taken for gone.
        clock: Monotonic seconds for peers' silence (injectable for tests).
    """

    def __init__(
        self,
        publish: Publish,
        *,
        server_name: str,
        servers_channel: str,
        buffer_limit: int,
        buffer_max_age: float,
        heartbeat_interval: float,
        peer_timeout: float,
        clock: Clock = time.monotonic,
    ) -> None:
        if peer_timeout <= heartbeat_interval:
            raise ValueError("peer_timeout must be longer than heartbeat_interval")
        self._publish = publish
        self._name = server_name
        self._channel = servers_channel
        self._limit = buffer_limit
        self._max_age = buffer_max_age
        self._interval = heartbeat_interval
        self.peers = PeerTable(server_name, peer_timeout, clock)
        self._queue: deque[_Pending] = deque()
        self._open = False
        self._running = False
        self._subscribed = False
        self._epoch = 0  # a new one at each disruption
        # After "nobody got it" the gate reopens only after a pause, doubled while it keeps
        # happening (a subscription Redis lost alone): never a publish/close/reopen spin.
        self._missing_pause = 0.0
        self._hold_until = 0.0
        # Held announcements still reach the peers within their timeout.
        self._max_pause = min(heartbeat_interval, (peer_timeout - heartbeat_interval) / 2)
        self._announce = anyio.Event()
        self._flush = anyio.Event()
        self._opened = anyio.Event()
        self._log = get_logger("signalr_core.redis").bind(server=server_name)

    @property
    def is_open(self) -> bool:
        """Whether sends are published at once (every live server is subscribed)."""
        return self._open

    @property
    def buffered(self) -> int:
        """Sends waiting for the gate to open."""
        return len(self._queue)

    async def wait_open(self) -> None:
        """Wait until the gate is open."""
        await self._opened.wait()

    # ---------------------------------------------------------------- what the subscriber says ---
    def subscribed(self) -> None:
        """The subscriber holds every channel again: announce, and count peers' silence anew."""
        self._subscribed = True
        self.peers.listening_again()
        self._announce.set()

    def unsubscribed(self) -> None:
        """The subscriber lost Redis."""
        self._subscribed = False
        self._close("backplane_subscriber_lost")

    def on_hello(self, hello: RedisHello) -> None:
        """An announcement arrived through the subscription."""
        if hello.bye:
            self.peers.gone(hello.server_name)
        else:
            if self.peers.heard(hello.server_name, self._epoch):
                self._log.info("backplane_peer_joined", peer=hello.server_name)
            if hello.ask and hello.server_name != self._name:
                self._announce.set()
        self._evaluate()

    def expected_all(self) -> int:
        """Subscribers the ``all`` channel must have: this server and every live peer."""
        return 1 + len(self.peers)

    # ----------------------------------------------------------------------------- sending ---
    async def send(self, channel: str, payload: bytes, expected: Callable[[], int]) -> None:
        """Publish ``payload`` once every server that needs it can receive it.

        ``expected()`` is how many subscribers the channel must have when it is published.

        Raises:
            RedisBackplaneError: Redis is unreachable, the message reached only some of the
                servers, the buffer is full, or it waited ``buffer_max_age`` seconds.
        """
        if not self._running:
            raise RedisBackplaneError("The Redis backplane is not running (enter lifespan()).")
        deadline = anyio.current_time() + self._max_age
        if self._open and not self._queue:
            count = await self._publish(channel, payload)
            wanted = expected()
            if count >= wanted:
                self._missing_pause = 0.0
                return
            if count > 0:
                self._close("backplane_delivery_incomplete", receivers=count, expected=wanted)
                raise RedisBackplaneError(
                    f"Redis delivered the message to {count} of {wanted} servers; "
                    "the others are not subscribed."
                )
            self._close("backplane_subscriber_missing", expected=wanted)
        await self._wait_in_buffer(_Pending(channel, payload, expected, deadline), deadline)

    async def _wait_in_buffer(self, entry: _Pending, deadline: float) -> None:
        if len(self._queue) >= self._limit:
            raise RedisBackplaneError(
                f"The Redis backplane is re-subscribing and {self._limit} messages are waiting "
                "already."
            )
        self._queue.append(entry)
        self._flush.set()
        try:
            with anyio.CancelScope(deadline=deadline):
                await entry.done.wait()
            if not entry.done.is_set() and entry.in_flight:
                # Being published right now: its outcome comes within the publish timeout (the
                # flusher refuses it if nobody got it, its deadline being past). Bounded all the
                # same: a caller never waits on Redis without a limit.
                with anyio.CancelScope(shield=True, deadline=anyio.current_time() + self._max_age):
                    await entry.done.wait()
        finally:
            if not entry.done.is_set() and not entry.in_flight and entry in self._queue:
                self._queue.remove(entry)  # timed out or cancelled while waiting
        if not entry.done.is_set():
            raise self._too_late()
        if entry.error is not None:
            raise entry.error

    def _too_late(self) -> RedisBackplaneError:
        return RedisBackplaneError(
            f"The Redis backplane did not come back within {self._max_age:g} s; "
            "the message was not sent."
        )

    def start(self) -> None:
        """The backplane runs: sends wait for the gate from now on instead of failing."""
        self._running = True

    def stop(self, reason: str) -> None:
        """The backplane stops: close quietly and refuse every buffered send."""
        self._running = False
        self._open = False
        self._opened = anyio.Event()
        self.fail_all(reason)

    def fail_all(self, reason: str) -> None:
        """Refuse every buffered send."""
        while self._queue:
            self._queue.popleft().finish(RedisBackplaneError(reason))

    # ------------------------------------------------------------------------ the two loops ---
    async def run_flusher(self) -> None:
        """Publish the buffer in order whenever the gate is open."""
        while True:
            await self._flush.wait()
            self._flush = anyio.Event()
            while self._open and self._queue:
                entry = self._queue[0]
                if anyio.current_time() >= entry.deadline:  # its caller gives up: never sent
                    self._queue.popleft()
                    entry.finish(self._too_late())
                    continue
                entry.in_flight = True
                error: RedisBackplaneError | None = None
                try:
                    count = await self._publish(entry.channel, entry.payload)
                except RedisBackplaneError as exc:
                    count, error = -1, exc  # may or may not have reached Redis: never repeated
                finally:
                    entry.in_flight = False
                if entry.done.is_set():
                    continue  # refused meanwhile (the backplane stops): no longer queued
                wanted = entry.expected()
                if error is None and count == 0 and wanted > 0:
                    self._close("backplane_subscriber_missing", expected=wanted)
                    if anyio.current_time() < entry.deadline:
                        break  # nobody got it: it stays first in line
                    error = self._too_late()  # nobody got it, and its caller gives up now
                self._queue.popleft()
                if error is None and count >= wanted:
                    self._missing_pause = 0.0
                if error is None and count < wanted:
                    self._close("backplane_delivery_incomplete", receivers=count, expected=wanted)
                    error = RedisBackplaneError(
                        f"Redis delivered the message to {count} of {wanted} servers; "
                        "the others are not subscribed."
                    )
                entry.finish(error)

    async def run_announcements(self) -> None:
        """Announce this server every heartbeat (at once when asked), and expire silent peers."""
        while True:
            with anyio.move_on_after(self._interval):
                await self._announce.wait()
            self._announce = anyio.Event()
            if (pause := self._hold_until - anyio.current_time()) > 0:
                await anyio.sleep(pause)
            if self._subscribed:  # silence only counts while this server can hear
                for name in self.peers.expire():
                    self._log.warning("backplane_peer_lost", peer=name)
                hello = RedisHello(server_name=self._name, ask=not self._open)
                try:
                    await self._publish(self._channel, encode(hello))
                except RedisBackplaneError as exc:
                    self._log.warning("backplane_announce_failed", error=str(exc))
            self._evaluate()

    async def say_goodbye(self) -> None:
        """Tell the peers this server stops (best effort)."""
        try:
            await self._publish(self._channel, encode(RedisHello(server_name=self._name, bye=True)))
        except RedisBackplaneError as exc:
            self._log.debug("backplane_goodbye_failed", error=str(exc))

    # --------------------------------------------------------------------------- internals ---
    def _close(self, event: str, **fields: int) -> None:
        if event == "backplane_subscriber_missing":
            self._missing_pause = min(max(2 * self._missing_pause, 0.05), self._max_pause)
            self._hold_until = anyio.current_time() + self._missing_pause
        self._epoch += 1
        if self._open:
            self._open = False
            self._opened = anyio.Event()
            self._log.warning(event, buffered=len(self._queue), **fields)
        self._announce.set()

    def _evaluate(self) -> None:
        if self._open or not self._subscribed or not self._running:
            return
        if self.peers.all_heard_in(self._epoch):
            self._open = True
            self._opened.set()
            self._flush.set()
            self._log.info("backplane_ready", peers=len(self.peers), buffered=len(self._queue))
