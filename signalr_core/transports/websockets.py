"""The WebSockets transport: JSON in text frames, MessagePack in binary frames.

Every batch of frames queued since the last send goes out as one WebSocket message (the hub
protocols are self-delimiting, and the clients parse several messages per WebSocket message).
The frame type follows the connection's transfer format, as ASP.NET's ``ActiveFormat``: for
a hub, text for JSON (the handshake answer included), binary for MessagePack.
"""

from __future__ import annotations

import time

import anyio

from signalr_core.transports import ASGIReceive, ASGISend, TransportConnection

__all__ = ["serve_websocket"]

_NORMAL_CLOSURE = 1000
_GOING_AWAY = 1001
_MESSAGE_TOO_BIG = 1009
_INTERNAL_ERROR = 1011
_CLOSE_HANDSHAKE_TIMEOUT = 2.0
"""How long to wait for the client's answer to our close frame (a clean close needs it)."""


async def serve_websocket(
    connection: TransportConnection, receive: ASGIReceive, send: ASGISend
) -> bool:
    """Pump bytes both ways until either side ends (the socket is already accepted).

    Returns ``True`` when the connection stays alive without a transport, waiting for the
    client to reconnect (stateful reconnect after an unclean drop).
    """
    connection.transport_attached = True
    generation = connection.transport_generation
    graceful = [False]
    try:
        async with anyio.create_task_group() as tg:
            connection.transport_scope = tg.cancel_scope

            async def write_direct(frames: list[bytes]) -> None:
                # The message loop's direct path (it holds the outgoing buffer, so this and the
                # send loop never send at the same time).
                try:
                    await _send_frames(connection, send, frames)
                except OSError:
                    tg.cancel_scope.cancel()  # the client went away, as in the send loop

            connection.direct_writer = write_direct
            tg.start_soon(_send_loop, connection, send, tg.cancel_scope)
            await _receive_loop(connection, receive, send, graceful)
            tg.cancel_scope.cancel()
    finally:
        if connection.transport_generation == generation:  # not taken over by a reconnect
            connection.transport_attached = False
            connection.transport_scope = None
            connection.direct_writer = None
    if connection.transport_generation != generation:
        return True  # a newer transport already resumed the connection
    return connection.transport_lost(graceful=graceful[0], now=time.monotonic())


async def _receive_loop(
    connection: TransportConnection, receive: ASGIReceive, send: ASGISend, graceful: list[bool]
) -> None:
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
                graceful[0] = True
                return
            if not await connection.feed(data):
                graceful[0] = True
                return
        elif kind == "websocket.disconnect":
            # A close frame from the client (1000 / 1001) is a deliberate stop; 1006 and
            # friends mean the socket broke, which stateful reconnect survives.
            graceful[0] = message.get("code", 1000) in (_NORMAL_CLOSURE, _GOING_AWAY)
            return


async def _send_frames(
    connection: TransportConnection, send: ASGISend, chunks: list[bytes]
) -> None:
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if connection.binary:
        await send({"type": "websocket.send", "bytes": data})
    else:
        await send({"type": "websocket.send", "text": data.decode()})


async def _send_loop(
    connection: TransportConnection, send: ASGISend, scope: anyio.CancelScope
) -> None:
    outgoing = connection.outgoing
    try:
        while True:
            await outgoing.wait()
            chunks = outgoing.drain()
            if chunks:
                await _send_frames(connection, send, chunks)
            elif outgoing.closed:
                code = _INTERNAL_ERROR if connection.aborted else _NORMAL_CLOSURE
                await send({"type": "websocket.close", "code": code})
                if not connection.aborted:
                    # Leaving now could drop the TCP connection before the client's close frame
                    # arrives (its `wasClean` is then false and it reports an error). The
                    # receive loop ends the task group when the client's disconnect arrives.
                    await anyio.sleep(_CLOSE_HANDSHAKE_TIMEOUT)
                break
    except OSError:
        pass  # the client went away; the receive loop sees the disconnect
    finally:
        scope.cancel()
