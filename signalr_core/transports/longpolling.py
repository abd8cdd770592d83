"""The Long Polling transport (server to client by polls; the client sends with POST).

* The first poll answers ``200`` with an empty body at once: the client learns the connection
  is alive (ASP.NET starts the application on it).
* Later polls wait up to ``long_poll_timeout`` for frames: ``200`` with every queued frame, or
  ``200`` empty on timeout (the client polls again).
* A newer poll ends the pending one with ``204``; so does the end of the connection (then the
  next poll gets ``204`` too, and the one after ``404``).
"""

from __future__ import annotations

import time

import anyio

from signalr_core.transports import ASGISend, PollSlot, TransportConnection, send_response

__all__ = ["PollSlot", "serve_poll"]


async def serve_poll(
    connection: TransportConnection,
    send: ASGISend,
    *,
    poll_timeout: float,
) -> bool:
    """Answer one (non-first) poll. Returns ``True`` if the connection is over (204 sent)."""
    previous = connection.current_poll
    if previous is not None:
        previous.superseded = True
        previous.scope.cancel()
    slot = PollSlot()
    connection.current_poll = slot
    connection.poll_active = True
    outgoing = connection.outgoing
    try:
        with slot.scope, anyio.move_on_after(poll_timeout):
            await outgoing.wait()
    finally:
        if connection.current_poll is slot:
            connection.current_poll = None
            connection.poll_active = False
        connection.last_poll = time.monotonic()
    try:
        if slot.superseded:
            await send_response(send, 204)
            return False
        chunks = outgoing.drain()
        if chunks:
            await send_response(
                send,
                200,
                b"".join(chunks),
                content_type=(
                    "application/octet-stream" if connection.binary else "text/plain; charset=utf-8"
                ),
            )
            return False
        if outgoing.closed:
            await send_response(send, 204)
            return True
        await send_response(send, 200)
        return False
    except OSError:
        return False
