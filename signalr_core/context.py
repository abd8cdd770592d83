"""Who is calling: the authenticated principal and the per-connection caller context."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HubCallerContext", "Principal"]


@dataclass(frozen=True, kw_only=True)
class Principal:
    """An authenticated user, as returned by the endpoint's ``authenticate`` hook.

    Attributes:
        user_id: Identifies the user for ``clients.user(...)`` (ASP.NET's ``UserIdentifier``).
        name: Display name, if any.
        claims: Any other claims the application wants to keep (roles, scopes, ...).
    """

    user_id: str
    name: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True, eq=False)
class HubCallerContext:
    """Information about the connection a hub method runs for (``self.context``).

    Attributes:
        connection_id: The public connection id (never the secret connection token).
        user: The principal from the ``authenticate`` hook, ``None`` when anonymous.
        items: A mutable dict that lives as long as the connection.
        headers: Request headers of the request that started the transport (lower-case names).
        query: Query parameters of that request (``access_token`` removed; last value wins).
        query_values: Every value of each of those parameters, in order (a parameter may
            repeat), like ASP.NET's ``Request.Query[name]``.
        cookies: Cookies of that request.
        transport: ``"WebSockets"``, ``"ServerSentEvents"`` or ``"LongPolling"``.
    """

    connection_id: str
    user: Principal | None
    items: dict[Any, Any]
    headers: Mapping[str, str]
    query: Mapping[str, str]
    cookies: Mapping[str, str]
    transport: str
    query_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    on_abort: Callable[[], None] | None = field(default=None, repr=False)
    """Set by the server layer: what :meth:`abort` does."""

    def abort(self) -> None:
        """End this connection from a hub method (ASP.NET's ``Context.Abort()``).

        The client gets ``Close`` without an error and without ``allowReconnect`` (so clients
        with automatic reconnect stay closed). The connection ends at once: running invocations,
        including the caller (at its next ``await``), are cancelled and send no completion;
        ``on_disconnected`` runs as usual.
        """
        if self.on_abort is not None:
            self.on_abort()

    @property
    def user_id(self) -> str | None:
        """The user's id, ``None`` when anonymous."""
        return self.user.user_id if self.user is not None else None
