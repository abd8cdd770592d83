"""The run events' outbox: the engine hands events over without waiting for the hub.

A run's change is saved, then its events are published, inside the step that made it (shielded
from cancellation: a change is never torn). Sending to a SignalR group may wait: with the Redis
backplane down, each send waits up to its ``buffer_max_age`` (10 s) before it is refused, so an
export making dozens of events would crawl through a Redis outage, and a drain (SIGTERM) would
wait on it. So the engine puts events here and goes on; one sender task publishes them in the
order they came, as fast as the hub takes them. Events are best effort (a client reads the run's
state on (re)connection): the queue is bounded, and when it is full the oldest event gives way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import structlog

from exporter_api.runs.executor import EventPublisher, publish_best_effort

_log = structlog.get_logger("exporter_api.runs.outbox")

QUEUE_LIMIT = 10_000  # events waiting for the sender; beyond it the oldest are dropped
FLUSH_TIMEOUT_S = 5.0  # at shutdown, what is still queued gets this long to go out
CATCH_UP_TIMEOUT_S = 2.0  # a subscription waits at most this long for the events before it


class EventOutbox:
    """An :class:`~exporter_api.runs.executor.EventPublisher` that queues for ``inner``.

    :meth:`publish` never waits and never raises; :meth:`running` runs the sender (events
    published before it or after it are sent at once, in the caller's task).
    """

    def __init__(
        self,
        inner: EventPublisher,
        *,
        limit: int = QUEUE_LIMIT,
        flush_timeout_s: float = FLUSH_TIMEOUT_S,
    ) -> None:
        self._inner = inner
        self._limit = limit
        self._flush_timeout_s = flush_timeout_s
        self._queue: deque[tuple[str, str, object]] = deque()
        self._wake = anyio.Event()
        self._running = False
        self._closing = False
        self._dropping = False  # dropping since the queue was last empty (logged once)
        self.dropped = 0
        # Events accepted so far, and how many of them are done with (sent, failed or dropped);
        # ``_advanced`` is set (and replaced) whenever ``_done`` grows.
        self._accepted = 0
        self._done = 0
        self._advanced = anyio.Event()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def publish(self, run_id: str, method: str, payload: object) -> None:
        if not self._running:
            await publish_best_effort(self._inner, run_id, method, payload)
            return
        self._accepted += 1
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            self.dropped += 1
            self._advance()
            if not self._dropping:
                self._dropping = True
                _log.warning("hub_events_dropped", queued=len(self._queue), limit=self._limit)
        self._queue.append((run_id, method, payload))
        self._wake.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Send what is queued until the block ends, then for up to ``flush_timeout_s`` more."""
        self._closing = False
        stopped = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._sender, stopped)
            self._running = True
            try:
                yield
            finally:
                self._closing = True  # the sender returns once it has sent everything
                self._wake.set()
                with anyio.move_on_after(self._flush_timeout_s, shield=True):
                    await stopped.wait()
                self._running = False
                if self._queue:
                    _log.warning("hub_events_unsent", count=len(self._queue))
                    self._queue.clear()
                self._done = self._accepted  # nothing more goes out: nobody waits for it
                self._advanced.set()
                tg.cancel_scope.cancel()

    async def caught_up(self, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
        """Wait (at most ``timeout_s``) until every event accepted before this call is done
        with: a state read after it is then no older than any of those events a subscriber
        may still receive from this instance."""
        target = self._accepted
        with anyio.move_on_after(timeout_s):
            while self._done < target:
                await self._advanced.wait()

    def _advance(self) -> None:
        self._done += 1
        self._advanced.set()
        self._advanced = anyio.Event()

    async def _sender(self, stopped: anyio.Event) -> None:
        try:
            while True:
                while self._queue:
                    run_id, method, payload = self._queue.popleft()
                    await publish_best_effort(self._inner, run_id, method, payload)
                    self._advance()
                self._dropping = False
                if self._closing:
                    return
                self._wake = anyio.Event()
                await self._wake.wait()
        finally:
            stopped.set()


__all__ = ["EventOutbox"]
