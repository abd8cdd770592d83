"""Signals between instances: a tiny publish/subscribe seam over the state store.

Cancel requests and revoked sessions must reach the instance that holds the run or the hub
connection in well under a second. With the PostgreSQL state store that is ``LISTEN``/``NOTIFY``
on the same database (`PostgresNotifier`, in the app lifespan); with SQLite there is one
process, and `LocalNotifier` calls the handlers in-process.

A notification is a hint, never the only record: the state store holds the truth (a run's
``cancel_requested`` flag, a session's revocation), so a notification lost while the listening
connection was being re-established is caught up by the periodic checks that remain as a safety
net.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
import asyncpg
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

if TYPE_CHECKING:
    from exporter_api.store.base import Store

Handler = Callable[[str], Awaitable[None]]

CANCEL_CHANNEL = "exporter_run_cancel"  # payload: run id
SESSION_REVOKED_CHANNEL = "exporter_session_revoked"  # payload: session id
RUN_QUEUED_CHANNEL = "exporter_run_queued"  # payload: run id (wakes idle claimers)

_log = structlog.get_logger("exporter_api.notify")


class Notifier(Protocol):
    """Deliver short string payloads on named channels to every instance (this one included)."""

    async def notify(self, channel: str, payload: str) -> None:
        """Send ``payload`` to every handler of ``channel`` on every instance."""
        ...

    def listen(self, channel: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(payload)`` for each notification; returns a function that stops it.

        Handlers should return quickly (set a flag, cancel a scope); an exception in one is
        logged and does not stop the others."""
        ...


