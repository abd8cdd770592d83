"""Facades over the lifetime manager: ``self.clients``, ``self.groups`` and the hub context.

Each proxy's ``send(method, *args)`` invokes ``method`` on the selected clients without
waiting for them (fire-and-forget, as ASP.NET's ``SendAsync``). A proxy for ONE client
(``clients.client(id)``, ``clients.caller``) also has ``invoke(method, *args)``, which waits for
the client's result (ASP.NET 7's client results, ``InvokeAsync<T>``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any

from signalr_core.context import HubCallerContext
from signalr_core.lifetime import (
    CloseRequest,
    HubConnectionHandle,
    HubLifetimeManager,
    LocalConnection,
    invocation,
)

__all__ = [
    "ClientProxy",
    "GroupManager",
    "HubCallerClients",
    "HubClients",
    "HubContext",
    "SingleClientProxy",
]

LocalLookup = Callable[[str], "LocalConnection | None"]
"""Finds a connection of this process by its public id."""


class ClientProxy:
    """A selection of clients; ``await proxy.send("Method", arg1, arg2)``."""

    __slots__ = ("_send",)

    def __init__(self, send: Callable[[str, Sequence[Any]], Awaitable[None]]) -> None:
        self._send = send

    async def send(self, method: str, *args: Any) -> None:
        """Invoke ``method`` with ``args`` on every selected client."""
        await self._send(method, args)


class SingleClientProxy(ClientProxy):
    """One client: ``send`` and ``invoke`` (wait for the client's result)."""

    __slots__ = ("_connection_id", "_lookup", "_manager")

    def __init__(
        self,
        manager: HubLifetimeManager,
        connection_id: str,
        lookup: LocalLookup | None,
        send: Callable[[str, Sequence[Any]], Awaitable[None]],
    ) -> None:
        super().__init__(send)
        self._manager = manager
        self._connection_id = connection_id
        self._lookup = lookup

    async def invoke(
        self,
        method: str,
        *args: Any,
        result_type: Any = Any,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        """Invoke ``method`` on the client and return what its handler returns.

        The official client answers with the return value of its ``connection.on(method, ...)``
        handler (awaited when it is a promise).

        Args:
            method: The client method (the client matches names case-insensitively).
            *args: Its arguments.
            result_type: What to convert the result to (msgspec types: ``int``, a Struct, ...);
                ``Any`` keeps plain JSON / MessagePack values.
            timeout: Seconds to wait; ``None`` waits until the connection ends.

        Raises:
            ClientResultError: The handler threw (its text), the client has no handler
                (``Client didn't provide a result.``) or the result does not convert.
            ClientUnavailableError: The connection does not exist, closed while waiting, or
                has ``HubOptions.max_pending_client_results`` results outstanding.
            ClientResultsNotAllowedError: Called from ``on_connected`` / ``on_disconnected``.
            TimeoutError: No answer within ``timeout``.
        """
        connection = self._lookup(self._connection_id) if self._lookup is not None else None
        if connection is not None:
            return await connection.invoke_client(
                method, args, result_type=result_type, timeout=timeout
            )
        return await self._manager.invoke_connection(
            self._connection_id, method, args, result_type=result_type, timeout=timeout
        )


class HubClients:
    """Client selections usable anywhere (``endpoint.hub_context.clients``)."""

    __slots__ = ("_lookup", "_manager")

    def __init__(self, manager: HubLifetimeManager, lookup: LocalLookup | None = None) -> None:
        self._manager = manager
        self._lookup = lookup

    @property
    def all(self) -> ClientProxy:
        """Every connection."""
        manager = self._manager
        return ClientProxy(lambda method, args: manager.send_all(method, args))

    def all_except(self, connection_ids: Collection[str]) -> ClientProxy:
        """Every connection except ``connection_ids``."""
        manager, excluded = self._manager, tuple(connection_ids)
        return ClientProxy(lambda method, args: manager.send_all(method, args, excluded))

    def client(self, connection_id: str) -> SingleClientProxy:
        """One connection (``send`` and ``invoke`` for client results)."""
        manager, ids = self._manager, (connection_id,)
        return SingleClientProxy(
            manager,
            connection_id,
            self._lookup,
            lambda method, args: manager.send_connections(ids, method, args),
        )

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

    def __init__(
        self,
        manager: HubLifetimeManager,
        connection: HubConnectionHandle,
        lookup: LocalLookup | None = None,
    ) -> None:
        super().__init__(manager, lookup)
        self._connection = connection

    @property
    def caller(self) -> SingleClientProxy:
        """The connection that invoked the method (``send`` and ``invoke``)."""
        connection = self._connection

        async def send(method: str, args: Sequence[Any]) -> None:
            connection.write(invocation(method, args))

        local = connection if isinstance(connection, LocalConnection) else None
        return SingleClientProxy(self._manager, connection.connection_id, lambda _: local, send)

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
    """Send to a hub's clients, or close their connections, from outside hub methods.

    Args:
        manager: The endpoint's lifetime manager.
        local_connections: This process's connections (the endpoint passes its registry);
            without it only :meth:`HubLifetimeManager.close_remote` sees close requests.
        lookup: Finds a connection of this process by id (for client results); without it
            :meth:`HubLifetimeManager.invoke_connection` is asked.

    Attributes:
        clients: :class:`HubClients` selections.
        groups: :class:`GroupManager`.
        lifetime_manager: The endpoint's lifetime manager.
    """

    __slots__ = ("_local_connections", "clients", "groups", "lifetime_manager")

    def __init__(
        self,
        manager: HubLifetimeManager,
        local_connections: Callable[[], Iterable[LocalConnection]] | None = None,
        lookup: LocalLookup | None = None,
    ) -> None:
        self.lifetime_manager = manager
        self.clients = HubClients(manager, lookup)
        self.groups = GroupManager(manager)
        self._local_connections = local_connections

    async def close_connections(
        self,
        *,
        connection_ids: Collection[str] | None = None,
        user_ids: Collection[str] | None = None,
        where: Callable[[HubCallerContext], bool] | None = None,
        error: str | None = None,
        allow_reconnect: bool = False,
    ) -> int:
        """Close the selected connections (e.g. every connection of a session at logout).

        Each matching client gets ``Close`` at once (``error`` and ``allowReconnect`` as
        given) and its connection ends right after; ``on_disconnected`` runs as usual. The
        official client's ``onclose`` receives ``Error("Server returned an error on close:
        <error>")``, or no error when ``error`` is ``None``; with ``allow_reconnect=False`` a
        client with automatic reconnect does not reconnect.

        Args:
            connection_ids: Only these (public) connection ids.
            user_ids: Only connections of these users (``Principal.user_id``).
            where: Only connections whose :class:`HubCallerContext` it accepts (for instance a
                session id in ``context.user.claims``). Evaluated in this process only.
            error: Text of the ``Close`` message's error; ``None`` for a clean close.
            allow_reconnect: Whether the client may reconnect automatically.

        Returns:
            How many connections of this process were told to close. With ``connection_ids``
            or ``user_ids`` and no ``where``, the lifetime manager also forwards the request
            to other servers (:meth:`HubLifetimeManager.close_remote`); those are not counted.

        Raises:
            ValueError: No filter given (to close everything use ``HubEndpoint.shutdown()``).
        """
        if connection_ids is None and user_ids is None and where is None:
            raise ValueError("close_connections() needs connection_ids, user_ids or where")
        request = CloseRequest(
            connection_ids=frozenset(connection_ids) if connection_ids is not None else None,
            user_ids=frozenset(user_ids) if user_ids is not None else None,
            error=error,
            allow_reconnect=allow_reconnect,
        )
        closed = 0
        if self._local_connections is not None:
            for connection in list(self._local_connections()):
                if not request.matches(connection):
                    continue
                if where is not None:
                    context = connection.context
                    if context is None or not where(context):
                        continue
                connection.close(error, allow_reconnect=allow_reconnect)
                closed += 1
        if where is None:
            await self.lifetime_manager.close_remote(request)
        return closed

    async def close_connection(
        self, connection_id: str, *, error: str | None = None, allow_reconnect: bool = False
    ) -> bool:
        """Close one connection by its public id; ``True`` if it was open in this process."""
        closed = await self.close_connections(
            connection_ids=(connection_id,), error=error, allow_reconnect=allow_reconnect
        )
        return closed > 0

    async def close_user(
        self, user_id: str, *, error: str | None = None, allow_reconnect: bool = False
    ) -> int:
        """Close every connection of one user; returns how many were open in this process."""
        return await self.close_connections(
            user_ids=(user_id,), error=error, allow_reconnect=allow_reconnect
        )
