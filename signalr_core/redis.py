"""Scale a hub out across processes: a lifetime manager on Redis pub/sub.

Theory of operation (the design of ASP.NET Core's
``Microsoft.AspNetCore.SignalR.StackExchangeRedis``):

Every server process runs one :class:`RedisHubLifetimeManager` per hub. It keeps its *local*
connections, groups and users in dicts, like the in-process manager, and talks to the other
processes only through Redis channels named after a prefix (``{channel_prefix}:{hub_name}``):

=================================  ==============================================================
``{prefix}:all``                   every server subscribes; ``send_all`` (and multi-group sends)
``{prefix}:connection:{id}``       the server owning connection ``id`` subscribes
``{prefix}:group:{name}``          servers with at least one local member of the group subscribe
``{prefix}:user:{id}``             servers with at least one local connection of the user
``{prefix}:internal:groups``       group add/remove for a connection that lives elsewhere
``{prefix}:internal:ack:{server}`` acknowledgements of those commands, one channel per server
``{prefix}:internal:return:{srv}`` completions of client results this server waits for
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

Redis pub/sub is fire-and-forget: while Redis is unreachable, messages are lost (as in
ASP.NET). The subscriber logs the loss, reconnects with exponential back-off and subscribes again
to every channel the local state needs; publishing while Redis is down raises
:class:`RedisBackplaneError` to the caller.

Everything is bounded: the publisher's connection pool (``max_publish_connections``), pending
acknowledgements (``max_pending_acks``), the queue of group commands from other servers
(``group_command_buffer``; overflow is logged and the sender times out), client results waited
for and run for other servers (``max_pending_results`` each) and every wait (``ack_timeout``,
``publish_timeout``, the caller's client-result ``timeout``).
"""

from __future__ import annotations

import enum
import itertools
import os
import socket
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from signalr_core._logging import get_logger
from signalr_core.errors import (
    ClientResultError,
    ClientUnavailableError,
    InvocationError,
    SignalRError,
)
from signalr_core.lifetime import (
    CloseRequest,
    HubConnectionHandle,
    HubLifetimeManager,
    LocalConnection,
)
from signalr_core.messages import InvocationMessage
from signalr_core.protocols import HubProtocol, default_protocols

__all__ = [
    "CompletionKind",
    "RedisAck",
    "RedisBackplaneError",
    "RedisClientInvocation",
    "RedisClose",
    "RedisCompletion",
    "RedisGroupCommand",
    "RedisHubLifetimeManager",
    "RedisInvocation",
]


class RedisBackplaneError(SignalRError):
    """Redis is unreachable, or another server did not acknowledge a group command in time."""


# ------------------------------------------------------------------------ messages on Redis ---
class RedisInvocation(msgspec.Struct, array_like=True, frozen=True, kw_only=True, tag=1):
    """An invocation to deliver to the local connections a channel stands for.

    ``groups`` is only used on the ``all`` channel: a send to several groups is published once
    there and each server delivers it to its local members of any of them, each connection once.
    """

    target: str
    arguments: tuple[Any, ...]
    exclude: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


class RedisClientInvocation(msgspec.Struct, array_like=True, frozen=True, kw_only=True, tag=2):
    """A client-result invocation for the connection whose channel carries it.

    The owning server answers with a :class:`RedisCompletion` on ``return_channel``.
    ``timeout`` (seconds, ``None``: until the connection ends) bounds the owner's wait too.
    """

    target: str
    arguments: tuple[Any, ...]
    invocation_id: str
    return_channel: str
    timeout: float | None = None


class RedisClose(msgspec.Struct, array_like=True, frozen=True, kw_only=True, tag=3):
    """Close the local connections of the channel's connection or user that match.

    Mirrors :class:`~signalr_core.lifetime.CloseRequest`; ``server_name`` is the publisher,
    which has closed its own matching connections already.
    """

    server_name: str
    connection_ids: frozenset[str] | None = None
    user_ids: frozenset[str] | None = None
    error: str | None = None
    allow_reconnect: bool = False


class CompletionKind(enum.IntEnum):
    RESULT = 1  # the client returned a value (``result``) or nothing (``result`` is None)
    ERROR = 2  # ClientResultError(error)
    UNAVAILABLE = 3  # ClientUnavailableError(error)
    TIMEOUT = 4  # TimeoutError(error)


