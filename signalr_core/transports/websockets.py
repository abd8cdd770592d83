"""The WebSockets transport: JSON in text frames, MessagePack in binary frames.

Every batch of frames queued since the last send goes out as one WebSocket message (the hub
protocols are self-delimiting, and the clients parse several messages per WebSocket message).
The frame type follows the connection's transfer format, as ASP.NET's ``ActiveFormat``: for
a hub, text for JSON (the handshake answer included), binary for MessagePack.

The request task only reads: it feeds received messages to the connection (a hub connection
whose message loop is idle runs them right in this task). Sending is done by
the connection itself through :attr:`~signalr_core.transports.TransportConnection.direct_writer`
(a hub connection's message loop while it waits for input, so an idle connection has no writer
task of its own). When the connection ends, its writer is gone: the request task then sends
what is left, the close frame, and waits (briefly) for the client's answer to it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable

import anyio

from signalr_core.transports import (
    ASGIMessage,
    ASGIReceive,
    ASGISend,
    DirectWriter,
    TransportConnection,
)

__all__ = ["serve_websocket"]

_NORMAL_CLOSURE = 1000
_GOING_AWAY = 1001
_MESSAGE_TOO_BIG = 1009
_CLOSE_HANDSHAKE_TIMEOUT = 2.0
"""How long to wait for the client's answer to our close frame (a clean close needs it), and
at most for the last frames to go out."""


class _Socket(DirectWriter):
    """The accepted socket, as the connection's message loop writes to it (``direct_writer``)."""

    __slots__ = ()

    def send_frames(self, frames: list[bytes]) -> Awaitable[None]:
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        if self.connection.binary:
            return self.send({"type": "websocket.send", "bytes": data})
        return self.send({"type": "websocket.send", "text": data.decode()})


async def serve_websocket(
    connection: TransportConnection, receive: ASGIReceive, send: ASGISend
) -> bool:
    """Read until either side ends, then close (the socket is already accepted).

    Returns ``True`` when the connection stays alive without a transport, waiting for the
    client to reconnect (stateful reconnect after an unclean drop).
    """
    connection.transport_attached = True
    generation = connection.transport_generation
    # Why reading ended: the client closed (or the socket broke), a message over the limit
    # (closed with 1009 already), the connection stopped taking input, or (none of these) the
    # scope was cancelled: the connection ended or was aborted, resumed elsewhere, or broke.
    client_closed = refused = graceful = False
    message: ASGIMessage | None
    data: bytes | None
    socket = _Socket(connection, send, anyio.CancelScope())
    try:
        with socket.scope:
            connection.transport_scope = socket.scope
            connection.direct_writer = socket
            connection.outgoing.notify()  # frames queued before (a resume's replay) go out now
            # The receive loop is inline: one coroutine frame less per idle connection.
            while True:
                message = data = None  # idle: keep neither the last message nor its bytes
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    data = message.get("bytes")
                    if data is None:
                        data = (message.get("text") or "").encode()
                    if len(data) > connection.incoming_limit:
                        # Received memory is bounded in bytes (application_max_buffer_size).
                        await send({"type": "websocket.close", "code": _MESSAGE_TOO_BIG})
                        connection.abort()
                        refused = graceful = True
                        break
                    if not await connection.feed(data):
                        graceful = True  # the connection ended: close below
                        break
                elif kind == "websocket.disconnect":
                    # A close frame from the client (1000 / 1001) is a deliberate stop; 1006
                    # and friends mean the socket broke, which stateful reconnect survives.
                    client_closed = True
                    graceful = message.get("code", 1000) in (_NORMAL_CLOSURE, _GOING_AWAY)
                    break
        taken_over = connection.resuming or connection.transport_generation != generation
        if not (taken_over or client_closed or refused or socket.broken):
            connection.direct_writer = None  # from here on this task sends
            await _close(socket, receive)
            graceful = True
    finally:
        socket.discard()  # a write left half-done (the socket is gone or taken over)
        if connection.transport_generation == generation:  # not taken over by a reconnect
            connection.transport_attached = False
            connection.transport_scope = None
            connection.direct_writer = None
    if connection.transport_generation != generation:
        return True  # a newer transport already resumed the connection
    return connection.transport_lost(graceful=graceful, now=time.monotonic())


async def _close(socket: _Socket, receive: ASGIReceive) -> None:
    """The connection ended (or is ending): send what is left and the close frame."""
    send = socket.send
    if not await socket.send_rest(_CLOSE_HANDSHAKE_TIMEOUT):
        # aborted (dropped at once, as a socket that does not drain must be: no close
        # handshake), or the client went away, or did not read
        return
    with contextlib.suppress(OSError):
        with anyio.move_on_after(_CLOSE_HANDSHAKE_TIMEOUT):
            await send({"type": "websocket.close", "code": _NORMAL_CLOSURE})
            # Leaving now could drop the TCP connection before the client's close frame
            # arrives (its `wasClean` is then false and it reports an error).
            while (await receive())["type"] != "websocket.disconnect":
                pass
