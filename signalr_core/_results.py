"""Client results: the answers a connection waits for, and worker slots lent meanwhile.

Theory of operation
===================

``HubServerConnection.invoke_client`` checks that the connection may ask, then asks its
:class:`ClientResults` table (:meth:`ClientResults.invoke`): it sends an Invocation with an id
(``r1``, ``r2``, ...) through the connection (:class:`ResultsHost`) and waits on an entry
(bounded by ``max_pending_client_results``); the message loop hands the client's Completion to it
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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from signalr_core.errors import ClientResultError, ClientUnavailableError, InvocationError
from signalr_core.messages import CompletionMessage, HubMessage, InvocationMessage

if TYPE_CHECKING:
    from signalr_core.protocols import HubProtocol

__all__ = [
    "ClientResults",
    "Loan",
    "PendingResult",
    "ResultsHost",
    "WorkerSlot",
    "current_worker",
    "results_forbidden",
]


class ResultsHost(Protocol):
    """What a client result needs of its connection (``HubServerConnection``).

    Attributes:
        protocol: The negotiated hub protocol (decodes the result).
    """

    protocol: HubProtocol | None

    @property
    def connection_id(self) -> str:
        """The connection's public id (in error texts)."""

    def send(self, message: HubMessage) -> None:
        """Encode and queue ``message`` without blocking."""


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

    async def invoke(
        self,
        host: ResultsHost,
        method: str,
        args: Sequence[Any],
        result_type: Any,
        timeout: float | None,  # noqa: ASYNC109 - the API ASP.NET users expect
    ) -> Any:
        """Invoke ``method`` on the client and wait for its Completion, decoded to
        ``result_type`` (see :meth:`signalr_core.clients.SingleClientProxy.invoke` for the
        errors). A worker that waits lends its slot meanwhile."""
        opened = self.open(result_type)
        if opened is None:
            raise ClientUnavailableError(
                f"Connection '{host.connection_id}' has too many pending client results."
            )
        invocation_id, pending = opened
        worker = current_worker.get()
        if worker is not None:
            worker.start_waiting()
        try:
            host.send(
                InvocationMessage(target=method, arguments=tuple(args), invocation_id=invocation_id)
            )
            with anyio.move_on_after(timeout):
                await pending.event.wait()
        finally:
            self.forget(invocation_id)
            if worker is not None:
                worker.stop_waiting()
        completion = pending.completion
        if completion is None:
            if not pending.event.is_set():
                raise TimeoutError(
                    f"No result for '{method}' from connection '{host.connection_id}' "
                    f"within {timeout} s."
                )
            raise ClientUnavailableError(f"Connection '{host.connection_id}' disconnected.")
        if completion.error is not None:
            raise ClientResultError(completion.error)
        if not completion.has_result:
            return None
        protocol = host.protocol
        assert protocol is not None
        try:
            return protocol.decode_argument(completion.result, result_type)
        except InvocationError as exc:
            name = getattr(result_type, "__name__", repr(result_type))
            raise ClientResultError(f"Error trying to deserialize result to {name}.") from exc


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