class RedisCompletion(msgspec.Struct, array_like=True, frozen=True, kw_only=True):
    """The owning server's answer to a :class:`RedisClientInvocation`.

    ``result`` is the value as the client encoded it with hub protocol ``protocol``
    (``None``: the client's Completion carried no result).
    """

    invocation_id: str
    kind: CompletionKind
    protocol: str = ""
    result: bytes | None = None
    error: str | None = None


class GroupAction(enum.IntEnum):
    ADD = 1
    REMOVE = 2


class RedisGroupCommand(msgspec.Struct, array_like=True, frozen=True, kw_only=True):
    """Add/remove ``connection_id`` to/from ``group`` on whichever server owns it."""

    id: int
    server_name: str
    action: GroupAction
    group: str
    connection_id: str


class RedisAck(msgspec.Struct, array_like=True, frozen=True):
    """The owning server applied group command ``id``."""

    id: int


_encode = msgspec.msgpack.Encoder().encode
_decode_invocation = msgspec.msgpack.Decoder(RedisInvocation).decode
_decode_connection_message = msgspec.msgpack.Decoder(
    RedisInvocation | RedisClientInvocation | RedisClose
).decode
_decode_user_message = msgspec.msgpack.Decoder(RedisInvocation | RedisClose).decode
_decode_completion = msgspec.msgpack.Decoder(RedisCompletion).decode
_decode_group_command = msgspec.msgpack.Decoder(RedisGroupCommand).decode
_decode_ack = msgspec.msgpack.Decoder(RedisAck).decode


