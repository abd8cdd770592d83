"""The WebSockets transport: JSON in text frames, MessagePack in binary frames.

Every batch of frames queued since the last send goes out as one WebSocket message (the hub
protocols are self-delimiting, and the clients parse several messages per WebSocket message).
The frame type follows the connection's transfer format, as ASP.NET's ``ActiveFormat``: for
a hub, text for JSON (the handshake answer included), binary for MessagePack.

The request task only reads: it feeds received messages to the connection. Sending is done by
the connection itself through :attr:`~signalr_core.transports.TransportConnection.direct_writer`
(a hub connection's message loop while it waits for input, so an idle connection has no writer
task of its own). When the connection
ends, its message loop is gone: the request task then sends what is left, the close frame, and
waits (briefly) for the client's answer to it.
"""

from __future__ import annotations

import contextlib
import enum
import time

import anyio

from signalr_core.transports import ASGIReceive, ASGISend, TransportConnection

__all__ = ["serve_websocket"]

_NORMAL_CLOSURE = 1000
_GOING_AWAY = 1001
_MESSAGE_TOO_BIG = 1009
_CLOSE_HANDSHAKE_TIMEOUT = 2.0
"""How long to wait for the client's answer to our close frame (a clean close needs it), and
at most for the last frames to go out."""


class _End(enum.Enum):
    """Why the receive loop ended."""

    CLIENT_CLOSED = "client closed"  # close frame from the client, or the socket broke
    REFUSED = "refused"  # a message over the limit: closed with 1009 already
    CONNECTION_ENDED = "connection ended"  # the connection stopped taking input
    CANCELLED = "cancelled"  # the connection ended, was aborted, resumed elsewhere, or broke


async def serve_websocket(
    connection: TransportConnection, receive: ASGIReceive, send: ASGISend
) -> bool:
    """Read until either side ends, then close (the socket is already accepted).

    Returns ``True`` when the connection stays alive without a transport, waiting for the
    client to reconnect (stateful reconnect after an unclean drop).
    """
    connection.transport_attached = True
    generation = connection.transport_generation
    graceful = False
    broken = False
    end = _End.CANCELLED
    scope = anyio.CancelScope()

    async def write_direct(frames: list[bytes]) -> None:
        # Called by the connection's message loop (its only writer while attached).
        nonlocal broken
        try:
            await _send_frames(connection, send, frames)
        except OSError:
            broken = True
            scope.cancel()  # the client went away: stop reading too

    try:
        with scope:
            connection.transport_scope = scope
            connection.direct_writer = write_direct
            connection.outgoing.notify()  # frames queued before (a resume's replay) go out now
            end, graceful = await _receive_loop(connection, receive, send)
        taken_over = connection.resuming or connection.transport_generation != generation
        if not taken_over:
            connection.direct_writer = None  # from here on this task sends
            if end is _End.CONNECTION_ENDED or (end is _End.CANCELLED and not broken):
                await _close(connection, receive, send)
                graceful = True
    finally:
        if connection.transport_generation == generation:  # not taken over by a reconnect
            connection.transport_attached = False
            connection.transport_scope = None
            connection.direct_writer = None
    if connection.transport_generation != generation:
        return True  # a newer transport already resumed the connection
    return connection.transport_lost(graceful=graceful, now=time.monotonic())


async def _receive_loop(
    connection: TransportConnection, receive: ASGIReceive, send: ASGISend
) -> tuple[_End, bool]:
    while True:
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
                return _End.REFUSED, True
            if not await connection.feed(data):
                return _End.CONNECTION_ENDED, True
        elif kind == "websocket.disconnect":
            # A close frame from the client (1000 / 1001) is a deliberate stop; 1006 and
            # friends mean the socket broke, which stateful reconnect survives.
            return _End.CLIENT_CLOSED, message.get("code", 1000) in (_NORMAL_CLOSURE, _GOING_AWAY)


async def _close(connection: TransportConnection, receive: ASGIReceive, send: ASGISend) -> None:
    """The connection ended (or is ending): send what is left and the close frame."""
    if connection.aborted:
        return  # dropped at once, as a socket that does not drain must be (no close handshake)
    outgoing = connection.outgoing
    with contextlib.suppress(OSError):
        # The message loop may still be finishing (on_disconnected, bounded there): what it
        # queues meanwhile goes out, its Close message last.
        while True:
            if len(outgoing):
                with anyio.move_on_after(_CLOSE_HANDSHAKE_TIMEOUT) as stalled:
                    await _send_frames(connection, send, outgoing.drain())
                if stalled.cancelled_caught:
                    connection.abort()  # a socket that does not drain: stop waiting for it
                    return
            elif outgoing.closed:
                break
            else:
                await outgoing.wait_notified()  # the next put, or close()
        if connection.aborted:
            return  # aborted meanwhile
        with anyio.move_on_after(_CLOSE_HANDSHAKE_TIMEOUT):
            if len(outgoing):
                await _send_frames(connection, send, outgoing.drain())
            await send({"type": "websocket.close", "code": _NORMAL_CLOSURE})
            # Leaving now could drop the TCP connection before the client's close frame
            # arrives (its `wasClean` is then false and it reports an error).
            while (await receive())["type"] != "websocket.disconnect":
                pass


async def _send_frames(
    connection: TransportConnection, send: ASGISend, chunks: list[bytes]
) -> None:
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if connection.binary:
        await send({"type": "websocket.send", "bytes": data})
    else:
        await send({"type": "websocket.send", "text": data.decode()})
