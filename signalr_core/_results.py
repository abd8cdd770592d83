"""Client results: the answers a connection waits for, and worker slots lent meanwhile.

Theory of operation
===================

``HubServerConnection.invoke_client`` sends an Invocation with an id (``r1``, ``r2``, ...) and
waits on an entry of the connection's :class:`ClientResults` table (bounded by
``max_pending_client_results``); the message loop hands the client's Completion to it
(:meth:`ClientResults.complete`), and when the connection ends :meth:`ClientResults.fail_all`
wakes every waiter with no completion ("disconnected"). The table is made by the first client
result a connection waits for: most connections never need one.

A hub method that waits for a client result from an invocation worker lends its slot
(:class:`WorkerSlot`): a loan worker takes jobs until the result arrives (only while waiting
for a job is it cancelled, :class:`Loan`), so the message loop never blocks behind a method that
needs the loop to read the answer (ASP.NET 8 releases its semaphore the same way).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import anyio

from signalr_core.messages import CompletionMessage

__all__ = [
    "ClientResults",
    "Loan",
    "PendingResult",
    "WorkerSlot",
    "current_worker",
    "results_forbidden",
]


class PendingResult:
    """A client result the server waits for: set once, with or without a completion."""

    __slots__ = ("completion", "event", "result_type")

    def __init__(self, result_type: Any) -> None:
        self.result_type = result_type
        self.event = anyio.Event()
        self.completion: CompletionMessage | None = None


class ClientResults:
    """The client results one connection waits for, by invocation id.

    Args:
        limit: The most results waited for at once (``max_pending_client_results``).
    """

    __slots__ = ("_last_id", "_pending", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending: dict[str, PendingResult] = {}
        self._last_id = 0

    def __len__(self) -> int:
        return len(self._pending)

    def open(self, result_type: Any) -> tuple[str, PendingResult] | None:
        """A new entry and its invocation id; ``None`` when ``limit`` are already waited for."""
        if len(self._pending) >= self.limit:
            return None
        self._last_id += 1
        invocation_id = f"r{self._last_id}"
        pending = self._pending[invocation_id] = PendingResult(result_type)
        return invocation_id, pending

    def forget(self, invocation_id: str) -> None:
        """The waiter is done (answered, timed out or cancelled)."""
        self._pending.pop(invocation_id, None)

    def complete(self, completion: CompletionMessage) -> bool:
        """Hand the client's Completion to its waiter; ``False`` if nobody waits for its id."""
        pending = self._pending.get(completion.invocation_id)
        if pending is None:
            return False
        pending.completion = completion
        pending.event.set()
        return True

    def fail_all(self) -> None:
        """The connection ended: wake every waiter without a completion."""
        for pending in self._pending.values():
            pending.event.set()


class Loan:
    """A worker slot lent while a hub method waits for a client result."""

    __slots__ = ("ended", "scope")

    def __init__(self) -> None:
        self.ended = False
        self.scope: anyio.CancelScope | None = None

    def end(self) -> None:
        self.ended = True
        if self.scope is not None:
            self.scope.cancel()  # only ever cancels the wait for the next job


class WorkerSlot:
    """One invocation worker: lent (at most once at a time) while its method awaits results.

    Args:
        lend: Starts a loan worker in the connection's task group (``None`` when it cannot).
    """

    __slots__ = ("lend", "loan", "waiting")

    def __init__(self, lend: Callable[[], Loan | None]) -> None:
        self.lend = lend
        self.waiting = 0
        self.loan: Loan | None = None

    def start_waiting(self) -> None:
        self.waiting += 1
        if self.loan is None:
            self.loan = self.lend()

    def stop_waiting(self) -> None:
        self.waiting -= 1
        if self.waiting == 0 and self.loan is not None:
            self.loan.end()
            self.loan = None


current_worker: contextvars.ContextVar[WorkerSlot | None] = contextvars.ContextVar(
    "signalr_core_current_worker", default=None
)
"""The invocation worker running the current task (for lending its slot)."""

results_forbidden: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "signalr_core_results_forbidden", default=None
)
"""Set while ``on_connected`` / ``on_disconnected`` run: the ASP.NET hook name."""