class RedisChannels:
    """Channel names for one hub (same layout as ASP.NET's ``RedisChannels``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.all = f"{prefix}:all"
        self.group_management = f"{prefix}:internal:groups"

    def connection(self, connection_id: str) -> str:
        return f"{self.prefix}:connection:{connection_id}"

    def group(self, group: str) -> str:
        return f"{self.prefix}:group:{group}"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}"

    def ack(self, server_name: str) -> str:
        return f"{self.prefix}:internal:ack:{server_name}"

    def return_results(self, server_name: str) -> str:
        return f"{self.prefix}:internal:return:{server_name}"


class _RemoteResult:
    """One client result this server waits for from another server."""

    __slots__ = ("completion", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.completion: RedisCompletion | None = None


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
        reconnect_delay: ``(first, max)`` seconds between attempts to reconnect the subscriber.
        server_name: This process's name on the ack channel (default: host name + random).
        max_pending_results: Client results for connections on other servers this server may
            wait for at once, and (separately) client-result invocations from other servers it
            may run at once for its own connections; beyond it ``ClientUnavailableError``.
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
        reconnect_delay: tuple[float, float] = (0.1, 5.0),
        server_name: str | None = None,
        max_pending_results: int = 1024,
    ) -> None:
        self._url = redis_url
        self._channels = RedisChannels(f"{channel_prefix}:{hub_name}")
        self._server_name = server_name or _server_name()
        self._ack_channel = self._channels.ack(self._server_name)
        self._return_channel = self._channels.return_results(self._server_name)
        self._max_pending_results = max_pending_results
        self._ack_timeout = ack_timeout
        self._subscribe_timeout = subscribe_timeout
        self._max_pending_acks = max_pending_acks
        self._group_command_buffer = group_command_buffer
        self._max_publish_connections = max_publish_connections
        self._publish_timeout = publish_timeout
        self._reconnect_delay = reconnect_delay
        self._log = get_logger("signalr_core.redis").bind(hub=hub_name, server=self._server_name)

        self._connections: dict[str, HubConnectionHandle] = {}
        self._groups: dict[str, dict[str, HubConnectionHandle]] = {}
        self._groups_of: dict[str, set[str]] = {}
        self._users: dict[str, dict[str, HubConnectionHandle]] = {}

        # Channels the local state needs besides the fixed ones; the source of truth when the
        # subscriber (re)connects.
        self._wanted: set[str] = set()
        self._pubsub: PubSub | None = None
        self._confirmations: dict[str, anyio.Event] = {}
        self._acks: dict[int, anyio.Event] = {}
        self._ids = itertools.count(1)
        self._publisher: aioredis.Redis | None = None
        self._commands: MemoryObjectSendStream[RedisGroupCommand] | None = None
        # Client results: what this server waits for, and what it runs for other servers.
        self._results: dict[str, _RemoteResult] = {}
        self._result_ids = itertools.count(1)
        self._serving = 0
        self._replies: MemoryObjectSendStream[tuple[str, RedisCompletion]] | None = None
        self._task_group: TaskGroup | None = None
        self._protocols: dict[str, HubProtocol] = default_protocols()

    @property
    def server_name(self) -> str:
        """This process's name on the acknowledgement channel."""
        return self._server_name

    @property
    def connected(self) -> bool:
        """Whether the subscriber currently holds a connection to Redis."""
        return self._pubsub is not None

    # ----------------------------------------------------------------------------- lifespan ---
    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Connect to Redis and run the subscriber until the endpoint stops.

        Entering waits for the first subscription attempt; if Redis is down then, the server
        still starts and the subscriber keeps retrying in the background (with logging).
        """
        return self._lifespan()

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        # from_pool: the client owns (and closes) its bounded pool.
        publisher: aioredis.Redis = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                self._url,
                max_connections=self._max_publish_connections,
                timeout=self._publish_timeout,
                socket_timeout=self._publish_timeout,
                socket_connect_timeout=self._publish_timeout,
                retry=Retry(NoBackoff(), 1),
            )
        )
        # No automatic retries on the subscriber: failures reach _subscribe_loop, which logs them
        # and reconnects with back-off.
        subscriber: aioredis.Redis = aioredis.Redis.from_url(
            self._url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self._publish_timeout,
            socket_keepalive=True,
            health_check_interval=15,
        )
        send, receive = anyio.create_memory_object_stream[RedisGroupCommand](
            self._group_command_buffer
        )
        reply_send, reply_receive = anyio.create_memory_object_stream[tuple[str, RedisCompletion]](
            self._group_command_buffer
        )
        self._publisher, self._commands, self._replies = publisher, send, reply_send
        try:
            async with (
                anyio.create_task_group() as tg,
                send,
                receive,
                reply_send,
                reply_receive,
            ):
                self._task_group = tg
                await tg.start(self._subscribe_loop, subscriber)
                tg.start_soon(self._command_loop, receive)
                tg.start_soon(self._reply_loop, reply_receive)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._publisher, self._commands, self._pubsub = None, None, None
            self._replies, self._task_group = None, None
            self._fail_pending("The Redis backplane stopped.")
            with anyio.CancelScope(shield=True):
                for client in (publisher, subscriber):
                    try:
                        await client.aclose()
                    except (RedisError, OSError) as exc:
                        self._log.debug("redis_backplane_close_failed", error=str(exc))

    async def _subscribe_loop(
        self, client: aioredis.Redis, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        first_delay, max_delay = self._reconnect_delay
        delay = first_delay
        started = False
        lost = False
        while True:
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(
                    self._channels.all,
                    self._channels.group_management,
                    self._ack_channel,
                    self._return_channel,
                )
                self._pubsub = pubsub
                if self._wanted:
                    await pubsub.subscribe(*self._wanted)
                if lost:
                    self._log.info("redis_backplane_reconnected", channels=len(self._wanted) + 4)
                else:
                    self._log.info("redis_backplane_connected")
                lost, delay = False, first_delay
                if not started:
                    started = True
                    task_status.started()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        self._on_pubsub_message(message)
            except (RedisError, OSError) as exc:
                self._log.warning(
                    "redis_backplane_connection_lost",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=delay,
                )
                lost = True
            finally:
                self._pubsub = None
                # Completions published while we are not subscribed are lost: fail the waits.
                self._fail_pending("The connection to the Redis backplane was lost.")
                with anyio.CancelScope(shield=True):
                    try:
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                    except (RedisError, OSError) as exc:
                        self._log.debug("redis_backplane_close_failed", error=str(exc))
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(delay)
            delay = min(delay * 2, max_delay)

    # --------------------------------------------------------------------- incoming messages ---
    def _on_pubsub_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode()
        if kind == "subscribe":
            event = self._confirmations.pop(channel, None)
            if event is not None:
                event.set()
            return
        if kind != "message":
            return
        data: bytes = message["data"]
        try:
            self._dispatch(channel, data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._log.warning("redis_backplane_bad_message", channel=channel, error=str(exc))

    def _dispatch(self, channel: str, data: bytes) -> None:
        kind, _, name = channel[len(self._channels.prefix) + 1 :].partition(":")
        if kind == "all":
            inv = _decode_invocation(data)
            if inv.groups:
                self._deliver_groups(inv)
            else:
                self._deliver(self._connections, inv)
        elif kind == "connection":
            connection = self._connections.get(name)
            item = _decode_connection_message(data)
            if isinstance(item, RedisInvocation):
                if connection is not None:
                    connection.write(_message(item))
            elif isinstance(item, RedisClientInvocation):
                self._on_client_invocation(name, connection, item)
            elif connection is not None:
                self._close_local({name: connection}, item)
        elif kind == "group":
            self._deliver(self._groups.get(name, {}), _decode_invocation(data))
        elif kind == "user":
            item = _decode_user_message(data)
            if isinstance(item, RedisInvocation):
                self._deliver(self._users.get(name, {}), item)
            else:
                self._close_local(self._users.get(name, {}), item)
        elif channel == self._channels.group_management:
            command = _decode_group_command(data)
            if command.connection_id in self._connections and self._commands is not None:
                try:
                    self._commands.send_nowait(command)
                except anyio.WouldBlock:
                    self._log.warning(
                        "redis_backplane_group_command_dropped",
                        group=command.group,
                        connection_id=command.connection_id,
                    )
        elif channel == self._ack_channel:
            event = self._acks.get(_decode_ack(data).id)
            if event is not None:
                event.set()
        elif channel == self._return_channel:
            completion = _decode_completion(data)
            pending = self._results.get(completion.invocation_id)
            if pending is not None and not pending.event.is_set():
                pending.completion = completion
                pending.event.set()

    @staticmethod
    def _deliver(targets: dict[str, HubConnectionHandle], inv: RedisInvocation) -> None:
        if not targets:
            return
        message = _message(inv)
        if inv.exclude:
            excluded = set(inv.exclude)
            for connection_id, connection in list(targets.items()):
                if connection_id not in excluded:
                    connection.write(message)
        else:
            for connection in list(targets.values()):
                connection.write(message)

    def _deliver_groups(self, inv: RedisInvocation) -> None:
        targets: dict[str, HubConnectionHandle] = {}
        for group in inv.groups:
            members = self._groups.get(group)
            if members:
                targets.update(members)
        self._deliver(targets, inv)

    async def _command_loop(self, commands: MemoryObjectReceiveStream[RedisGroupCommand]) -> None:
        async for command in commands:
            connection = self._connections.get(command.connection_id)
            if connection is None:
                continue  # it left meanwhile: no ack, as ASP.NET
            try:
                if command.action is GroupAction.ADD:
                    await self._add_local(connection, command.group)
                else:
                    await self._remove_local(command.connection_id, command.group)
                await self._publish(
                    self._channels.ack(command.server_name), _encode(RedisAck(command.id))
                )
            except RedisBackplaneError as exc:
                self._log.warning(
                    "redis_backplane_group_command_failed", group=command.group, error=str(exc)
                )

    # ------------------------------------------------------ client results, remote close ---
    def _on_client_invocation(
        self, connection_id: str, connection: HubConnectionHandle | None, inv: RedisClientInvocation
    ) -> None:
        tg = self._task_group
        if tg is None:
            return
        if connection is None or not isinstance(connection, LocalConnection):
            self._reply_soon(
                inv,
                CompletionKind.UNAVAILABLE,
                f"Connection '{connection_id}' disconnected.",
            )
        elif self._serving >= self._max_pending_results:
            self._reply_soon(
                inv,
                CompletionKind.UNAVAILABLE,
                f"Connection '{connection_id}' has too many pending client results.",
            )
        else:
            self._serving += 1
            tg.start_soon(self._serve_client_invocation, connection, inv)

    def _reply_soon(self, inv: RedisClientInvocation, kind: CompletionKind, error: str) -> None:
        if self._replies is None:
            return
        completion = RedisCompletion(invocation_id=inv.invocation_id, kind=kind, error=error)
        try:
            self._replies.send_nowait((inv.return_channel, completion))
        except anyio.WouldBlock:
            self._log.warning("redis_backplane_client_result_reply_dropped")

    async def _reply_loop(
        self, replies: MemoryObjectReceiveStream[tuple[str, RedisCompletion]]
    ) -> None:
        async for channel, completion in replies:
            await self._send_completion(channel, completion)

    async def _send_completion(self, channel: str, completion: RedisCompletion) -> None:
        try:
            await self._publish(channel, _encode(completion))
        except RedisBackplaneError as exc:
            self._log.warning("redis_backplane_client_result_reply_failed", error=str(exc))

    async def _serve_client_invocation(
        self, connection: LocalConnection, inv: RedisClientInvocation
    ) -> None:
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
            self._serving -= 1

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
                result = _encode(value)
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

    def _fail_pending(self, reason: str) -> None:
        for invocation_id, pending in self._results.items():
            if not pending.event.is_set():
                pending.completion = RedisCompletion(
                    invocation_id=invocation_id, kind=CompletionKind.UNAVAILABLE, error=reason
                )
                pending.event.set()

    def _close_local(self, targets: dict[str, HubConnectionHandle], close: RedisClose) -> None:
        if close.server_name == self._server_name or not targets:
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
            self._log.info("redis_backplane_remote_close", closed=closed)

    # ------------------------------------------------------------------------ subscriptions ---
    async def _subscribe(self, channel: str) -> None:
        self._wanted.add(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return  # the subscriber subscribes to everything wanted when it reconnects
        event = self._confirmations.setdefault(channel, anyio.Event())
        try:
            await pubsub.subscribe(channel)
        except (RedisError, OSError) as exc:
            self._log.warning("redis_backplane_subscribe_failed", error=str(exc))
            return
        with anyio.move_on_after(self._subscribe_timeout) as scope:
            await event.wait()
        if scope.cancelled_caught:
            self._confirmations.pop(channel, None)
            self._log.warning("redis_backplane_subscribe_unconfirmed")

    async def _unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            await pubsub.unsubscribe(channel)
        except (RedisError, OSError) as exc:
            self._log.warning("redis_backplane_unsubscribe_failed", error=str(exc))

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
        connection_id = connection.connection_id
        self._connections[connection_id] = connection
        await self._subscribe(self._channels.connection(connection_id))
        user_id = connection.user_id
        if user_id is not None:
            conns = self._users.setdefault(user_id, {})
            first = not conns
            conns[connection_id] = connection
            if first:
                await self._subscribe(self._channels.user(user_id))

    async def on_disconnected(self, connection: HubConnectionHandle) -> None:
        connection_id = connection.connection_id
        self._connections.pop(connection_id, None)
        await self._unsubscribe(self._channels.connection(connection_id))
        for group in list(self._groups_of.get(connection_id, ())):
            await self._remove_local(connection_id, group)
        self._groups_of.pop(connection_id, None)
        user_id = connection.user_id
        if user_id is not None:
            conns = self._users.get(user_id)
            if conns is not None:
                conns.pop(connection_id, None)
                if not conns:
                    del self._users[user_id]
                    await self._unsubscribe(self._channels.user(user_id))

    async def send_all(
        self, method: str, args: Sequence[Any], exclude: Collection[str] = ()
    ) -> None:
        inv = RedisInvocation(target=method, arguments=tuple(args), exclude=tuple(exclude))
        await self._publish(self._channels.all, _encode(inv))

    async def send_connections(
        self, connection_ids: Collection[str], method: str, args: Sequence[Any]
    ) -> None:
        message: InvocationMessage | None = None
        payload: bytes | None = None
        for connection_id in set(connection_ids):
            connection = self._connections.get(connection_id)
            if connection is not None:
                # Local: skip Redis (connections are sticky), as ASP.NET does.
                if message is None:
                    message = InvocationMessage(target=method, arguments=tuple(args))
                connection.write(message)
                continue
            if payload is None:
                payload = _encode(RedisInvocation(target=method, arguments=tuple(args)))
            await self._publish(self._channels.connection(connection_id), payload)

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
            await self._publish(self._channels.group(names[0]), _encode(inv))
            return
        # Several groups: one message on the all channel so each connection gets it once.
        inv = RedisInvocation(
            target=method, arguments=tuple(args), exclude=tuple(exclude), groups=names
        )
        await self._publish(self._channels.all, _encode(inv))

    async def send_users(self, user_ids: Collection[str], method: str, args: Sequence[Any]) -> None:
        payload: bytes | None = None
        for user_id in dict.fromkeys(user_ids):
            if payload is None:
                payload = _encode(RedisInvocation(target=method, arguments=tuple(args)))
            await self._publish(self._channels.user(user_id), payload)

    async def add_to_group(self, connection_id: str, group: str) -> None:
        connection = self._connections.get(connection_id)
        if connection is not None:
            await self._add_local(connection, group)
            return
        await self._group_command(GroupAction.ADD, connection_id, group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        if connection_id in self._connections:
            await self._remove_local(connection_id, group)
            return
        await self._group_command(GroupAction.REMOVE, connection_id, group)

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
                if connection_id not in self._connections
            ]
        elif request.user_ids is not None:
            channels = [self._channels.user(user_id) for user_id in sorted(request.user_ids)]
        else:
            return
        if not channels:
            return
        payload = _encode(close)
        for channel in channels:
            await self._publish(channel, payload)

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
        local = self._connections.get(connection_id)
        if local is not None and isinstance(local, LocalConnection):
            return await local.invoke_client(method, args, result_type=result_type, timeout=timeout)
        if self._pubsub is None:
            raise ClientUnavailableError(
                f"Connection '{connection_id}' cannot be reached: the Redis backplane is not "
                "connected."
            )
        if len(self._results) >= self._max_pending_results:
            raise ClientUnavailableError(
                "Too many client results are waiting for connections on other servers."
            )
        invocation_id = f"{self._server_name}:{next(self._result_ids)}"
        pending = _RemoteResult()
        self._results[invocation_id] = pending
        try:
            inv = RedisClientInvocation(
                target=method,
                arguments=tuple(args),
                invocation_id=invocation_id,
                return_channel=self._return_channel,
                timeout=timeout,
            )
            try:
                receivers = await self._publish(
                    self._channels.connection(connection_id), _encode(inv)
                )
            except RedisBackplaneError as exc:
                raise ClientUnavailableError(
                    f"Connection '{connection_id}' cannot be reached: {exc}"
                ) from exc
            if receivers < 1:
                raise ClientUnavailableError(f"Connection '{connection_id}' does not exist.")
            with anyio.move_on_after(timeout):
                await pending.event.wait()
        finally:
            del self._results[invocation_id]
        completion = pending.completion
        if completion is None:
            raise TimeoutError(
                f"No result for '{method}' from connection '{connection_id}' within {timeout} s."
            )
        return self._result(completion, result_type)

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

    # --------------------------------------------------------------------------- internals ---
    async def _add_local(self, connection: HubConnectionHandle, group: str) -> None:
        groups = self._groups_of.setdefault(connection.connection_id, set())
        if group in groups:
            return
        groups.add(group)
        members = self._groups.setdefault(group, {})
        first = not members
        members[connection.connection_id] = connection
        channel = self._channels.group(group)
        if first:
            await self._subscribe(channel)
            return
        in_flight = self._confirmations.get(channel)
        if in_flight is not None:
            # The first member's subscribe is not confirmed yet: a later joiner must not return
            # before group messages can reach it either (bounded like the first one's wait).
            with anyio.move_on_after(self._subscribe_timeout):
                await in_flight.wait()

    async def _remove_local(self, connection_id: str, group: str) -> None:
        groups = self._groups_of.get(connection_id)
        if groups is not None:
            groups.discard(group)
        members = self._groups.get(group)
        if members is None or members.pop(connection_id, None) is None:
            return
        if not members:
            del self._groups[group]
            await self._unsubscribe(self._channels.group(group))

    async def _group_command(self, action: GroupAction, connection_id: str, group: str) -> None:
        if len(self._acks) >= self._max_pending_acks:
            raise RedisBackplaneError("Too many group operations are waiting for other servers.")
        command_id = next(self._ids)
        event = anyio.Event()
        self._acks[command_id] = event
        try:
            command = RedisGroupCommand(
                id=command_id,
                server_name=self._server_name,
                action=action,
                group=group,
                connection_id=connection_id,
            )
            await self._publish(self._channels.group_management, _encode(command))
            with anyio.move_on_after(self._ack_timeout) as scope:
                await event.wait()
            if scope.cancelled_caught:
                raise RedisBackplaneError(
                    f"No server acknowledged the group operation for connection "
                    f"'{connection_id}' within {self._ack_timeout:g} s."
                )
        finally:
            del self._acks[command_id]


def _message(inv: RedisInvocation) -> InvocationMessage:
    return InvocationMessage(target=inv.target, arguments=inv.arguments)
