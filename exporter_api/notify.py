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

from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

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
    "dispatch",
]