class LocalNotifier:
    """One process: handlers are called directly, in registration order."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    async def notify(self, channel: str, payload: str) -> None:
        await dispatch(list(self._handlers.get(channel, ())), channel, payload)

    def listen(self, channel: str, handler: Handler) -> Callable[[], None]:
        handlers = self._handlers.setdefault(channel, [])
        handlers.append(handler)

        def forget() -> None:
            if handler in handlers:
                handlers.remove(handler)

        return forget


class _ConnectionLost(Exception):
    pass


_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    _ConnectionLost,
)


class PostgresNotifier:
    """``LISTEN``/``NOTIFY`` on the PostgreSQL state store, for several instances.

    One dedicated connection listens on every channel that has a handler (a channel gains or
    loses its ``LISTEN`` as handlers come and go). Notifications are queued in a bounded stream
    and dispatched in arrival order by one task, so a slow handler delays the next notification
    but never blocks the connection. ``notify()`` runs ``SELECT pg_notify(...)`` through the
    store's pool (inside a store transaction it goes out at commit). A lost connection is made
    again with exponential backoff (``notifier_reconnected``); notifications sent meanwhile are
    missed, which the store's records and the periodic checks cover (see the module docstring).
    A connection that dies silently is noticed by a ``SELECT 1`` every ``keepalive_s``.

    Use ``async with notifier.running():`` inside the app lifespan.

    Args:
        url: the state store's PostgreSQL URL (it may hold a password: never logged).
        store: the state store, whose pool sends the notifications.
        max_pending: notifications received and not yet dispatched; beyond that new ones are
            dropped (and logged) rather than held in unbounded memory.
        keepalive_s: how often an idle listening connection is checked.
        timeout_s: bound on connecting, on each ``LISTEN`` and on each check.
        backoff_s: (first, largest) wait between reconnection attempts.
    """

    def __init__(
        self,
        url: str,
        store: Store,
        *,
        max_pending: int = 1000,
        keepalive_s: float = 5.0,
        timeout_s: float = 5.0,
        backoff_s: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self._url = url
        self._store = store
        self._max_pending = max_pending
        self._keepalive_s = keepalive_s
        self._timeout_s = timeout_s
        self._backoff_s = backoff_s
        self._handlers: dict[str, list[Handler]] = {}
        self._listening: set[str] = set()  # channels LISTENed on the current connection
        self._send: MemoryObjectSendStream[tuple[str, str]] | None = None
        self._wake: anyio.Event | None = None  # set: handlers changed or the connection died
        self._synced: anyio.Event | None = None  # set: the connection listens as wanted

    async def notify(self, channel: str, payload: str) -> None:
        await self._store.execute(
            "SELECT pg_notify(:channel, :payload)", {"channel": channel, "payload": payload}
        )

    def listen(self, channel: str, handler: Handler) -> Callable[[], None]:
        handlers = self._handlers.setdefault(channel, [])
        handlers.append(handler)
        self._changed()

        def forget() -> None:
            if handler in handlers:
                handlers.remove(handler)
                self._changed()

        return forget

    async def synced(self) -> None:
        """Wait until the connection listens on every channel that has a handler: a handler
        added before this returns misses no notification sent after it."""
        while True:
            synced = self._synced
            if synced is None:
                raise RuntimeError("the notifier is not running")
            await synced.wait()
            if synced is self._synced:
                return

    def _wanted(self) -> set[str]:
        return {channel for channel, handlers in self._handlers.items() if handlers}

    def _changed(self) -> None:
        if self._wake is None or self._synced is None:
            return  # not running: the first connection listens as wanted
        if self._wanted() != self._listening:
            if self._synced.is_set():
                self._synced = anyio.Event()
            self._wake.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[PostgresNotifier]:
        """Listen and dispatch until the block ends; the first connection is made on entry
        (its failure is raised: the store was reachable a moment ago)."""
        first = await self._connect()
        send, receive = anyio.create_memory_object_stream[tuple[str, str]](self._max_pending)
        self._send, self._wake, self._synced = send, anyio.Event(), anyio.Event()
        try:
            with send, receive:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._dispatch_all, receive)
                    await tg.start(self._connection_loop, first)
                    yield self
                    tg.cancel_scope.cancel()
        finally:
            first.terminate()  # no-op when the loop already closed it
            self._send = self._wake = self._synced = None

    async def _connect(self) -> Any:
        with anyio.fail_after(self._timeout_s):
            return await asyncpg.connect(
                self._url, server_settings={"application_name": "exporter_notifier"}
            )

    async def _dispatch_all(self, receive: MemoryObjectReceiveStream[tuple[str, str]]) -> None:
        async for channel, payload in receive:
            await dispatch(list(self._handlers.get(channel, ())), channel, payload)

    def _on_notification(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        # asyncpg calls this from the event loop (call_soon), in the order notifications came.
        if self._send is None:
            return
        try:
            self._send.send_nowait((channel, payload))
        except anyio.WouldBlock:
            _log.warning("notify_dropped", channel=channel, reason="too_many_pending")

    async def _connection_loop(
        self, first: Any, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        shortest, longest = self._backoff_s
        delay = shortest
        conn: Any = first
        started = False

        def ready() -> None:  # the first time the connection listens as wanted
            nonlocal started
            if not started:
                started = True
                task_status.started()

        while True:
            if conn is None:
                try:
                    conn = await self._connect()
                except _CONNECTION_ERRORS as exc:
                    _log.warning(
                        "notifier_connect_failed", error_type=type(exc).__name__, retry_in_s=delay
                    )
                    await anyio.sleep(delay)
                    delay = min(delay * 2, longest)
                    continue
                _log.info("notifier_reconnected")
                delay = shortest
            try:
                await self._serve(conn, ready)
            except _CONNECTION_ERRORS as exc:
                _log.warning("notifier_connection_lost", error_type=type(exc).__name__)
            finally:
                conn.terminate()
                self._listening.clear()
                if self._synced is not None and self._synced.is_set():
                    self._synced = anyio.Event()
            conn = None
            await anyio.sleep(delay)
            delay = min(delay * 2, longest)

    async def _serve(self, conn: Any, ready: Callable[[], None]) -> None:
        """Keep ``conn`` listening as wanted until it fails (raises one of the errors above)."""

        def terminated(_conn: Any) -> None:
            if self._wake is not None:
                self._wake.set()

        conn.add_termination_listener(terminated)
        while True:
            if conn.is_closed():
                raise _ConnectionLost
            self._wake = anyio.Event()  # before syncing: a change during it wakes us again
            with anyio.fail_after(self._timeout_s):
                wanted = self._wanted()
                for channel in sorted(wanted - self._listening):
                    await conn.add_listener(channel, self._on_notification)
                    self._listening.add(channel)
                for channel in sorted(self._listening - wanted):
                    await conn.remove_listener(channel, self._on_notification)
                    self._listening.discard(channel)
            if self._synced is not None and self._wanted() == self._listening:
                self._synced.set()
            ready()
            with anyio.move_on_after(self._keepalive_s) as idle:
                await self._wake.wait()
            if idle.cancelled_caught:
                with anyio.fail_after(self._timeout_s):
                    await conn.fetchval("SELECT 1")


async def dispatch(handlers: list[Handler], channel: str, payload: str) -> None:
    """Run ``handlers`` one after another; a failing handler is logged, the rest still run."""
    for handler in handlers:
        try:
            await handler(payload)
        except Exception as exc:
            _log.warning("notify_handler_failed", channel=channel, error_type=type(exc).__name__)


__all__ = [
    "CANCEL_CHANNEL",
    "RUN_QUEUED_CHANNEL",
    "SESSION_REVOKED_CHANNEL",
    "Handler",
    "LocalNotifier",
    "Notifier",
    "PostgresNotifier",
    "dispatch",
]
