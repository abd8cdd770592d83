"""The WebSockets transport: JSON in text frames, MessagePack in binary frames.

Every batch of frames queued since the last send goes out as one WebSocket message (the hub
protocols are self-delimiting, and the clients parse several messages per WebSocket message).
The frame type follows the negotiated protocol's transfer format, as ASP.NET's
``ActiveFormat``: text for JSON (the handshake answer included), binary for MessagePack.
"""

from __future__ import annotations

import anyio

from signalr_core.dispatcher import HubServerConnection
from signalr_core.messages import TransferFormat
from signalr_core.transports import ASGIReceive, ASGISend

__all__ = ["serve_websocket"]

_NORMAL_CLOSURE = 1000
_INTERNAL_ERROR = 1011


async def serve_websocket(
    connection: HubServerConnection, receive: ASGIReceive, send: ASGISend
) -> None:
    """Pump bytes both ways until either side ends (the socket is already accepted)."""
    connection.transport_attached = True
    try:
        async with anyio.create_task_group() as tg:
            connection.transport_scope = tg.cancel_scope
            tg.start_soon(_send_loop, connection, send, tg.cancel_scope)
            try:
                await _receive_loop(connection, receive)
            finally:
                connection.transport_closed()
            tg.cancel_scope.cancel()
    finally:
        connection.transport_attached = False
        connection.transport_scope = None


async def _receive_loop(connection: HubServerConnection, receive: ASGIReceive) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            data = message.get("bytes")
            if data is None:
                data = (message.get("text") or "").encode()
            if not await connection.feed(data):
                return
        elif kind == "websocket.disconnect":
            return


async def _send_loop(
    connection: HubServerConnection, send: ASGISend, scope: anyio.CancelScope
) -> None:
    outgoing = connection.outgoing
    try:
        while True:
            await outgoing.wait()
            chunks = outgoing.drain()
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                protocol = connection.protocol
                if protocol is not None and protocol.transfer_format is TransferFormat.BINARY:
                    await send({"type": "websocket.send", "bytes": data})
                else:
                    await send({"type": "websocket.send", "text": data.decode()})
            elif outgoing.closed:
                code = _INTERNAL_ERROR if connection.aborted else _NORMAL_CLOSURE
                await send({"type": "websocket.close", "code": code})
                break
    except OSError:
        pass  # the client went away; the receive loop sees the disconnect
    finally:
        scope.cancel()
