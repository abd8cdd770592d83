"""This process's connections, their groups and their users: one registry, two managers.

Both lifetime managers (in-process and Redis) keep the same four tables and change them the same
way; the Redis manager additionally (un)subscribes a channel when a group or user gains its first
or loses its last local connection, which is what the return values here tell it. No I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Generic, Protocol, TypeVar

__all__ = ["ConnectionRegistry", "Departure"]


class _Handle(Protocol):
    @property
    def connection_id(self) -> str: ...

    @property
    def user_id(self) -> str | None: ...


H = TypeVar("H", bound=_Handle)


class Departure:
    """What a connection's removal emptied: groups and its user (to unsubscribe)."""

    __slots__ = ("groups", "user_id")

    def __init__(self, groups: list[str], user_id: str | None) -> None:
        self.groups = groups  # groups whose last local member it was
        self.user_id = user_id  # its user, when it was the user's last local connection


class ConnectionRegistry(Generic[H]):
    """Connections by id, group members by group, connections by user, groups by connection.

    The member mappings returned are live views: copy them before awaiting.
    """

    __slots__ = ("_connections", "_groups", "_groups_of", "_users")

    def __init__(self) -> None:
        self._connections: dict[str, H] = {}
        self._groups: dict[str, dict[str, H]] = {}
        self._groups_of: dict[str, set[str]] = {}
        self._users: dict[str, dict[str, H]] = {}

    # ------------------------------------------------------------------------------ reading ---
    def __len__(self) -> int:
        return len(self._connections)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._connections

    def get(self, connection_id: str) -> H | None:
        """The local connection ``connection_id``, ``None`` when it is not here."""
        return self._connections.get(connection_id)

    @property
    def connections(self) -> Mapping[str, H]:
        """Every local connection by id."""
        return self._connections

    def members(self, group: str) -> Mapping[str, H]:
        """Local members of ``group`` by connection id."""
        return self._groups.get(group) or {}

    def of_user(self, user_id: str) -> Mapping[str, H]:
        """Local connections of ``user_id`` by connection id."""
        return self._users.get(user_id) or {}

    def has_group(self, group: str) -> bool:
        """Whether ``group`` has a local member."""
        return group in self._groups

    def has_user(self, user_id: str) -> bool:
        """Whether ``user_id`` has a local connection."""
        return user_id in self._users

    def in_groups(self, groups: Iterable[str]) -> dict[str, H]:
        """Local members of any of ``groups``, each once."""
        targets: dict[str, H] = {}
        for group in groups:
            members = self._groups.get(group)
            if members:
                targets.update(members)
        return targets

    def of_users(self, user_ids: Iterable[str]) -> dict[str, H]:
        """Local connections of any of ``user_ids``, each once."""
        targets: dict[str, H] = {}
        for user_id in user_ids:
            conns = self._users.get(user_id)
            if conns:
                targets.update(conns)
        return targets

    @staticmethod
    def excluding(targets: Mapping[str, H], exclude: Collection[str]) -> list[H]:
        """``targets`` without the connection ids in ``exclude`` (a snapshot list)."""
        if not exclude:
            return list(targets.values())
        excluded = exclude if isinstance(exclude, (set, frozenset)) else set(exclude)
        return [c for cid, c in targets.items() if cid not in excluded]

    # ----------------------------------------------------------------------------- changing ---
    def add(self, connection: H) -> bool:
        """Register ``connection``; returns whether it is its user's first local connection."""
        connection_id = connection.connection_id
        self._connections[connection_id] = connection
        user_id = connection.user_id
        if user_id is None:
            return False
        conns = self._users.setdefault(user_id, {})
        first = not conns
        conns[connection_id] = connection
        return first

    def remove(self, connection: H) -> Departure:
        """Forget ``connection`` and its memberships; returns what that emptied."""
        connection_id = connection.connection_id
        self._connections.pop(connection_id, None)
        emptied = [
            g for g in self._groups_of.pop(connection_id, ()) if self._leave(connection_id, g)
        ]
        user_id = connection.user_id
        user_emptied = False
        if user_id is not None:
            conns = self._users.get(user_id)
            if conns is not None and conns.pop(connection_id, None) is not None and not conns:
                del self._users[user_id]
                user_emptied = True
        return Departure(emptied, user_id if user_emptied else None)

    def join(self, connection: H, group: str) -> bool | None:
        """Add ``connection`` to ``group``: ``None`` if it was a member already, else whether it
        is the group's first local member."""
        groups = self._groups_of.setdefault(connection.connection_id, set())
        if group in groups:
            return None
        groups.add(group)
        members = self._groups.setdefault(group, {})
        first = not members
        members[connection.connection_id] = connection
        return first

    def leave(self, connection_id: str, group: str) -> bool:
        """Remove ``connection_id`` from ``group``; returns whether that emptied the group."""
        groups = self._groups_of.get(connection_id)
        if groups is not None:
            groups.discard(group)
        return self._leave(connection_id, group)

    def _leave(self, connection_id: str, group: str) -> bool:
        members = self._groups.get(group)
        if members is None or members.pop(connection_id, None) is None:
            return False
        if members:
            return False
        del self._groups[group]
        return True
