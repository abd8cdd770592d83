"""Group changes for connections on other servers, acknowledged (ASP.NET's ``AckHandler``).

``add_to_group`` / ``remove_from_group`` for a connection this server does not hold publishes a
:class:`RedisGroupCommand` on ``{prefix}:internal:groups`` and waits (at most ``ack_timeout``)
for a :class:`RedisAck` on its own ack channel. The owning server sends the ack only after it
has applied the change (and, for an add, subscribed to the group's channel), so a send to the
group after the call returns reaches the new member. Commands from other servers wait in a
bounded stream; overflow is logged and its sender times out.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from signalr_core._logging import StructuredLogger
from signalr_core._redis_delivery import RedisBackplaneError
from signalr_core._redis_wire import (
    GroupAction,
    RedisAck,
    RedisChannels,
    RedisGroupCommand,
    decode_ack,
    decode_group_command,
    encode,
)

__all__ = ["GroupCommands"]

Publish = Callable[[str, bytes], Awaitable[int]]


class GroupCommands:
    """Both sides of acknowledged group commands.

    Args:
        publish: Raw publish (returns Redis's subscriber count).
        server_name: This server's name (where acks for its commands go).
        channels: The hub's channel names.
        ack_timeout: Seconds a command waits for the owning server.
        max_pending: Commands that may wait for an acknowledgement at once.
        buffer: Commands from other servers queued for processing.
        log: The backplane's logger.
    """

    def __init__(
        self,
        publish: Publish,
        *,
        server_name: str,
        channels: RedisChannels,
        ack_timeout: float,
        max_pending: int,
        buffer: int,
        log: StructuredLogger,
    ) -> None:
        self._publish = publish
        self._server_name = server_name
        self._channels = channels
        self._ack_timeout = ack_timeout
        self._max_pending = max_pending
        self._buffer = buffer
        self._log = log
        self._acks: dict[int, anyio.Event] = {}
        self._ids = itertools.count(1)
        self._commands: MemoryObjectSendStream[RedisGroupCommand] | None = None

    async def request(self, action: GroupAction, connection_id: str, group: str) -> None:
        """Have the server holding ``connection_id`` apply ``action`` and wait for its ack.

        Raises:
            RedisBackplaneError: Redis is unreachable, too many commands wait, or no server
                acknowledged within ``ack_timeout``.
        """
        if len(self._acks) >= self._max_pending:
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
            await self._publish(self._channels.group_management, encode(command))
            with anyio.move_on_after(self._ack_timeout) as scope:
                await event.wait()
            if scope.cancelled_caught:
                raise RedisBackplaneError(
                    f"No server acknowledged the group operation for connection "
                    f"'{connection_id}' within {self._ack_timeout:g} s."
                )
        finally:
            del self._acks[command_id]

    def on_ack(self, data: bytes) -> None:
        """An acknowledgement arrived on this server's ack channel."""
        event = self._acks.get(decode_ack(data).id)
        if event is not None:
            event.set()

    def on_command(self, data: bytes, is_local: Callable[[str], bool]) -> None:
        """A command arrived; queue it when this server holds its connection."""
        command = decode_group_command(data)
        if not is_local(command.connection_id) or self._commands is None:
            return
        try:
            self._commands.send_nowait(command)
        except anyio.WouldBlock:
            self._log.warning(
                "backplane_group_command_dropped",
                group=command.group,
                connection_id=command.connection_id,
            )

    async def run(self, apply: Callable[[RedisGroupCommand], Awaitable[bool]]) -> None:
        """Apply queued commands in order (``apply`` returns whether the connection was still
        here) and acknowledge them, until cancelled."""
        send, receive = anyio.create_memory_object_stream[RedisGroupCommand](self._buffer)
        self._commands = send
        try:
            async with send, receive:
                async for command in receive:
                    try:
                        if not await apply(command):
                            continue  # it left meanwhile: no ack, as ASP.NET
                        await self._publish(
                            self._channels.ack(command.server_name), encode(RedisAck(command.id))
                        )
                    except RedisBackplaneError as exc:
                        self._log.warning(
                            "backplane_group_command_failed",
                            group=command.group,
                            error=str(exc),
                        )
        finally:
            self._commands = None
