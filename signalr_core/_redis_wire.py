"""What the Redis backplane's servers say to each other: channel names and MessagePack structs.

Every payload on a channel is one of these structs, encoded as a MessagePack array with a
decoder built once per channel kind (see ``signalr_core.redis`` for who publishes what where).
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = [
    "CompletionKind",
    "GroupAction",
    "RedisAck",
    "RedisChannels",
    "RedisClientInvocation",
    "RedisClose",
    "RedisCompletion",
    "RedisGroupCommand",
    "RedisHello",
    "RedisInvocation",
]


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


class RedisHello(msgspec.Struct, array_like=True, frozen=True, kw_only=True):
    """A server's announcement on the servers channel.

    ``ask``: the sender is recovering and asks every subscribed server to announce itself now.
    ``bye``: the sender stops; forget it at once.
    """

    server_name: str
    ask: bool = False
    bye: bool = False


encode = msgspec.msgpack.Encoder().encode
decode_invocation = msgspec.msgpack.Decoder(RedisInvocation).decode
decode_connection_message = msgspec.msgpack.Decoder(
    RedisInvocation | RedisClientInvocation | RedisClose
).decode
decode_user_message = msgspec.msgpack.Decoder(RedisInvocation | RedisClose).decode
decode_completion = msgspec.msgpack.Decoder(RedisCompletion).decode
decode_group_command = msgspec.msgpack.Decoder(RedisGroupCommand).decode
decode_ack = msgspec.msgpack.Decoder(RedisAck).decode
decode_hello = msgspec.msgpack.Decoder(RedisHello).decode


class RedisChannels:
    """Channel names for one hub (same layout as ASP.NET's ``RedisChannels``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.all = f"{prefix}:all"
        self.group_management = f"{prefix}:internal:groups"
        self.servers = f"{prefix}:internal:servers"

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
