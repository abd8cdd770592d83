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
from typing import Any, Protocol

from signalr_core.messages import HubMessage, InvocationMessage

__all__ = ["DefaultHubLifetimeManager", "HubConnectionHandle", "HubLifetimeManager"]


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


def invocation(method: str, args: Sequence[Any]) -> InvocationMessage:
    """The fire-and-forget invocation message a ``send`` produces."""
    return InvocationMessage(target=method, arguments=tuple(args))


class DefaultHubLifetimeManager(HubLifetimeManager):
    """In-process lifetime manager: plain dicts, no I/O."""

    def __init__(self) -> None:
        self._connections: dict[str, HubConnectionHandle] = {}
        self._groups: dict[str, dict[str, HubConnectionHandle]] = {}
        self._groups_of: dict[str, set[str]] = {}
        self._users: dict[str, dict[str, HubConnectionHandle]] = {}

    @property
    def connection_count(self) -> int:
        """How many connections are registered."""
        return len(self._connections)

    def group_members(self, group: str) -> frozenset[str]:
        """Connection ids in ``group`` (for tests and diagnostics)."""
        return frozenset(self._groups.get(group, ()))

    async def on_connected(self, connection: HubConnectionHandle) -> None:
        self._connections[connection.connection_id] = connection
        user_id = connection.user_id
        if user_id is not None:
            self._users.setdefault(user_id, {})[connection.connection_id] = connection

    async def on_disconnected(self, connection: HubConnectionHandle) -> None:
        connection_id = connection.connection_id
        self._connections.pop(connection_id, None)
        for group in self._groups_of.pop(connection_id, ()):
            members = self._groups.get(group)
            if members is not None:
                members.pop(connection_id, None)
                if not members:
                    del self._groups[group]
        user_id = connection.user_id
        if user_id is not None:
            conns = self._users.get(user_id)
            if conns is not None:
                conns.pop(connection_id, None)
                if not conns:
                    del self._users[user_id]

    async def send_all(
        self, method: str, args: Sequence[Any], exclude: Collection[str] = ()
    ) -> None:
        message = invocation(method, args)
        if exclude:
            excluded = set(exclude)
            for connection in list(self._connections.values()):
                if connection.connection_id not in excluded:
                    connection.write(message)
        else:
            for connection in list(self._connections.values()):
                connection.write(message)

    async def send_connections(
        self, connection_ids: Collection[str], method: str, args: Sequence[Any]
    ) -> None:
        message = invocation(method, args)
        for connection_id in set(connection_ids):
            connection = self._connections.get(connection_id)
            if connection is not None:
                connection.write(message)

    async def send_groups(
        self,
        groups: Collection[str],
        method: str,
        args: Sequence[Any],
        exclude: Collection[str] = (),
    ) -> None:
        message = invocation(method, args)
        targets: dict[str, HubConnectionHandle] = {}
        for group in groups:
            members = self._groups.get(group)
            if members:
                targets.update(members)
        for connection_id in exclude:
            targets.pop(connection_id, None)
        for connection in targets.values():
            connection.write(message)

    async def send_users(self, user_ids: Collection[str], method: str, args: Sequence[Any]) -> None:
        message = invocation(method, args)
        targets: dict[str, HubConnectionHandle] = {}
        for user_id in user_ids:
            conns = self._users.get(user_id)
            if conns:
                targets.update(conns)
        for connection in targets.values():
            connection.write(message)

    async def add_to_group(self, connection_id: str, group: str) -> None:
        connection = self._connections.get(connection_id)
        if connection is None:
            return  # as ASP.NET: unknown (or remote) connection ids are ignored
        self._groups.setdefault(group, {})[connection_id] = connection
        self._groups_of.setdefault(connection_id, set()).add(group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.pop(connection_id, None)
            if not members:
                del self._groups[group]
        groups = self._groups_of.get(connection_id)
        if groups is not None:
            groups.discard(group)
