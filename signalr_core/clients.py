"""Facades over the lifetime manager: ``self.clients``, ``self.groups`` and the hub context.

Each proxy's ``send(method, *args)`` invokes ``method`` on the selected clients without
waiting for them (fire-and-forget, as ASP.NET's ``SendAsync``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from signalr_core.lifetime import HubConnectionHandle, HubLifetimeManager, invocation

__all__ = ["ClientProxy", "GroupManager", "HubCallerClients", "HubClients", "HubContext"]


class ClientProxy:
    """A selection of clients; ``await proxy.send("Method", arg1, arg2)``."""

    __slots__ = ("_send",)

    def __init__(self, send: Callable[[str, Sequence[Any]], Awaitable[None]]) -> None:
        self._send = send

    async def send(self, method: str, *args: Any) -> None:
        """Invoke ``method`` with ``args`` on every selected client."""
        await self._send(method, args)


class _SingleClientProxy(ClientProxy):
    __slots__ = ()

    def __init__(self, connection: HubConnectionHandle) -> None:
        async def send(method: str, args: Sequence[Any]) -> None:
            connection.write(invocation(method, args))

        super().__init__(send)


class HubClients:
    """Client selections usable anywhere (``endpoint.hub_context.clients``)."""

    __slots__ = ("_manager",)

    def __init__(self, manager: HubLifetimeManager) -> None:
        self._manager = manager

    @property
    def all(self) -> ClientProxy:
        """Every connection."""
        manager = self._manager
        return ClientProxy(lambda method, args: manager.send_all(method, args))

    def all_except(self, connection_ids: Collection[str]) -> ClientProxy:
        """Every connection except ``connection_ids``."""
        manager, excluded = self._manager, tuple(connection_ids)
        return ClientProxy(lambda method, args: manager.send_all(method, args, excluded))

    def client(self, connection_id: str) -> ClientProxy:
        """One connection."""
        return self.clients((connection_id,))

    def clients(self, connection_ids: Collection[str]) -> ClientProxy:
        """Several connections."""
        manager, ids = self._manager, tuple(connection_ids)
        return ClientProxy(lambda method, args: manager.send_connections(ids, method, args))

    def group(self, group: str) -> ClientProxy:
        """Members of ``group``."""
        return self.groups((group,))

    def groups(self, groups: Collection[str]) -> ClientProxy:
        """Members of any of ``groups`` (each connection once)."""
        manager, names = self._manager, tuple(groups)
        return ClientProxy(lambda method, args: manager.send_groups(names, method, args))

    def group_except(self, group: str, connection_ids: Collection[str]) -> ClientProxy:
        """Members of ``group`` except ``connection_ids``."""
        manager, excluded = self._manager, tuple(connection_ids)
        return ClientProxy(
            lambda method, args: manager.send_groups((group,), method, args, excluded)
        )

    def user(self, user_id: str) -> ClientProxy:
        """Every connection of one user."""
        return self.users((user_id,))

    def users(self, user_ids: Collection[str]) -> ClientProxy:
        """Every connection of several users."""
        manager, ids = self._manager, tuple(user_ids)
        return ClientProxy(lambda method, args: manager.send_users(ids, method, args))


class HubCallerClients(HubClients):
    """``self.clients`` inside a hub: adds ``caller``, ``others`` and ``others_in_group``."""

    __slots__ = ("_connection",)

    def __init__(self, manager: HubLifetimeManager, connection: HubConnectionHandle) -> None:
        super().__init__(manager)
        self._connection = connection

    @property
    def caller(self) -> ClientProxy:
        """The connection that invoked the method."""
        return _SingleClientProxy(self._connection)

    @property
    def others(self) -> ClientProxy:
        """Every connection except the caller."""
        return self.all_except((self._connection.connection_id,))

    def others_in_group(self, group: str) -> ClientProxy:
        """Members of ``group`` except the caller."""
        return self.group_except(group, (self._connection.connection_id,))


class GroupManager:
    """``self.groups``: add connections to groups and remove them."""

    __slots__ = ("_manager",)

    def __init__(self, manager: HubLifetimeManager) -> None:
        self._manager = manager

    async def add(self, connection_id: str, group: str) -> None:
        """Add ``connection_id`` to ``group``."""
        await self._manager.add_to_group(connection_id, group)

    async def remove(self, connection_id: str, group: str) -> None:
        """Remove ``connection_id`` from ``group``."""
        await self._manager.remove_from_group(connection_id, group)


class HubContext:
    """Send to a hub's clients from outside hub methods (background jobs, other services).

    Attributes:
        clients: :class:`HubClients` selections.
        groups: :class:`GroupManager`.
        lifetime_manager: The endpoint's lifetime manager.
    """

    __slots__ = ("clients", "groups", "lifetime_manager")

    def __init__(self, manager: HubLifetimeManager) -> None:
        self.lifetime_manager = manager
        self.clients = HubClients(manager)
        self.groups = GroupManager(manager)
