"""A minimal WebSocket client (RFC 6455) on a raw asyncio protocol, for load generation.

The load client must cost as little as possible and must be the same for every server under
test, so it is written directly on ``asyncio.Protocol``: one HTTP/1.1 upgrade, then frame parsing
in ``data_received`` with no per-frame task switch. Only what the benchmark needs is supported:
text/binary/continuation frames, ping (answered with pong) and close. Frames from the client are
masked as the RFC requires; frames from the server must not be.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

MAX_FRAME = 1 << 20  # security limit: the benchmark never receives more than this per message

MessageHandler = Callable[[int, bytes], None]


class WebSocketError(Exception):
    """The server broke the WebSocket protocol or refused the upgrade."""


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return payload
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One masked, final client frame."""
    n = len(payload)
    head = bytes((0x80 | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 1 << 16:
        head += bytes((0x80 | 126,)) + struct.pack("!H", n)
    else:
        head += bytes((0x80 | 127,)) + struct.pack("!Q", n)
    key = os.urandom(4)
    return head + key + _mask(payload, key)


class WebSocketClient(asyncio.Protocol):
    """One client connection. ``on_message(opcode, payload)`` runs for each complete message."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._upgraded = False
        self._fragments: list[bytes] = []
        self._fragment_op = 0
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.on_message: MessageHandler = lambda _op, _payload: None

    # asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(WebSocketError("connection lost before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 16384:
                    self._fail("upgrade response too large")
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status + b" ":
                self._fail(f"upgrade refused: {status!r}")
                return
            self._upgraded = True
            self.opened.set_result(None)
        self._parse_frames()

    # API ----------------------------------------------------------------------------------------
    def send(self, opcode: int, payload: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode_frame(opcode, payload))

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode_frame(OP_CLOSE, struct.pack("!H", 1000)))
            self._transport.close()

    # internals ----------------------------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(WebSocketError(reason))
        if self._transport is not None:
            self._transport.abort()

    def _parse_frames(self) -> None:
        buf = self._buf
        while True:
            n = len(buf)
            if n < 2:
                return
            b0, b1 = buf[0], buf[1]
            if b1 & 0x80:
                self._fail("masked frame from the server")
                return
            length = b1 & 0x7F
            offset = 2
            if length == 126:
                if n < 4:
                    return
                length = (buf[2] << 8) | buf[3]
                offset = 4
            elif length == 127:
                if n < 10:
                    return
                length = struct.unpack_from("!Q", buf, 2)[0]
                offset = 10
            if length > MAX_FRAME:
                self._fail("frame too large")
                return
            if n < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            opcode = b0 & 0x0F
            if opcode == OP_PING:
                self.send(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                if self._transport is not None:
                    self._transport.close()
                return
            elif opcode == OP_PONG:
                pass
            elif b0 & 0x80:
                if opcode == OP_CONT:
                    self._fragments.append(payload)
                    opcode, payload = self._fragment_op, b"".join(self._fragments)
                    self._fragments = []
                self.on_message(opcode, payload)
            else:
                if opcode != OP_CONT:
                    self._fragment_op = opcode
                self._fragments.append(payload)


async def connect(host: str, port: int, path: str, seconds: float = 10.0) -> WebSocketClient:
    """Open a WebSocket connection; raises WebSocketError/OSError/TimeoutError."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(seconds):
        _, protocol = await loop.create_connection(
            lambda: WebSocketClient(host, port, path), host, port
        )
        await protocol.opened
    return protocol
