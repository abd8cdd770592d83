"""Scale a hub out across processes: a lifetime manager on Redis pub/sub.

Theory of operation (the design of ASP.NET Core's
``Microsoft.AspNetCore.SignalR.StackExchangeRedis``):

Every server process runs one :class:`RedisHubLifetimeManager` per hub. It keeps its *local*
connections, groups and users in the same registry as the in-process manager
(``_registry.py``), and talks to the other
processes only through Redis channels named after a prefix (``{channel_prefix}:{hub_name}``):

=================================  ==============================================================
``{prefix}:all``                   every server subscribes; ``send_all`` (and multi-group sends)
``{prefix}:connection:{id}``       the server owning connection ``id`` subscribes
``{prefix}:group:{name}``          servers with at least one local member of the group subscribe
``{prefix}:user:{id}``             servers with at least one local connection of the user
``{prefix}:internal:groups``       group add/remove for a connection that lives elsewhere
``{prefix}:internal:ack:{server}`` acknowledgements of those commands, one channel per server
``{prefix}:internal:return:{srv}`` completions of client results this server waits for
``{prefix}:internal:servers``      announcements: subscribed again, heartbeat, goodbye
=================================  ==============================================================

A send publishes one :class:`RedisInvocation` (method name, arguments, excluded connection ids)
encoded with MessagePack; each receiving server decodes it once and hands the *same*
:class:`~signalr_core.messages.InvocationMessage` to each local connection, which encodes it once
per hub protocol (JSON or MessagePack) for all of them. Messages published by a server come
back to it through its own subscription, so local and remote connections see one order.

``add_to_group`` for a connection that is not local publishes a :class:`RedisGroupCommand` and
waits (bounded by ``ack_timeout``) for the owning server's acknowledgement, sent only after that
server has subscribed to the group's channel: a send to the group after ``add_to_group``
returns reaches the new member.

Client results for a connection on another server (``invoke_connection``, ASP.NET 7's
``Clients.Client(id).InvokeAsync<T>``): the invoking server publishes a
:class:`RedisClientInvocation` carrying a server-unique invocation id and its own return channel
on the connection's channel; ``PUBLISH`` reporting no subscriber means no server holds the
connection (``ClientUnavailableError``, as ASP.NET's ``IOException``). The owning server invokes
its local connection (``LocalConnection.invoke_client``, in a task of the lifespan's task
group, at most ``max_pending_results`` at once) and publishes a :class:`RedisCompletion` to the
return channel: the result as the raw value the client sent (with the hub protocol's name, so the
waiting side decodes it to the caller's ``result_type`` exactly as the local path does) or the
error text and kind, which the waiting side raises as the local path would
(``ClientResultError``, ``ClientUnavailableError``, ``TimeoutError``). Waits are bounded by the
caller's ``timeout`` on both sides and the waiting table by ``max_pending_results``; losing the
Redis subscription fails every wait at once (the completions could no longer arrive).

Closing connections from another server (``close_remote``): a :class:`RedisClose` is published
on the channel of each selected connection id (or, with only user ids, of each user); each
server holding a selected connection closes it (``LocalConnection.close``).

Redis pub/sub is fire-and-forget, and ASP.NET's backplane loses what is published while a
server's subscription is away. Here every send goes through a delivery gate
(``_redis_delivery.py``): servers announce themselves on ``{prefix}:internal:servers`` once
subscribed, ``PUBLISH``'s subscriber count is checked against the servers that must receive, and
while a subscription is coming back sends wait in a bounded, ordered buffer (``buffer_limit``,
``buffer_max_age``) or are refused with :class:`RedisBackplaneError`. A send that returns was
delivered by Redis to every server that needed it; none is reported as sent and then lost. The
subscriber logs a loss, reconnects with exponential back-off and subscribes again, in one
``SUBSCRIBE``, to every channel the local state needs.

The pieces live in their own modules: the wire structs and channel names (``_redis_wire.py``),
the subscriber and its reconnection (``_redis_subscriber.py``), the delivery gate
(``_redis_delivery.py``), acknowledged group commands (``_redis_groups.py``) and client results
(``_redis_results.py``); this class wires them to the local registry.

Everything is bounded: the publisher's connection pool (``max_publish_connections``), pending
acknowledgements (``max_pending_acks``), the queue of group commands from other servers
(``group_command_buffer``; overflow is logged and the sender times out), client results waited
for and run for other servers (``max_pending_results`` each), sends held back while a
subscription comes back (``buffer_limit``) and every wait (``ack_timeout``, ``publish_timeout``,
``buffer_max_age``, the caller's client-result ``timeout``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from signalr_core._logging import get_logger
from signalr_core._redis_delivery import DeliveryGate, RedisBackplaneError
from signalr_core._redis_groups import GroupCommands
from signalr_core._redis_results import ClientResults
from signalr_core._redis_subscriber import Subscriber
from signalr_core._redis_wire import (
    CompletionKind,
    GroupAction,
    RedisAck,
    RedisChannels,
    RedisClientInvocation,
    RedisClose,
    RedisCompletion,
    RedisGroupCommand,
    RedisHello,
    RedisInvocation,
    decode_connection_message,
    decode_hello,
    decode_invocation,
    decode_user_message,
    encode,
)
from signalr_core._registry import ConnectionRegistry
from signalr_core.errors import ClientUnavailableError
from signalr_core.lifetime import (
    CloseRequest,
    HubConnectionHandle,
    HubLifetimeManager,
    LocalConnection,
    invocation,
    write_all,
)
from signalr_core.messages import InvocationMessage

__all__ = [
    "CompletionKind",
    "RedisAck",
    "RedisBackplaneError",
    "RedisClientInvocation",
    "RedisClose",
    "RedisCompletion",
    "RedisGroupCommand",
    "RedisHello",
    "RedisHubLifetimeManager",
    "RedisInvocation",
]


def _server_name() -> str:
    # Host name for diagnostics, random suffix for uniqueness (as ASP.NET's GenerateServerName).
    return f"{socket.gethostname()}_{os.urandom(8).hex()}"


class RedisHubLifetimeManager(HubLifetimeManager):
    """A :class:`~signalr_core.lifetime.HubLifetimeManager` that scales out through Redis.

    Pass it to ``HubEndpoint(..., lifetime_manager=RedisHubLifetimeManager(url, hub_name="chat"))``
    in every process serving the hub; the endpoint enters :meth:`lifespan`. Connections must be
    sticky (each stays on the server that accepted it), as with ASP.NET.

    Args:
        redis_url: ``redis://[:password@]host:port/db`` (never logged).
        channel_prefix: First part of every channel name; separates applications sharing Redis.
        hub_name: Second part; every process serving the same hub must use the same name.
        ack_timeout: Seconds ``add_to_group``/``remove_from_group`` wait for the server owning a
            remote connection (ASP.NET waits 30 s). No answer raises :class:`RedisBackplaneError`.
        subscribe_timeout: Seconds to wait for Redis to confirm a new subscription.
        max_pending_acks: Group commands that may wait for an acknowledgement at once.
        group_command_buffer: Group commands from other servers queued for processing.
        max_publish_connections: Size of the publishing connection pool; publishers wait (at
            most ``publish_timeout`` seconds) for a free connection.
        publish_timeout: Socket timeout and pool wait for one publish.
        reconnect_delay: ``(first, max)`` seconds between attempts to reconnect the subscriber;
            keep ``max`` below ``peer_timeout`` (a peer backing off must not be taken for gone).
        server_name: This process's name on the ack channel (default: host name + random).
        max_pending_results: Client results for connections on other servers this server may
            wait for at once, and (separately) client-result invocations from other servers it
            may run at once for its own connections; beyond it ``ClientUnavailableError``.
        buffer_limit: Sends that may wait while a subscription comes back (beyond it: refused).
        buffer_max_age: Seconds a send waits for the subscriptions to come back before it is
            refused (``0``: refuse at once instead of waiting).
        heartbeat_interval: Seconds between this server's announcements.
        peer_timeout: Seconds of silence (while this server is subscribed) after which another
            server is taken for gone (> ``heartbeat_interval``); this server's subscription,
            quiet for half of it and then silent to a PING as long, is taken for lost.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        channel_prefix: str = "signalr",
        hub_name: str = "hub",
        ack_timeout: float = 30.0,
        subscribe_timeout: float = 5.0,
        max_pending_acks: int = 1024,
        group_command_buffer: int = 256,
        max_publish_connections: int = 8,
        publish_timeout: float = 5.0,
        reconnect_delay: tuple[float, float] = (0.1, 2.0),
        server_name: str | None = None,
        max_pending_results: int = 1024,
        buffer_limit: int = 1000,
        buffer_max_age: float = 10.0,
        heartbeat_interval: float = 1.0,
        peer_timeout: float = 5.0,
    ) -> None:
        self._url = redis_url
        self._channels = channels = RedisChannels(f"{channel_prefix}:{hub_name}")
        self._server_name = name = server_name or _server_name()
        self._ack_channel = channels.ack(name)
        self._subscribe_timeout = subscribe_timeout
        self._max_publish_connections = max_publish_connections
        self._publish_timeout = publish_timeout
        self._log = log = get_logger("signalr_core.redis").bind(hub=hub_name, server=name)
        self._registry: ConnectionRegistry[HubConnectionHandle] = ConnectionRegistry()
        self._publisher: aioredis.Redis | None = None
        self._gate = DeliveryGate(
            self._publish,
            server_name=name,
            servers_channel=channels.servers,
            buffer_limit=buffer_limit,
            buffer_max_age=buffer_max_age,
            heartbeat_interval=heartbeat_interval,
            peer_timeout=peer_timeout,
        )
        self._groups = GroupCommands(
            self._publish,
            server_name=name,
            channels=channels,
            ack_timeout=ack_timeout,
            max_pending=max_pending_acks,
            buffer=group_command_buffer,
            log=log,
        )
        self._results = ClientResults(
            self._publish,
            server_name=name,
            return_channel=channels.return_results(name),
            max_pending=max_pending_results,
            publish_timeout=publish_timeout,
            reply_buffer=group_command_buffer,
            log=log,
        )
        self._subscriber = Subscriber(
            fixed=(
                channels.all,
                channels.group_management,
                self._ack_channel,
                self._results.return_channel,
            ),
            last=channels.servers,  # the gate announces this server once it is confirmed
            on_message=self._on_message,
            on_ready=self._gate.subscribed,
            on_lost=self._on_subscriber_lost,
            subscribe_timeout=subscribe_timeout,
            reconnect_delay=reconnect_delay,
            keepalive=peer_timeout / 2,  # a silently lost subscription is seen within it
            log=log,
        )

    @property
    def server_name(self) -> str:
        """This process's name on the acknowledgement channel."""
        return self._server_name

    @property
    def connected(self) -> bool:
        """Whether the subscriber currently holds a connection to Redis."""
        return self._subscriber.connected

    @property
    def ready(self) -> bool:
        """Whether sends are published at once: this server and every live peer it knows are
        subscribed (otherwise they wait in the buffer)."""
        return self._gate.is_open

    @property
    def peers(self) -> int:
        """How many other live servers of this hub this server knows."""
        return len(self._gate.peers)

    # ----------------------------------------------------------------------------- lifespan ---
    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Connect to Redis and run the subscriber until the endpoint stops.

        Entering waits for the first subscription attempt and, when it succeeded, at most
        ``subscribe_timeout`` seconds for the delivery gate to open; if Redis is down then, the
        server still starts at once and the subscriber keeps retrying in the background (with
        logging; sends wait for it as after a restart).
        """
        return self._lifespan()

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        publisher, subscriber = _clients(
            self._url, self._max_publish_connections, self._publish_timeout
        )
        self._publisher = publisher
        try:
            async with anyio.create_task_group() as tg:
                self._gate.start()
                tg.start_soon(self._groups.run, self._apply_group_command)
                tg.start_soon(self._results.run, tg)
                await tg.start(self._subscriber.run, subscriber)
                tg.start_soon(self._gate.run_announcements)
                tg.start_soon(self._gate.run_flusher)
                if self._subscriber.connected:  # Redis is down: start now, recover later
                    with anyio.move_on_after(self._subscribe_timeout):
                        await self._gate.wait_open()
                try:
                    yield
                finally:
                    self._gate.stop("The Redis backplane stopped.")
                    with anyio.CancelScope(shield=True), anyio.move_on_after(self._publish_timeout):
                        await self._gate.say_goodbye()
                    tg.cancel_scope.cancel()
        finally:
            self._gate.stop("The Redis backplane stopped.")
            self._publisher = None
            self._results.fail_pending("The Redis backplane stopped.")
            with anyio.CancelScope(shield=True):
                for client in (publisher, subscriber):
                    try:
                        await client.aclose()
                    except (RedisError, OSError) as exc:
                        self._log.debug("backplane_close_failed", error=str(exc))

    def _on_subscriber_lost(self) -> None:
        self._gate.unsubscribed()
        # Completions published while we are not subscribed are lost: fail the waits.
        self._results.fail_pending("The connection to the Redis backplane was lost.")

    # --------------------------------------------------------------------- incoming messages ---
    def _on_message(self, channel: str, data: bytes) -> None:
        registry = self._registry
        kind, _, name = channel[len(self._channels.prefix) + 1 :].partition(":")
        if kind == "all":
            inv = decode_invocation(data)
            targets = registry.in_groups(inv.groups) if inv.groups else registry.connections
            write_all(registry.excluding(targets, inv.exclude), inv.target, inv.arguments)
        elif kind == "connection":
            connection = registry.get(name)
            item = decode_connection_message(data)
            if isinstance(item, RedisInvocation):
                if connection is not None:
                    connection.write(invocation(item.target, item.arguments))
            elif isinstance(item, RedisClientInvocation):
                self._results.on_invocation(name, connection, item)
            elif connection is not None:
                _close_local({name: connection}, item, self._server_name, self._log)
        elif kind == "group":
            inv = decode_invocation(data)
            write_all(
                registry.excluding(registry.members(name), inv.exclude), inv.target, inv.arguments
            )
        elif kind == "user":
            item = decode_user_message(data)
            if isinstance(item, RedisInvocation):
                write_all(list(registry.of_user(name).values()), item.target, item.arguments)
            else:
                _close_local(dict(registry.of_user(name)), item, self._server_name, self._log)
        elif channel == self._channels.servers:
            self._gate.on_hello(decode_hello(data))
        elif channel == self._channels.group_management:
            self._groups.on_command(data, registry.__contains__)
        elif channel == self._ack_channel:
            self._groups.on_ack(data)
        elif channel == self._results.return_channel:
            self._results.on_completion(data)

    async def _publish(self, channel: str, payload: bytes) -> int:
        """Publish ``payload``; returns how many subscribers Redis delivered it to."""
        publisher = self._publisher
        if publisher is None:
            raise RedisBackplaneError("The Redis backplane is not running (enter lifespan()).")
        try:
            return int(await publisher.publish(channel, payload))
        except (RedisError, OSError) as exc:
            raise RedisBackplaneError(f"Publishing to Redis failed: {type(exc).__name__}") from exc

    # ------------------------------------------------------------------ HubLifetimeManager ---
    async def on_connected(self, connection: HubConnectionHandle) -> None:
        first_of_user = self._registry.add(connection)
        await self._subscriber.subscribe(self._channels.connection(connection.connection_id))
        if first_of_user and connection.user_id is not None:
            await self._subscriber.subscribe(self._channels.user(connection.user_id))

    async def on_disconnected(self, connection: HubConnectionHandle) -> None:
        departure = self._registry.remove(connection)
        await self._subscriber.unsubscribe(self._channels.connection(connection.connection_id))
        for group in departure.groups:
            await self._subscriber.unsubscribe(self._channels.group(group))
        if departure.user_id is not None:
            await self._subscriber.unsubscribe(self._channels.user(departure.user_id))

    async def send_all(
        self, method: str, args: Sequence[Any], exclude: Collection[str] = ()
    ) -> None:
        inv = RedisInvocation(target=method, arguments=tuple(args), exclude=tuple(exclude))
        await self._gate.send(self._channels.all, encode(inv), self._gate.expected_all)

    async def send_connections(
        self, connection_ids: Collection[str], method: str, args: Sequence[Any]
    ) -> None:
        message: InvocationMessage | None = None
        payload: bytes | None = None
        for connection_id in set(connection_ids):
            connection = self._registry.get(connection_id)
            if connection is not None:
                # Local: skip Redis (connections are sticky), as ASP.NET does.
                if message is None:
                    message = invocation(method, args)
                connection.write(message)
                continue
            if payload is None:
                payload = encode(RedisInvocation(target=method, arguments=tuple(args)))
            await self._gate.send(self._channels.connection(connection_id), payload, _unknown)

    async def send_groups(
        self,
        groups: Collection[str],
        method: str,
        args: Sequence[Any],
        exclude: Collection[str] = (),
    ) -> None:
        names = tuple(dict.fromkeys(groups))
        if not names:
            return
        if len(names) == 1:
            inv = RedisInvocation(target=method, arguments=tuple(args), exclude=tuple(exclude))
            channel = self._channels.group(names[0])
            await self._gate.send(channel, encode(inv), _local(self._registry.has_group, names[0]))
            return
        # Several groups: one message on the all channel so each connection gets it once.
        inv = RedisInvocation(
            target=method, arguments=tuple(args), exclude=tuple(exclude), groups=names
        )
        await self._gate.send(self._channels.all, encode(inv), self._gate.expected_all)

    async def send_users(self, user_ids: Collection[str], method: str, args: Sequence[Any]) -> None:
        payload: bytes | None = None
        for user_id in dict.fromkeys(user_ids):
            if payload is None:
                payload = encode(RedisInvocation(target=method, arguments=tuple(args)))
            expected = _local(self._registry.has_user, user_id)
            await self._gate.send(self._channels.user(user_id), payload, expected)

    async def add_to_group(self, connection_id: str, group: str) -> None:
        connection = self._registry.get(connection_id)
        if connection is not None:
            await self._join(connection, group)
            return
        await self._groups.request(GroupAction.ADD, connection_id, group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        if connection_id in self._registry:
            await self._leave(connection_id, group)
            return
        await self._groups.request(GroupAction.REMOVE, connection_id, group)

    async def close_remote(self, request: CloseRequest) -> None:
        """Publish ``request`` to the servers holding the selected connections.

        Connection ids of this process are skipped (the endpoint closed those itself). With
        connection ids the request goes to each connection's channel (the owner also checks
        ``user_ids``); with only user ids, to each user's channel.

        Raises:
            RedisBackplaneError: Redis is unreachable.
        """
        close = RedisClose(
            server_name=self._server_name,
            connection_ids=request.connection_ids,
            user_ids=request.user_ids,
            error=request.error,
            allow_reconnect=request.allow_reconnect,
        )
        if request.connection_ids is not None:
            channels = [
                self._channels.connection(connection_id)
                for connection_id in sorted(request.connection_ids)
                if connection_id not in self._registry
            ]
        elif request.user_ids is not None:
            channels = [self._channels.user(user_id) for user_id in sorted(request.user_ids)]
        else:
            return
        payload = encode(close)
        for channel in channels:
            await self._gate.send(channel, payload, _unknown)

    async def invoke_connection(
        self,
        connection_id: str,
        method: str,
        args: Sequence[Any],
        *,
        result_type: Any = Any,
        timeout: float | None = None,  # noqa: ASYNC109 - the API ASP.NET users expect
    ) -> Any:
        """Client result from ``connection_id``, wherever it is connected.

        Raises:
            ClientResultError: The client's handler threw (its text), had no handler, or the
                result does not convert to ``result_type``.
            ClientUnavailableError: No server holds the connection, it closed while waiting,
                too many results are pending, or Redis is unreachable / the subscription lost.
            TimeoutError: No answer within ``timeout`` seconds.
        """
        local = self._registry.get(connection_id)
        if local is not None and isinstance(local, LocalConnection):
            return await local.invoke_client(method, args, result_type=result_type, timeout=timeout)
        if not self._subscriber.connected:
            raise ClientUnavailableError(
                f"Connection '{connection_id}' cannot be reached: the Redis backplane is not "
                "connected."
            )
        return await self._results.invoke(
            self._channels.connection(connection_id),
            connection_id,
            method,
            args,
            result_type=result_type,
            timeout=timeout,
        )

    # --------------------------------------------------------------------------- internals ---
    async def _join(self, connection: HubConnectionHandle, group: str) -> None:
        first = self._registry.join(connection, group)
        if first is None:
            return
        channel = self._channels.group(group)
        if first:
            await self._subscriber.subscribe(channel)
        else:
            # The first member's subscribe may not be confirmed yet: a later joiner must not
            # return before group messages can reach it either (bounded like the first one's).
            await self._subscriber.wait_confirmed(channel)

    async def _leave(self, connection_id: str, group: str) -> None:
        if self._registry.leave(connection_id, group):
            await self._subscriber.unsubscribe(self._channels.group(group))

    async def _apply_group_command(self, command: RedisGroupCommand) -> bool:
        connection = self._registry.get(command.connection_id)
        if connection is None:
            return False
        if command.action is GroupAction.ADD:
            await self._join(connection, command.group)
        else:
            await self._leave(command.connection_id, command.group)
        return True


def _unknown() -> int:
    return 0  # a channel whose subscribers this server cannot know (no check but the gate)


def _local(has: Callable[[str], bool], key: str) -> Callable[[], int]:
    """Expected subscribers of a group/user channel: this server while it has members."""
    return lambda: int(has(key))


def _clients(
    url: str, max_connections: int, timeout: float
) -> tuple[aioredis.Redis, aioredis.Redis]:
    """The publisher (a bounded pool) and the subscriber's client (Subscriber.run logs a loss and
    backs off).

    Neither retries a command: a ``PUBLISH`` whose answer timed out or whose connection broke
    after sending may have been delivered, and repeating it would deliver it twice (the delivery
    gate refuses it instead). A pooled connection that Redis closed meanwhile (a restart) is
    replaced when it is taken from the pool, before anything is sent on it.
    """
    # from_pool: the client owns (and closes) its bounded pool.
    publisher: aioredis.Redis = aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
    )
    subscriber: aioredis.Redis = aioredis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=timeout,
        socket_keepalive=True,  # Subscriber pings a quiet connection itself
    )
    return publisher, subscriber


def _close_local(
    targets: dict[str, HubConnectionHandle], close: RedisClose, own_name: str, log: Any
) -> None:
    """Close the local connections of ``targets`` that ``close`` selects."""
    if close.server_name == own_name or not targets:
        return  # the publisher closed its own connections already
    request = CloseRequest(
        connection_ids=close.connection_ids,
        user_ids=close.user_ids,
        error=close.error,
        allow_reconnect=close.allow_reconnect,
    )
    closed = 0
    for connection in list(targets.values()):
        if request.matches(connection) and isinstance(connection, LocalConnection):
            connection.close(close.error, allow_reconnect=close.allow_reconnect)
            closed += 1
    if closed:
        log.info("backplane_remote_close_applied", closed=closed)
