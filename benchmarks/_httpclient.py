"""A minimal HTTP/1.1 client on a raw asyncio protocol, for the POST/SSE load.

Like :mod:`benchmarks._wsclient`, it costs the load generator as little as possible and is the
same for every server: one keep-alive connection, one request at a time, responses parsed in
``data_received`` (``Content-Length`` or chunked bodies). A connection either sends requests
(:meth:`HttpConnection.request`) or holds one streamed response (:meth:`HttpConnection.stream`,
a Server-Sent Events stream whose events go to a callback).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

MAX_HEAD = 16384  # security limits: the benchmark never receives more than these
MAX_BODY = 1 << 20

EventHandler = Callable[[bytes], None]


class HttpError(Exception):
    """The server broke HTTP/1.1 framing, or the connection was lost mid-response."""


class HttpConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self._host = f"{host}:{port}"
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._head_done = False
        self._status = 0
        self._length: int | None = None  # None: chunked
        self._body = bytearray()
        self._response: asyncio.Future[tuple[int, bytes]] | None = None
        self._on_event: EventHandler | None = None  # set: the response is an event stream
        self._events = bytearray()
        self.will_close = False  # the last response said "Connection: close"
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("connection lost")
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            self._parse()
        except (ValueError, HttpError) as exc:
            self._fail(str(exc))
            if self._transport is not None:
                self._transport.abort()

    # API ----------------------------------------------------------------------------------------
    def request(
        self, method: str, target: str, body: bytes = b"", content_type: str = "text/plain"
    ) -> asyncio.Future[tuple[int, bytes]]:
        """Send a request; the future resolves with (status, body) when the response is read."""
        headers = f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        return self._send(method, target, headers, body)

    def stream(self, target: str, on_event: EventHandler) -> asyncio.Future[tuple[int, bytes]]:
        """GET an event stream; ``on_event(data)`` runs for each event carrying data.

        The future resolves when the response head arrives (body ``b""``) or fails.
        """
        self._on_event = on_event
        return self._send("GET", target, "Accept: text/event-stream\r\n", b"")

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # internals ----------------------------------------------------------------------------------
    def _send(
        self, method: str, target: str, headers: str, body: bytes
    ) -> asyncio.Future[tuple[int, bytes]]:
        if self._response is not None and not self._response.done():
            raise HttpError("one request at a time")
        self._response = asyncio.get_running_loop().create_future()
        head = f"{method} {target} HTTP/1.1\r\nHost: {self._host}\r\n{headers}\r\n"
        assert self._transport is not None
        self._transport.write(head.encode() + body)
        return self._response

    def _fail(self, reason: str) -> None:
        if self._response is not None and not self._response.done():
            self._response.set_exception(HttpError(reason))

    def _parse(self) -> None:
        buf = self._buf
        while buf:
            if not self._head_done:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise HttpError("response head too large")
                    return
                lines = bytes(buf[:end]).split(b"\r\n")
                del buf[: end + 4]
                self._status = int(lines[0].split(b" ", 2)[1])
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip().lower()
                self.will_close = headers.get(b"connection") == b"close"
                if b"content-length" in headers:
                    self._length = int(headers[b"content-length"])
                elif headers.get(b"transfer-encoding") == b"chunked":
                    self._length = None
                elif self._status in (204, 304):
                    self._length = 0
                else:
                    raise HttpError("neither Content-Length nor chunked")
                self._head_done = True
                self._body.clear()
                if self._on_event is not None:
                    self._resolve()  # the stream is open; its events follow
                elif self._length == 0:
                    self._finish()
                continue
            if self._length is not None:  # Content-Length
                take = min(len(buf), self._length - len(self._body))
                self._deliver(bytes(buf[:take]))
                del buf[:take]
                if len(self._body) >= self._length and self._on_event is None:
                    self._finish()
                continue
            end = buf.find(b"\r\n")  # chunked: wait for a whole chunk (they are small here)
            if end < 0:
                return
            size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
            if size > MAX_BODY:
                raise HttpError("chunk too large")
            if len(buf) < end + 2 + size + 2:
                return
            chunk = bytes(buf[end + 2 : end + 2 + size])
            del buf[: end + 2 + size + 2]  # no trailers: the last chunk is "0\r\n\r\n"
            if size == 0:
                self._finish()
            else:
                self._deliver(chunk)

    def _deliver(self, data: bytes) -> None:
        if self._on_event is None:
            self._body += data
            if len(self._body) > MAX_BODY:
                raise HttpError("body too large")
            return
        events = self._events
        events += data
        while True:
            # Events end with an empty line; the hub writes CRLF line ends, others may write LF.
            end, sep = events.find(b"\r\n\r\n"), 4
            lf = events.find(b"\n\n")
            if lf >= 0 and (end < 0 or lf < end):
                end, sep = lf, 2
            if end < 0:
                if len(events) > MAX_BODY:
                    raise HttpError("event too large")
                return
            lines = bytes(events[:end]).replace(b"\r\n", b"\n").split(b"\n")
            del events[: end + sep]
            data_lines = [line[5:].removeprefix(b" ") for line in lines if line[:5] == b"data:"]
            if data_lines:
                self._on_event(b"\n".join(data_lines))

    def _resolve(self) -> None:
        if self._response is not None and not self._response.done():
            self._response.set_result((self._status, b""))

    def _finish(self) -> None:
        self._head_done = False
        if self._response is not None and not self._response.done():
            self._response.set_result((self._status, bytes(self._body)))


async def connect(host: str, port: int, seconds: float = 10.0) -> HttpConnection:
    """Open a connection; raises OSError/TimeoutError."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(seconds):
        _, protocol = await loop.create_connection(lambda: HttpConnection(host, port), host, port)
    return protocol
