"""Client results across servers over Redis (ASP.NET 7's ``InvokeConnectionAsync``).

The invoking server publishes a :class:`RedisClientInvocation` (server-unique invocation id, its
own return channel) on the connection's channel and waits for the :class:`RedisCompletion`; the
owning server runs ``LocalConnection.invoke_client`` in a task of the backplane's task group and
publishes the completion: the raw value the client sent with its hub protocol's name (decoded by
the waiting side exactly as the local path would) or an error text and kind. Both tables are
bounded by ``max_pending_results``; every wait by the caller's ``timeout``.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from signalr_core._logging import StructuredLogger
from signalr_core._redis_delivery import RedisBackplaneError
from signalr_core._redis_wire import (
    CompletionKind,
    RedisClientInvocation,
    RedisCompletion,
    decode_completion,
    encode,
)
from signalr_core.errors import (
    ClientResultError,
    ClientUnavailableError,
    InvocationError,
    SignalRError,
)
from signalr_core.lifetime import LocalConnection
from signalr_core.protocols import HubProtocol, default_protocols

__all__ = ["ClientResults"]

Publish = Callable[[str, bytes], Awaitable[int]]


class _RemoteResult:
    """One client result this server waits for from another server."""

    __slots__ = ("completion", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.completion: RedisCompletion | None = None


class ClientResults:
    """Both sides of client results for connections on other servers.

    Args:
        publish: Raw publish (returns Redis's subscriber count).
        server_name: This server's name (prefix of its invocation ids).
        return_channel: The channel this server's completions arrive on.
        max_pending: Results waited for at once, and (separately) invocations run at once.
        publish_timeout: Bound on telling a waiting server that this one stops.
        reply_buffer: Completions queued for publishing.
        log: The backplane's logger.
    """

    def __init__(
        self,
        publish: Publish,
        *,
        server_name: str,
        return_channel: str,
        max_pending: int,
        publish_timeout: float,
        reply_buffer: int,
        log: StructuredLogger,
    ) -> None:
        self._publish = publish
        self._server_name = server_name
        self.return_channel = return_channel
        self._max_pending = max_pending
        self._publish_timeout = publish_timeout
        self._reply_buffer = reply_buffer
        self._log = log
        self._protocols: dict[str, HubProtocol] = default_protocols()
        self.waiting: dict[str, _RemoteResult] = {}
        self._ids = itertools.count(1)
        self.serving = 0
        self._replies: MemoryObjectSendStream[tuple[str, RedisCompletion]] | None = None
        self._task_group: TaskGroup | None = None

    # ------------------------------------------------------------------------ running ---
    async def run(self, task_group: TaskGroup) -> None:
        """Publish replies until cancelled; serve invocations in ``task_group``."""
        send, receive = anyio.create_memory_object_stream[tuple[str, RedisCompletion]](
            self._reply_buffer
        )
        self._replies, self._task_group = send, task_group
        try:
            async with send, receive:
                await self._reply_loop(receive)
        finally:
            self._replies, self._task_group = None, None

    def fail_pending(self, reason: str) -> None:
        """Fail every wait (the completions can no longer arrive)."""
        for invocation_id, pending in self.waiting.items():
            if not pending.event.is_set():
                pending.completion = RedisCompletion(
                    invocation_id=invocation_id, kind=CompletionKind.UNAVAILABLE, error=reason
                )
                pending.event.set()

    # ------------------------------------------------------------------ waiting side ---
    async def invoke(
        self,
        channel: str,
        connection_id: str,
        method: str,
        args: Sequence[Any],
        *,
        result_type: Any,
        timeout: float | None,  # noqa: ASYNC109 - the API ASP.NET users expect
    ) -> Any:
        """Ask the server holding ``connection_id`` (on ``channel``) for a client result."""
        if len(self.waiting) >= self._max_pending:
            raise ClientUnavailableError(
                "Too many client results are waiting for connections on other servers."
            )
        invocation_id = f"{self._server_name}:{next(self._ids)}"
        pending = _RemoteResult()
        self.waiting[invocation_id] = pending
        try:
            inv = RedisClientInvocation(
                target=method,
                arguments=tuple(args),
                invocation_id=invocation_id,
                return_channel=self.return_channel,
                timeout=timeout,
            )
            try:
                receivers = await self._publish(channel, encode(inv))
            except RedisBackplaneError as exc:
                raise ClientUnavailableError(
                    f"Connection '{connection_id}' cannot be reached: {exc}"
                ) from exc
            if receivers < 1:
                raise ClientUnavailableError(f"Connection '{connection_id}' does not exist.")
            with anyio.move_on_after(timeout):
                await pending.event.wait()
        finally:
            del self.waiting[invocation_id]
        completion = pending.completion
        if completion is None:
            raise TimeoutError(
                f"No result for '{method}' from connection '{connection_id}' within {timeout} s."
            )
        return self._result(completion, result_type)

    def on_completion(self, data: bytes) -> None:
        """A completion arrived on this server's return channel."""
        completion = decode_completion(data)
        pending = self.waiting.get(completion.invocation_id)
        if pending is not None and not pending.event.is_set():
            pending.completion = completion
            pending.event.set()

    def _result(self, completion: RedisCompletion, result_type: Any) -> Any:
        kind = completion.kind
        if kind is CompletionKind.ERROR:
            raise ClientResultError(completion.error or "")
        if kind is CompletionKind.TIMEOUT:
            raise TimeoutError(completion.error or "")
        if kind is not CompletionKind.RESULT:
            raise ClientUnavailableError(completion.error or "")
        if completion.result is None:
            return None
        name = getattr(result_type, "__name__", repr(result_type))
        protocol = self._protocols.get(completion.protocol)
        if protocol is None:
            raise ClientResultError(f"Error trying to deserialize result to {name}.")
        try:
            return protocol.decode_argument(msgspec.Raw(completion.result), result_type)
        except InvocationError as exc:
            raise ClientResultError(f"Error trying to deserialize result to {name}.") from exc

    # ------------------------------------------------------------------ owning side ---
    def on_invocation(
        self, connection_id: str, connection: object | None, inv: RedisClientInvocation
    ) -> None:
        """A client-result invocation for local connection ``connection_id`` arrived."""
        tg = self._task_group
        if tg is None:
            return
        if connection is None or not isinstance(connection, LocalConnection):
            self._reply_soon(
                inv, CompletionKind.UNAVAILABLE, f"Connection '{connection_id}' disconnected."
            )
        elif self.serving >= self._max_pending:
            self._reply_soon(
                inv,
                CompletionKind.UNAVAILABLE,
                f"Connection '{connection_id}' has too many pending client results.",
            )
        else:
            self.serving += 1
            tg.start_soon(self._serve, connection, inv)

    def _reply_soon(self, inv: RedisClientInvocation, kind: CompletionKind, error: str) -> None:
        if self._replies is None:
            return
        completion = RedisCompletion(invocation_id=inv.invocation_id, kind=kind, error=error)
        try:
            self._replies.send_nowait((inv.return_channel, completion))
        except anyio.WouldBlock:
            self._log.warning("backplane_result_reply_dropped")

    async def _reply_loop(
        self, replies: MemoryObjectReceiveStream[tuple[str, RedisCompletion]]
    ) -> None:
        async for channel, completion in replies:
            await self._send_completion(channel, completion)

    async def _send_completion(self, channel: str, completion: RedisCompletion) -> None:
        try:
            await self._publish(channel, encode(completion))
        except RedisBackplaneError as exc:
            self._log.warning("backplane_result_reply_failed", error=str(exc))

    async def _serve(self, connection: LocalConnection, inv: RedisClientInvocation) -> None:
        """Run a client-result invocation from another server on a local connection."""
        try:
            try:
                completion = await self._invoke_local(connection, inv)
            except anyio.get_cancelled_exc_class():
                # This server is stopping: tell the waiting server now, not at its timeout.
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._publish_timeout):
                    await self._send_completion(
                        inv.return_channel,
                        RedisCompletion(
                            invocation_id=inv.invocation_id,
                            kind=CompletionKind.UNAVAILABLE,
                            error=f"Connection '{connection.connection_id}' disconnected.",
                        ),
                    )
                raise
            await self._send_completion(inv.return_channel, completion)
        finally:
            self.serving -= 1

    async def _invoke_local(
        self, connection: LocalConnection, inv: RedisClientInvocation
    ) -> RedisCompletion:
        invocation_id = inv.invocation_id
        protocol = getattr(connection, "protocol", None)
        name = getattr(protocol, "name", None)
        try:
            if isinstance(name, str) and name in self._protocols:
                # Forward the value exactly as the client encoded it (as ASP.NET does).
                raw = await connection.invoke_client(
                    inv.target, inv.arguments, result_type=msgspec.Raw, timeout=inv.timeout
                )
                result = None if raw is None else bytes(raw)
            else:  # a connection without a built-in protocol: forward the plain value
                name = "messagepack"
                value = await connection.invoke_client(
                    inv.target, inv.arguments, result_type=Any, timeout=inv.timeout
                )
                result = encode(value)
        except ClientResultError as exc:
            kind, error = CompletionKind.ERROR, str(exc)
        except TimeoutError as exc:
            kind, error = CompletionKind.TIMEOUT, str(exc)
        except SignalRError as exc:  # ClientUnavailableError and anything else it refuses with
            kind, error = CompletionKind.UNAVAILABLE, str(exc)
        else:
            return RedisCompletion(
                invocation_id=invocation_id,
                kind=CompletionKind.RESULT,
                protocol=name,
                result=result,
            )
        return RedisCompletion(invocation_id=invocation_id, kind=kind, error=error)
