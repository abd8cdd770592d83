"""DefaultHubLifetimeManager: fan-out to all, connections, groups, users, exclusions."""

from __future__ import annotations

from dataclasses import dataclass, field

from signalr_core import DefaultHubLifetimeManager, HubMessage, InvocationMessage, JsonHubProtocol
from signalr_core.clients import HubCallerClients, HubContext
from signalr_core.dispatcher import EncodeCache


@dataclass
class Recorder:
    """A HubConnectionHandle that records what it is sent."""

    connection_id: str
    user_id: str | None = None
    received: list[HubMessage] = field(default_factory=list)

    def write(self, message: HubMessage) -> None:
        self.received.append(message)

    def targets(self) -> list[tuple[str, tuple[object, ...]]]:
        return [(m.target, m.arguments) for m in self.received if isinstance(m, InvocationMessage)]


async def _setup() -> tuple[DefaultHubLifetimeManager, Recorder, Recorder, Recorder]:
    manager = DefaultHubLifetimeManager()
    a, b, c = Recorder("a", "alice"), Recorder("b", "bob"), Recorder("c", "alice")
    for handle in (a, b, c):
        await manager.on_connected(handle)
    return manager, a, b, c


async def test_all_and_exclusions() -> None:
    manager, a, b, c = await _setup()
    await manager.send_all("M", [1])
    await manager.send_all("N", [2], exclude=["b"])
    assert a.targets() == [("M", (1,)), ("N", (2,))]
    assert b.targets() == [("M", (1,))]
    # One message object is shared by every connection of a broadcast.
    assert a.received[0] is b.received[0] is c.received[0]


async def test_connections_users_and_groups() -> None:
    manager, a, b, c = await _setup()
    await manager.send_connections(["a", "zzz"], "Direct", [])
    await manager.send_users(["alice"], "ToAlice", [])
    await manager.add_to_group("a", "g")
    await manager.add_to_group("b", "g")
    await manager.add_to_group("b", "h")
    await manager.add_to_group("unknown", "g")
    await manager.send_groups(["g", "h"], "Group", [])
    await manager.send_groups(["g"], "GroupExcept", [], exclude=["a"])
    assert manager.group_members("g") == {"a", "b"}
    await manager.remove_from_group("a", "g")
    await manager.send_groups(["g"], "AfterLeave", [])
    assert a.targets() == [("Direct", ()), ("ToAlice", ()), ("Group", ())]
    assert b.targets() == [("Group", ()), ("GroupExcept", ()), ("AfterLeave", ())]
    assert c.targets() == [("ToAlice", ())]


async def test_disconnect_forgets_groups_and_users() -> None:
    manager, a, b, _ = await _setup()
    await manager.add_to_group("a", "g")
    await manager.on_disconnected(a)
    assert manager.group_members("g") == frozenset()
    await manager.send_users(["alice"], "M", [])
    await manager.send_all("All", [])
    assert a.targets() == []
    assert manager.connection_count == 2
    assert b.targets() == [("All", ())]


async def test_client_facades() -> None:
    manager, a, b, c = await _setup()
    await manager.add_to_group("a", "g")
    await manager.add_to_group("b", "g")
    clients = HubCallerClients(manager, a)
    await clients.caller.send("Caller", 1)
    await clients.others.send("Others")
    await clients.others_in_group("g").send("OthersInGroup")
    await clients.group_except("g", ["b"]).send("GroupExcept")
    await clients.client("c").send("Client")
    await clients.clients(["b", "c"]).send("Clients")
    await clients.groups(["g"]).send("Groups")
    await clients.user("bob").send("User")
    await clients.users(["alice"]).send("Users")
    context = HubContext(manager)
    await context.groups.add("c", "g")
    await context.clients.group("g").send("FromOutside")
    assert [t for t, _ in a.targets()] == [
        "Caller",
        "GroupExcept",
        "Groups",
        "Users",
        "FromOutside",
    ]
    assert [t for t, _ in b.targets()] == [
        "Others",
        "OthersInGroup",
        "Clients",
        "Groups",
        "User",
        "FromOutside",
    ]
    assert [t for t, _ in c.targets()] == ["Others", "Client", "Clients", "Users", "FromOutside"]


def test_encode_cache_encodes_a_broadcast_once_per_protocol() -> None:
    cache = EncodeCache()
    protocol = JsonHubProtocol()
    message = InvocationMessage(target="M", arguments=(1,))
    first = cache.encode(protocol, message)
    assert cache.encode(protocol, message) is first
    other = cache.encode(protocol, InvocationMessage(target="M", arguments=(1,)))
    assert other == first
    assert other is not first


def test_registry_tells_when_a_group_or_user_gains_its_first_or_loses_its_last() -> None:
    # The Redis manager (un)subscribes a channel exactly at these transitions.
    from signalr_core._registry import ConnectionRegistry

    registry: ConnectionRegistry[Recorder] = ConnectionRegistry()
    a, b = Recorder("a", "alice"), Recorder("b", "alice")
    assert registry.add(a) is True  # alice's first connection
    assert registry.add(b) is False
    assert registry.join(a, "g") is True  # g's first member
    assert registry.join(a, "g") is None  # already a member
    assert registry.join(b, "g") is False
    assert registry.join(b, "h") is True
    assert registry.leave("a", "g") is False  # b is still in g
    assert registry.leave("a", "g") is False  # not a member any more
    departure = registry.remove(a)
    assert (departure.groups, departure.user_id) == ([], None)  # b holds g and alice
    departure = registry.remove(b)
    assert sorted(departure.groups) == ["g", "h"]
    assert departure.user_id == "alice"
    assert len(registry) == 0
    assert not registry.has_group("g")
    assert not registry.has_user("alice")
    assert registry.excluding({"x": a, "y": b}, ["x"]) == [b]
