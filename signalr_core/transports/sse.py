"""The Server-Sent Events transport (server to client; the client sends with POST).

Only text protocols. Each batch of queued frames becomes one event, every line of it prefixed
with ``data: `` as ASP.NET's ``ServerSentEventsMessageFormatter`` writes it.
"""

from __future__ import annotations

import anyio

from signalr_core.transports import (
    ASGIReceive,
    ASGISend,
    TransportConnection,
    wait_for_disconnect,
)

__all__ = ["format_event", "serve_sse"]

_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def format_event(data: bytes) -> bytes:
    """One SSE event carrying ``data`` (split on newlines, each line ``data: ...``)."""
    parts = [b"data: " + line + b"\r\n" for line in data.split(b"\n")]
    parts.append(b"\r\n")
    return b"".join(parts)


async def serve_sse(
    connection: TransportConnection,
    receive: ASGIReceive,
    send: ASGISend,
) -> None:
    """Stream the connection's outgoing frames until it ends or the client goes away."""
    await send({"type": "http.response.start", "status": 200, "headers": [*_HEADERS]})
    # A comment first, so clients see the stream open at once (ASP.NET does the same).
    await send({"type": "http.response.body", "body": b":\r\n", "more_body": True})
    connection.transport_attached = True
    try:
        async with anyio.create_task_group() as tg:
            connection.transport_scope = tg.cancel_scope
            tg.start_soon(_send_loop, connection, send, tg.cancel_scope)
            try:
                await wait_for_disconnect(receive)
            finally:
                connection.transport_closed()
            tg.cancel_scope.cancel()
    finally:
        connection.transport_attached = False
        connection.transport_scope = None


async def _send_loop(
    connection: TransportConnection, send: ASGISend, scope: anyio.CancelScope
) -> None:
    outgoing = connection.outgoing
    try:
        while True:
            await outgoing.wait()
            chunks = outgoing.drain()
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                await send(
                    {"type": "http.response.body", "body": format_event(data), "more_body": True}
                )
            elif outgoing.closed:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                break
    except OSError:
        pass
    finally:
        scope.cancel()
