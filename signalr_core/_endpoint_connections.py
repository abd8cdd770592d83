"""The connections one endpoint knows: by token and by id, their housekeeping and adoption.

Theory of operation
===================

A :class:`~signalr_core.endpoint.ConnectionEndpoint` registers every connection it creates
(negotiate, a WebSocket without ``id``, or an adopted token) in its :class:`EndpointConnections`
and asks it for the connection of a request's token. A connection is forgotten when it can
never be used again:

* its streaming transport (WebSockets, Server-Sent Events) ended and ``run()`` finished
  (:meth:`EndpointConnections.drain_and_forget`);
* a Long Polling ``DELETE`` ended it: at once if it already finished, else as soon as its
  ``run()`` ends (:meth:`EndpointConnections.delete`, :meth:`EndpointConnections.run`), as
  ASP.NET's ``DisposeAndRemoveAsync``;
* the **ticker** (:meth:`EndpointConnections.ticker`, in the endpoint's task group) found it
  expired: negotiated and never connected within ``disconnect_timeout``, a Long Polling
  connection without a poll for that long, or a stateful connection that lost its WebSocket and
  never came back. The ticker also drives each active connection's timers (``tick(now)``:
  keep-alive, client timeout, reconnect wait), about once a second.

With ``HubOptions.connection_token_key``, a token this process does not know may be **adopted**
(:meth:`EndpointConnections.adopt`): another process negotiated it, and the signed token names
the connection id and user (see :mod:`signalr_core.tokens`). Forgetting a connection spends its
token, so it is never adopted again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, Protocol, TypeVar

import anyio

from signalr_core._logging import get_logger
from signalr_core.context import Principal
from signalr_core.dispatcher import ConnectionStatus
from signalr_core.negotiate import new_connection_id
from signalr_core.options import HubOptions
from signalr_core.tokens import ConnectionTokens
from signalr_core.transports import TransportConnection, TransportName

__all__ = ["ConnT", "EndpointConnection", "EndpointConnections"]

_log = get_logger("signalr_core")


class EndpointConnection(TransportConnection, Protocol):
    """What the endpoint needs of a connection, beyond what its transports need.

    :class:`~signalr_core.dispatcher.HubServerConnection` (hubs) and the connection-handler
    connections (:mod:`signalr_core.connection_handler`) provide it.
    """

    connection_id: str
    connection_token: str
    user_id: str | None
    transport: TransportName | None
    resuming: bool
    use_stateful_reconnect: bool

    @property
    def status(self) -> ConnectionStatus:
        """Where the connection is, as the endpoint sees it."""
        ...

    @property
    def created(self) -> float:
        """When the connection was made (``time.monotonic()``)."""
        ...

    @property
    def detached_since(self) -> float | None:
        """When a stateful connection lost its transport (``None`` unless it did)."""
        ...

    @property
    def finished(self) -> anyio.Event:
        """Set once the connection has ended."""
        ...

    @property
    def can_resume(self) -> bool: ...

    def activate(
        self,
        transport: TransportName,
        *,
        user: Principal | None,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        cookies: Mapping[str, str],
        query_values: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None: ...

    async def run(self) -> None: ...

    def close(self, error: str | None = None, *, allow_reconnect: bool = False) -> None: ...

    def tick(self, now: float) -> None: ...

    async def resume(self) -> int: ...


ConnT = TypeVar("ConnT", bound=EndpointConnection)


class EndpointConnections(Generic[ConnT]):
    """One endpoint's connections by token and by id, and when to forget them.

    Args:
        options: The endpoint's options (``disconnect_timeout`` and the timers' intervals).
        create: Makes a new, inactive connection from its id and token.
        name: The endpoint's name: signed tokens (``connection_token_key``) are bound to it.

    Attributes:
        by_token: The connections by their token (what transport requests name).
        by_id: The connections by their public id (what ``hub_context`` names).
    """

    __slots__ = ("_create", "_deleted", "_options", "_tokens", "by_id", "by_token")

    def __init__(
        self,
        options: HubOptions,
        create: Callable[[str, str], ConnT],
        name: str,
    ) -> None:
        self._options = options
        self._create = create
        key = options.connection_token_key
        self._tokens = (
            ConnectionTokens(key, scope=name, max_age=options.connection_token_max_age)
            if key is not None
            else None
        )
        self.by_token: dict[str, ConnT] = {}
        self.by_id: dict[str, ConnT] = {}
        # Long Polling connections ended by DELETE: forgotten as soon as their run() ends (as
        # ASP.NET's DisposeAndRemoveAsync), not after the disconnect timeout.
        self._deleted: dict[str, ConnT] = {}

    def __len__(self) -> int:
        return len(self.by_token)

    def values(self) -> Iterable[ConnT]:
        """The connections (a view: copy it before awaiting while iterating)."""
        return self.by_token.values()

    def get(self, token: str) -> ConnT | None:
        """The connection of a token, ``None`` when unknown."""
        return self.by_token.get(token)

    def add(self, connection_id: str, token: str) -> ConnT:
        """Create and register a new, inactive connection."""
        connection = self._create(connection_id, token)
        self.by_token[token] = connection
        self.by_id[connection_id] = connection
        return connection

    @property
    def signed(self) -> bool:
        """Tokens are signed (``connection_token_key``): other processes may adopt them."""
        return self._tokens is not None

    def negotiated(self, version: int, user: Principal | None) -> ConnT:
        """A new connection for a negotiate answering with ``version``.

        Its token is its id for version 0, a signed token when ``connection_token_key`` is set
        (another process may adopt it), else a second random id.
        """
        connection_id = new_connection_id()
        if version < 1:
            token = connection_id
        elif self._tokens is not None:
            token = self._tokens.mint(connection_id, user.user_id if user is not None else None)
        else:
            token = new_connection_id()
        return self.add(connection_id, token)

    def adopt(self, token: str, user: Principal | None) -> ConnT | None:
        """The connection of a token another process minted, or ``None`` (not adoptable:
        no key, forged, expired, spent, another user's, or its id is in use here)."""
        if self._tokens is None:
            return None
        connection_id = self._tokens.adoptable(token, user.user_id if user is not None else None)
        if connection_id is None or connection_id in self.by_id:
            return None
        _log.debug("connection_adopted", connection_id=connection_id)
        return self.add(connection_id, token)

    def forget(self, connection: ConnT) -> None:
        """Drop a connection for good (its token is spent: never adopted again)."""
        if self._deleted.get(connection.connection_token) is connection:
            del self._deleted[connection.connection_token]
        if self._tokens is not None:
            self._tokens.spend(connection.connection_token)
        if self.by_token.get(connection.connection_token) is connection:
            del self.by_token[connection.connection_token]
        if self.by_id.get(connection.connection_id) is connection:
            del self.by_id[connection.connection_id]

    def delete(self, connection: ConnT) -> None:
        """A Long Polling DELETE ended the connection: forget it once its ``run()`` ended."""
        if connection.status is ConnectionStatus.FINISHED:
            self.forget(connection)
        else:
            self._deleted[connection.connection_token] = connection

    async def run(self, connection: ConnT) -> None:
        """``connection.run()``, then forget it if a DELETE ended it meanwhile (Long Polling)."""
        await connection.run()
        # Nothing awaited between the end of run() and here: whoever waits for `finished`
        # sees a deleted connection already forgotten.
        if self._deleted.pop(connection.connection_token, None) is connection:
            self.forget(connection)

    async def drain_and_forget(self, connection: ConnT) -> None:
        """The transport is gone: make sure the connection ends, then forget it."""
        connection.transport_closed()
        with anyio.CancelScope(shield=True):
            await connection.finished.wait()
        self.forget(connection)

    async def close_all(self, timeout: float) -> None:  # noqa: ASYNC109 - shutdown_timeout
        """Send every connection ``Close`` with ``allowReconnect`` and wait (up to ``timeout``)
        for them to end and for their transports to flush it."""
        for connection in list(self.by_token.values()):
            connection.close(None, allow_reconnect=True)
        with anyio.move_on_after(timeout):
            for connection in list(self.by_token.values()):
                await connection.finished.wait()
            # Then let the transports flush the Close messages (a short poll of flags that
            # several independent request tasks clear): attached streams, pending polls, and a
            # Long Polling Close still queued between two polls (the client's next poll takes
            # it; stopping first would make that poll fail instead).
            while any(  # noqa: ASYNC110
                c.transport_attached
                or c.poll_active
                or (c.transport is TransportName.LONG_POLLING and len(c.outgoing))
                for c in self.by_token.values()
            ):
                await anyio.sleep(0.02)

    # -- housekeeping --------------------------------------------------------------------------

    async def ticker(self) -> None:
        """Call :meth:`tick` about once a second (more often for short timeouts), forever."""
        options = self._options
        interval = min(
            1.0,
            options.keep_alive_interval / 2,
            options.client_timeout / 4,
            options.disconnect_timeout / 4,
        )
        while True:
            await anyio.sleep(interval)
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        """Advance every active connection's timers; abort and forget the expired ones."""
        timeout = self._options.disconnect_timeout
        for connection in list(self.by_token.values()):
            status = connection.status
            if status is ConnectionStatus.ACTIVE:
                connection.tick(now)
                if (
                    connection.transport is TransportName.LONG_POLLING
                    and not connection.poll_active
                    and now - connection.last_poll > timeout
                ):
                    connection.abort()
            elif status is ConnectionStatus.FINISHED and connection.detached_since is not None:
                self.forget(connection)  # dropped and never reconnected (stateful)
            elif status is ConnectionStatus.INACTIVE:
                if now - connection.created > timeout:
                    connection.abort()
                    self.forget(connection)
            elif (
                connection.transport is TransportName.LONG_POLLING
                and not connection.poll_active
                and now - connection.last_poll > timeout
            ):
                self.forget(connection)
