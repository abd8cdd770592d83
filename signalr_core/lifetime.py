"""Who is connected and in which groups: the hub lifetime manager.

The server layer registers each connection (after its handshake) with the endpoint's
:class:`HubLifetimeManager` and sends every ``clients.*`` call through it. The in-process
:class:`DefaultHubLifetimeManager` keeps plain dicts; a scale-out backplane (Redis) implements
the same interface and forwards to other servers.

Sending never blocks: :meth:`HubConnectionHandle.write` encodes the message (once per protocol
per broadcast; the connection keeps the last encoding) and appends it to the connection's
bounded outgoing buffer. A connection whose buffer is full is aborted as a slow consumer, so
one slow reader cannot hold up a broadcast or make the server's memory grow.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from signalr_core._registry import ConnectionRegistry
from signalr_core.errors import ClientUnavailableError
from signalr_core.messages import HubMessage, InvocationMessage

if TYPE_CHECKING:
    from signalr_core.context import HubCallerContext

__all__ = [
    "CloseRequest",
    "DefaultHubLifetimeManager",
    "HubConnectionHandle",
    "HubLifetimeManager",
    "LocalConnection",
]


class HubConnectionHandle(Protocol):
    """The lifetime manager's view of one connection (implemented by the server layer)."""

    @property
    def connection_id(self) -> str:
        """The public connection id."""
        ...

    @property
    def user_id(self) -> str | None:
        """``Principal.user_id`` of the connection's user, ``None`` when anonymous."""
        ...

    def write(self, message: HubMessage) -> None:
        """Encode ``message`` and enqueue it without blocking (aborts a slow consumer)."""
        ...


@runtime_checkable
class LocalConnection(HubConnectionHandle, Protocol):
    """A connection of this process (the server layer's connections): it can be closed and
    asked for client results."""

    @property
    def context(self) -> HubCallerContext | None:
        """The caller context, ``None`` before a transport attached."""
        ...

    def close(self, error: str | None = None, *, allow_reconnect: bool = False) -> None:
        """Queue ``Close`` (with ``error`` / ``allowReconnect``) and end the connection."""
        ...

    async def invoke_client(
        self,
        method: str,
        args: Sequence[Any],
        *,
        result_type: Any = Any,
        timeout: float | None = None,  # noqa: ASYNC109 - the API ASP.NET users expect
    ) -> Any:
        """Invoke ``method`` on the client and wait for its result (client results)."""
        ...


@dataclass(frozen=True, kw_only=True)
class CloseRequest:
    """Which connections to close and what to tell them (serializable for a backplane).

    Attributes:
        connection_ids: Close these connections (``None``: any id).
        user_ids: Close the connections of these users (``None``: any user).
        error: Text of the ``Close`` message's ``error`` (``None``: a clean close).
        allow_reconnect: The ``Close`` message's ``allowReconnect``.
    """

    connection_ids: frozenset[str] | None = None
    user_ids: frozenset[str] | None = None
    error: str | None = None
    allow_reconnect: bool = False

    def matches(self, connection: HubConnectionHandle) -> bool:
        """Whether ``connection`` is selected (every given filter must match)."""
        if self.connection_ids is not None and connection.connection_id not in self.connection_ids:
            return False
        return self.user_ids is None or connection.user_id in self.user_ids


