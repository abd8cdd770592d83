"""The Server-Sent Events transport (server to client; the client sends with POST).

Only text protocols. Each batch of queued frames becomes one event, every line of it prefixed
with ``data: `` as ASP.NET's ``ServerSentEventsMessageFormatter`` writes it.

As with WebSockets, the request task only reads (it waits for the client to go away): the
connection writes the events itself through
:attr:`~signalr_core.transports.TransportConnection.direct_writer` (a hub connection's message
loop, so a reply goes out without waking another task). When the connection ends, the
request task sends what is left and ends the response.
"""

from __future__ import annotations

from collections.abc import Awaitable

import anyio

from signalr_core.transports import (
    ASGIReceive,
    ASGISend,
    DirectWriter,
    TransportConnection,
    wait_for_disconnect,
)

__all__ = ["format_event", "serve_sse"]

_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_LAST_EVENTS_TIMEOUT = 2.0
"""At most how long one write of what is left may take once the connection ended."""


def format_event(data: bytes) -> bytes:
    """One SSE event carrying ``data`` (split on newlines, each line ``data: ...``)."""
    parts = [b"data: " + line + b"\r\n" for line in data.split(b"\n")]
    parts.append(b"\r\n")
    return b"".join(parts)


class _EventStream(DirectWriter):
    """The event stream, as the connection writes to it (``direct_writer``)."""

    __slots__ = ()

    def send_frames(self, frames: list[bytes]) -> Awaitable[None]:
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        return self.send(
            {"type": "http.response.body", "body": format_event(data), "more_body": True}
        )


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
    stream = _EventStream(connection, send, anyio.CancelScope())
    try:
        with stream.scope:
            connection.transport_scope = stream.scope
            connection.direct_writer = stream
            connection.outgoing.notify()  # frames queued before go out now
            try:
                await wait_for_disconnect(receive)
            finally:
                connection.direct_writer = None  # the response is gone, or this task sends
                connection.transport_closed()
            return  # the client went away
        # Cancelled: the connection ended (or was aborted), or a write failed.
        if await stream.send_rest(_LAST_EVENTS_TIMEOUT):
            with anyio.move_on_after(_LAST_EVENTS_TIMEOUT):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass  # the client went away
    finally:
        stream.discard()  # a write left half-done (the stream is gone)
        connection.transport_attached = False
        connection.transport_scope = None