class HubLifetimeManager(ABC):
    """Tracks connections, groups and users, and fans messages out to them."""

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Resources that live as long as the endpoint (a backplane's subscriber tasks)."""
        return contextlib.nullcontext()

    @abstractmethod
    async def on_connected(self, connection: HubConnectionHandle) -> None:
        """A connection completed its handshake."""

    @abstractmethod
    async def on_disconnected(self, connection: HubConnectionHandle) -> None:
        """A connection ended; forget it and its group memberships."""

    @abstractmethod
    async def send_all(
        self, method: str, args: Sequence[Any], exclude: Collection[str] = ()
    ) -> None:
        """Invoke ``method`` on every connection except the ``exclude`` connection ids."""

    @abstractmethod
    async def send_connections(
        self, connection_ids: Collection[str], method: str, args: Sequence[Any]
    ) -> None:
        """Invoke ``method`` on the given connections."""

    @abstractmethod
    async def send_groups(
        self,
        groups: Collection[str],
        method: str,
        args: Sequence[Any],
        exclude: Collection[str] = (),
    ) -> None:
        """Invoke ``method`` on every member of ``groups`` (once each), minus ``exclude``."""

    @abstractmethod
    async def send_users(self, user_ids: Collection[str], method: str, args: Sequence[Any]) -> None:
        """Invoke ``method`` on every connection of the given users."""

    @abstractmethod
    async def add_to_group(self, connection_id: str, group: str) -> None:
        """Add a connection to a group."""

    @abstractmethod
    async def remove_from_group(self, connection_id: str, group: str) -> None:
        """Remove a connection from a group."""

    async def close_remote(self, request: CloseRequest) -> None:
        """Close the connections ``request`` selects on OTHER servers (scale-out hook).

        The endpoint closes the matching connections of its own process itself before calling
        this. The in-process manager has no other servers, so the default does nothing; a
        backplane publishes the request, and each receiving server calls
        ``handle.close(request.error, allow_reconnect=request.allow_reconnect)`` on its local
        handles that ``request.matches()`` and that are :class:`LocalConnection`.
        """
        del request

    async def invoke_connection(
        self,
        connection_id: str,
        method: str,
        args: Sequence[Any],
        *,
        result_type: Any = Any,
        timeout: float | None = None,  # noqa: ASYNC109 - the API ASP.NET users expect
    ) -> Any:
        """Client result from a connection that is NOT in this process (scale-out hook).

        The hub context and ``self.clients`` ask the connection directly when it is local, so
        this is only called for unknown ids. Without other servers it does not exist; a
        backplane forwards the invocation to the server holding the connection, which calls
        ``LocalConnection.invoke_client`` and sends the result or error text back.

        Raises:
            ClientUnavailableError: ``Connection '<id>' does not exist.``
        """
        del method, args, result_type, timeout
        raise ClientUnavailableError(f"Connection '{connection_id}' does not exist.")


def invocation(method: str, args: Sequence[Any]) -> InvocationMessage:
    """The fire-and-forget invocation message a ``send`` produces."""
    return InvocationMessage(target=method, arguments=tuple(args))


class DefaultHubLifetimeManager(HubLifetimeManager):
    """In-process lifetime manager: one :class:`ConnectionRegistry`, no I/O."""

    def __init__(self) -> None:
        self._registry: ConnectionRegistry[HubConnectionHandle] = ConnectionRegistry()

    @property
    def connection_count(self) -> int:
        """How many connections are registered."""
        return len(self._registry)

    def group_members(self, group: str) -> frozenset[str]:
        """Connection ids in ``group`` (for tests and diagnostics)."""
        return frozenset(self._registry.members(group))

    async def on_connected(self, connection: HubConnectionHandle) -> None:
        self._registry.add(connection)

    async def on_disconnected(self, connection: HubConnectionHandle) -> None:
        self._registry.remove(connection)

    async def send_all(
        self, method: str, args: Sequence[Any], exclude: Collection[str] = ()
    ) -> None:
        write_all(self._registry.excluding(self._registry.connections, exclude), method, args)

    async def send_connections(
        self, connection_ids: Collection[str], method: str, args: Sequence[Any]
    ) -> None:
        targets = (self._registry.get(cid) for cid in set(connection_ids))
        write_all([c for c in targets if c is not None], method, args)

    async def send_groups(
        self,
        groups: Collection[str],
        method: str,
        args: Sequence[Any],
        exclude: Collection[str] = (),
    ) -> None:
        targets = self._registry.in_groups(groups)
        write_all(self._registry.excluding(targets, exclude), method, args)

    async def send_users(self, user_ids: Collection[str], method: str, args: Sequence[Any]) -> None:
        write_all(list(self._registry.of_users(user_ids).values()), method, args)

    async def add_to_group(self, connection_id: str, group: str) -> None:
        connection = self._registry.get(connection_id)
        if connection is not None:  # as ASP.NET: unknown (or remote) connection ids are ignored
            self._registry.join(connection, group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        self._registry.leave(connection_id, group)


def write_all(targets: Sequence[HubConnectionHandle], method: str, args: Sequence[Any]) -> None:
    """Write one invocation message object to every target (each protocol encodes it once)."""
    if targets:
        message = invocation(method, args)
        for connection in targets:
            connection.write(message)
