"""ASGI transports: thin drivers moving bytes between HTTP requests and a connection.

Each transport only moves bytes: incoming bytes go to the connection's ``feed`` (parsing
happens in the connection's own task, not in the socket loop); outgoing bytes come from the
connection's :class:`OutgoingBuffer`, drained in batches so one socket write carries every
message queued since the last one (Long Polling drains it in the request task; for WebSockets
and Server-Sent Events the connection itself is the writer, see
:attr:`TransportConnection.direct_writer`).

The transports know a connection only through :class:`TransportConnection`, the narrow
interface both hub connections and raw connection-handler connections provide.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Protocol, TypeAlias

import anyio

from signalr_core._logging import get_logger
from signalr_core.transports._eager import Suspended, start

__all__ = [
    "ASGIReceive",
    "ASGISend",
    "DirectWriter",
    "IncomingBuffer",
    "OutgoingBuffer",
    "PollSlot",
    "TransportConnection",
    "TransportName",
    "discard_body",
    "send_response",
    "wait_for_input_or_output",
    "write_queued",
]

ASGIMessage: TypeAlias = MutableMapping[str, Any]
ASGIReceive: TypeAlias = Callable[[], Awaitable[ASGIMessage]]
ASGISend: TypeAlias = Callable[[ASGIMessage], Awaitable[None]]

_log = get_logger("signalr_core.transports")


class TransportName(enum.StrEnum):
    """Transport names as ASP.NET spells them (``Context.transport``, negotiate)."""

    WEBSOCKETS = "WebSockets"
    SERVER_SENT_EVENTS = "ServerSentEvents"
    LONG_POLLING = "LongPolling"


class PollSlot:
    """The pending Long Polling poll of a connection; a newer poll cancels it."""

    __slots__ = ("scope", "superseded")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.superseded = False


class TransportConnection(Protocol):
    """What a transport needs of the connection it carries (and nothing more).

    Bytes in: :meth:`feed`; bytes out: :attr:`outgoing`; the end: :meth:`transport_closed`,
    :meth:`transport_lost`, :meth:`abort`. The attributes are the transport's bookkeeping on
    the connection (attached or not, its cancel scope, the pending poll), which the endpoint
    reads to tell whether a transport is active.

    Attributes:
        outgoing: Frames waiting for the transport.
        aborted: The connection was aborted (WebSockets then close with 1011).
        transport_attached: A streaming transport (WebSockets, SSE) is attached.
        transport_scope: The attached transport's cancel scope (cancelled to take it away).
        direct_writer: Set by a streaming transport (WebSockets, Server-Sent Events) while
            attached: sends frames on its response (:class:`DirectWriter`). The transport only
            reads; while this is set the connection is the response's writer (it drains
            :attr:`outgoing` itself), and when the connection ends it cancels
            :attr:`transport_scope` so the transport sends what is left and ends.
        transport_generation: Changes when a new transport takes the connection over.
        resuming: A new transport is taking the connection over (stateful reconnect).
        current_poll: The pending Long Polling request.
        poll_active: A Long Polling request is pending.
        last_poll: When the last poll ended (``time.monotonic()``).
    """

    outgoing: OutgoingBuffer
    aborted: bool
    transport_attached: bool
    transport_scope: anyio.CancelScope | None
    direct_writer: DirectWriter | None
    transport_generation: int
    resuming: bool
    current_poll: PollSlot | None
    poll_active: bool
    last_poll: float

    @property
    def binary(self) -> bool:
        """Outgoing frames are binary (WebSocket binary messages, octet-stream polls)."""
        ...

    @property
    def incoming_limit(self) -> int:
        """The largest received chunk the connection takes (bigger WebSocket messages: 1009)."""
        ...

    async def feed(self, data: bytes) -> bool:
        """Hand received bytes on; ``False`` when the connection is gone."""
        ...

    def transport_closed(self) -> None:
        """The client went away (socket closed, DELETE, SSE request ended)."""
        ...

    def transport_lost(self, *, graceful: bool, now: float) -> bool:
        """A WebSocket ended; ``True`` when the connection stays to await a reconnect."""
        ...

    def abort(self) -> None:
        """End the connection at once, dropping whatever is queued."""
        ...


_Waiter: TypeAlias = "asyncio.Future[None] | anyio.Event"


def _is_done(waiter: _Waiter) -> bool:
    return waiter.done() if isinstance(waiter, asyncio.Future) else waiter.is_set()


class _Waiters:
    """Tasks parked until a buffer changes: cheaper than a fresh ``anyio.Event`` per wait.

    On asyncio each wait is one bare future (``anyio.Event()`` detects the async library and
    wraps an ``asyncio.Event``, about 7x the cost, and buffers wait once per message); other
    backends get an ``anyio.Event``. Cancellation works as for any await (anyio cancels the
    task), and a cancelled waiter removes itself, so repeated timeouts do not pile up.

    One waiter is the common case, so it has a slot of its own; a list exists only while more
    wait. A waiter that finished while parked here (woken by another buffer it also waited
    on) may stay in ``one`` until the next park replaces it or the next wake skips it.
    """

    __slots__ = ("more", "one")

    def __init__(self) -> None:
        self.one: _Waiter | None = None
        self.more: list[_Waiter] | None = None

    @property
    def parked(self) -> bool:
        """Someone may be waiting."""
        return self.one is not None or self.more is not None

    def _park(self, waiter: _Waiter) -> None:
        one = self.one
        if one is None or _is_done(one):
            self.one = waiter
        elif self.more is None:
            self.more = [waiter]
        else:
            self.more.append(waiter)

    def _unpark(self, waiter: _Waiter) -> None:
        if self.one is waiter:
            self.one = None
        elif self.more is not None:
            with contextlib.suppress(ValueError):
                self.more.remove(waiter)
            if not self.more:
                self.more = None

    async def wait(self) -> None:
        await _wait_any(self)

    def wake(self) -> None:
        """Wake every parked task (they run at their next turn, not inside this call)."""
        one, more = self.one, self.more
        self.one = self.more = None
        if one is not None:
            _set(one)
        if more is not None:
            for waiter in more:
                _set(waiter)


def _set(waiter: _Waiter) -> None:
    if isinstance(waiter, asyncio.Future):
        if not waiter.done():
            waiter.set_result(None)
    else:
        waiter.set()


async def _wait_any(*sets: _Waiters) -> None:
    """Park one waiter in every set; return when any of them is woken."""
    waiter: _Waiter
    try:
        waiter = asyncio.get_running_loop().create_future()
    except RuntimeError:  # not asyncio
        waiter = anyio.Event()
    for waiters in sets:
        waiters._park(waiter)
    try:
        if isinstance(waiter, asyncio.Future):
            await waiter
        else:
            await waiter.wait()
    finally:
        for waiters in sets:
            waiters._unpark(waiter)


class OutgoingBuffer:
    """A bounded queue of encoded frames waiting for the transport.

    ``put`` never blocks: it returns ``False`` when the frame would exceed ``max_messages`` or
    ``max_bytes``, and the caller aborts the connection (a slow consumer). Producers that can
    wait (server-to-client streams) call :meth:`wait_writable` first, which waits while the
    buffer is more than half full.

    One task at a time is the buffer's writer: a Long Polling request waits in :meth:`wait`;
    with a WebSocket or an event stream, the connection's message loop waits for received
    data and queued frames at once (:func:`wait_for_input_or_output`), so an idle connection
    has no writer task of its own.
    """

    __slots__ = (
        "_chunks",
        "_closed",
        "_data_waiters",
        "_max_bytes",
        "_max_messages",
        "_nbytes",
        "_space_waiters",
    )

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        # A list, not a deque: frames are only appended and taken all at once, and an empty
        # list holds no storage (an empty deque allocates a 64-slot block per connection).
        self._chunks: list[bytes] = []
        self._nbytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._closed = False
        self._data_waiters = _Waiters()
        self._space_waiters = _Waiters()

    @property
    def closed(self) -> bool:
        """No more frames will be added."""
        return self._closed

    @property
    def pending_bytes(self) -> int:
        """Bytes waiting for the transport."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._chunks)

    def put(self, data: bytes, *, force: bool = False) -> bool:
        """Queue ``data``; ``False`` (nothing queued) when closed or over a limit."""
        if self._closed:
            return False
        if not force and (
            len(self._chunks) >= self._max_messages or self._nbytes + len(data) > self._max_bytes
        ):
            return False
        self._chunks.append(data)
        self._nbytes += len(data)
        if self._data_waiters.parked:
            self._data_waiters.wake()
        return True

    def unpark(self, waiter: asyncio.Future[None]) -> None:
        """Stop waking ``waiter`` (parked by :func:`wait_for_input_or_output`)."""
        self._data_waiters._unpark(waiter)

    def park(self, waiter: asyncio.Future[None]) -> None:
        """Wake ``waiter`` again on the next put, close or :meth:`notify`."""
        self._data_waiters._park(waiter)

    def notify(self) -> None:
        """Wake the writer without a frame (it has something else to look at)."""
        self._data_waiters.wake()

    def drain(self) -> list[bytes]:
        """Take every queued frame."""
        chunks = self._chunks
        if not chunks:
            return []
        self._chunks = []
        self._nbytes = 0
        if self._space_waiters.parked:
            self._space_waiters.wake()
        return chunks

    def close(self, *, discard: bool = False) -> None:
        """Stop accepting frames; the transport sends what is queued (unless ``discard``)."""
        self._closed = True
        if discard:
            self._chunks = []
            self._nbytes = 0
        self._data_waiters.wake()
        self._space_waiters.wake()

    async def wait(self) -> None:
        """Wait until a frame is queued or the buffer is closed."""
        while not (self._chunks or self._closed):
            await self._data_waiters.wait()

    async def wait_notified(self) -> None:
        """Wait for the next put, close or :meth:`notify` (even if frames are queued)."""
        await self._data_waiters.wait()

    async def wait_writable(self) -> None:
        """Wait while the buffer is more than half full (backpressure for streams)."""
        while not self._closed and (
            self._nbytes * 2 > self._max_bytes or len(self._chunks) * 2 > self._max_messages
        ):
            await self._space_waiters.wait()


class DirectWriter:
    """A streaming response (a WebSocket, an event stream) as the connection writes to it.

    It is the connection's ``direct_writer`` while the transport is attached; the transport's
    request task only reads meanwhile. A write that fails (the client went away) marks it
    ``broken`` and cancels ``scope``, the request task's, so reading stops too. Subclasses say
    how frames go out (:meth:`send_frames`).

    :meth:`write_now` writes in the caller's task as far as that goes without waiting (on
    asyncio the transport takes the bytes at once unless the client reads too slowly; see
    :mod:`signalr_core.transports._eager`); what has to wait is left :attr:`pending`, and the
    connection's writer finishes it first (:meth:`send_queued`), so a slow client never holds a
    task that only produced a frame for it. Every step of such a write runs in one context, a
    copy of the request task's.
    """

    __slots__ = (
        "_context",
        "_finishing",
        "_pending",
        "_writing",
        "broken",
        "connection",
        "scope",
        "send",
    )

    def __init__(
        self, connection: TransportConnection, send: ASGISend, scope: anyio.CancelScope
    ) -> None:
        self.connection = connection
        self.send = send
        self.scope = scope
        self.broken = False
        self._context = contextvars.copy_context()
        # A write left half-done by write_now, or the error its first step raised.
        self._pending: Suspended | Exception | None = None
        self._writing = False  # write_now's first step runs (it may make more frames)
        self._finishing: Suspended | None = None  # the pending write the writer finishes now

    def send_frames(self, frames: list[bytes]) -> Awaitable[None]:
        """Send ``frames`` as one transport write."""
        raise NotImplementedError

    @property
    def pending(self) -> bool:
        """A write is half-done (:meth:`write_now` had to leave it): :meth:`send_queued`
        finishes it before anything else."""
        return self._pending is not None

    @property
    def can_write_now(self) -> bool:
        """:meth:`write_now` may be called: nothing is :attr:`pending` or being written (a
        frame made while a write's first step runs is queued behind it), and the client is
        not known to be gone."""
        return self._pending is None and not self._writing and not self.broken

    def write_now(self, frames: list[bytes]) -> bool:
        """Write ``frames`` in the caller's task (asyncio only; :attr:`can_write_now`) as far
        as that goes without waiting; ``False`` when the rest is left :attr:`pending` and the
        connection's writer must be woken to finish it. A client that went away marks the
        writer :attr:`broken`; other errors of the transport are left pending for the writer
        to raise (a first step, which never suspends, cannot see the caller's own
        cancellation)."""
        assert self._pending is None
        assert not self._writing
        self._writing = True
        try:
            self._pending = start(self._context, self.send_frames, frames)
        except OSError:
            self._broke()
        except Exception as exc:  # the writer raises it, as it would have
            self._pending = exc
        except asyncio.CancelledError as exc:  # the server's: a failed write, not a cancel
            self._pending = RuntimeError("the ASGI server cancelled a send")
            self._pending.__cause__ = exc
        finally:
            self._writing = False
        return self._pending is None

    async def send_queued(self) -> None:
        """Finish what is :attr:`pending`, then send what the connection queued. The buffer is
        drained only once nothing is half-done: cancelled meanwhile, its frames stay queued
        (for :meth:`send_rest`, the Close message among them)."""
        try:
            if self._pending is not None:
                await self._finish()
            if frames := self.connection.outgoing.drain():
                await self.send_frames(frames)
        except OSError:
            self._broke()

    def _broke(self) -> None:
        self.broken = True
        self.scope.cancel()  # the client went away: stop reading too

    async def _finish(self) -> None:
        pending, self._pending = self._pending, None
        if isinstance(pending, Exception):
            raise pending
        if pending is not None:
            self._finishing = pending
            try:
                await pending.finish()
            finally:
                self._finishing = None

    def discard(self) -> None:
        """The transport ended: cancel a :attr:`pending` write, or the one the connection's
        writer is finishing (waiting for a client that stopped reading, it would never end;
        the writer then sees the client gone)."""
        pending, self._pending = self._pending, None
        if isinstance(pending, Suspended):
            pending.cancel()
        if self._finishing is not None:
            self._finishing.cancel()

    async def send_rest(self, stall_timeout: float) -> bool:
        """The connection ended (its writer is gone): send what it queues until its buffer is
        closed; ``False`` when nothing more may be sent: the connection was aborted (a slow
        consumer, a client timeout: its client may read no more), the client went away, or a
        write stalled (then aborted) or failed."""
        connection, outgoing = self.connection, self.connection.outgoing
        if connection.aborted or self.broken:
            self.discard()
            return False
        try:
            # The connection may still be finishing (on_disconnected, bounded there): what it
            # queues meanwhile goes out, its Close message last.
            while True:
                if len(outgoing) or self._pending is not None:
                    with anyio.move_on_after(stall_timeout) as stalled:
                        await self.send_queued()
                    if stalled.cancelled_caught:
                        connection.abort()  # a client that does not read: stop waiting
                        return False
                    if self.broken:
                        return False
                elif outgoing.closed:
                    return not connection.aborted  # (aborted meanwhile: its buffer closed)
                else:
                    await outgoing.wait_notified()  # the next put, or close()
        except Exception:  # the ASGI server refused a write: nothing more goes out
            _log.exception("transport_write_failed")
            return False


class Writes(Protocol):
    """A connection that writes its own frames while a streaming transport is attached."""

    outgoing: OutgoingBuffer
    direct_writer: DirectWriter | None


async def write_queued(connection: Writes, stop: list[bool] | None = None) -> None:
    """Send what ``connection`` queues through its ``direct_writer`` (once one is attached),
    as it comes, until ``stop[0]`` is set (then :meth:`OutgoingBuffer.notify`) or cancelled.

    The writer task beside a connection that cannot write itself: a raw connection's handler,
    a hub connection's message loop while it waits for a worker.
    """
    outgoing = connection.outgoing
    while True:
        writer = connection.direct_writer
        if writer is not None and (len(outgoing) or writer.pending):
            await writer.send_queued()
        elif stop is not None and stop[0]:
            return
        else:
            await outgoing.wait_notified()  # the next put, close, or a transport attaching


def abort_slow_consumer(
    outgoing: OutgoingBuffer,
    transport: object,
    log: Any,
    observer: Callable[[str], None] | None,
    abort: Callable[[], None],
) -> None:
    """``outgoing`` refused a frame: the client does not read. Log it, tell the observer
    (``HubOptions.on_slow_consumer``) the transport's name, and abort the connection."""
    log.warning(
        "slow_consumer_aborted",
        pending_bytes=outgoing.pending_bytes,
        pending_messages=len(outgoing),
    )
    if observer is not None:
        observer(str(transport))
    abort()


class IncomingBuffer:
    """A bounded queue of received byte chunks, from the transport to the message loop.

    Cheaper than a memory object stream on the hot path: no checkpoint before an available
    chunk is returned, and a parked waiter only when a side really has to wait. The transport
    waits in :meth:`put` while the chunk would take the queued bytes over ``max_bytes``
    (backpressure); a chunk is always accepted into an empty queue, so the transports bound
    one chunk's size themselves (the POST body limit; WebSocket messages close with 1009).
    """

    __slots__ = (
        "_bytes",
        "_chunks",
        "_closed",
        "_data_waiters",
        "_ended",
        "_head",
        "_space_waiters",
        "max_bytes",
    )

    def __init__(self, max_bytes: int) -> None:
        # A list read from ``_head`` (compacted as it goes), not a deque: an empty list holds
        # no storage, and most connections are idle with nothing queued.
        self._chunks: list[bytes] = []
        self._head = 0
        self._bytes = 0
        self.max_bytes = max_bytes
        self._ended = False  # no more chunks will come; queued ones are still read
        self._closed = False  # the reader is gone; queued chunks are dropped
        self._data_waiters = _Waiters()
        self._space_waiters = _Waiters()

    async def put(self, data: bytes) -> bool:
        """Queue ``data``, waiting while full; ``False`` when the reader is gone or input ended."""
        while (
            self._bytes
            and self._bytes + len(data) > self.max_bytes
            and not (self._closed or self._ended)
        ):
            await self._space_waiters.wait()
        if self._closed or self._ended:
            return False
        self._chunks.append(data)
        self._bytes += len(data)
        if self._data_waiters.parked:
            self._data_waiters.wake()
        return True

    @property
    def ready(self) -> bool:
        """:meth:`get_nowait` has an answer: a chunk is queued, or input ended."""
        return self._head < len(self._chunks) or self._ended or self._closed

    async def get(self) -> bytes | None:
        """The next chunk; ``None`` once input ended and everything was read (or closed)."""
        while not self.ready:
            await self._data_waiters.wait()
        return self.get_nowait()

    def get_nowait(self) -> bytes | None:
        """The next chunk, ``None`` when nothing is queued (see :attr:`ready`)."""
        chunks, head = self._chunks, self._head
        if head >= len(chunks):
            return None
        chunk = chunks[head]
        head += 1
        if head == len(chunks):
            chunks.clear()  # frees the list's storage
            head = 0
        elif head >= 64 and head * 2 >= len(chunks):
            del chunks[:head]  # amortized O(1) per chunk
            head = 0
        else:
            chunks[head - 1] = b""  # do not keep the bytes alive until compaction
        self._head = head
        self._bytes -= len(chunk)
        if self._space_waiters.parked:
            self._space_waiters.wake()
        return chunk

    def end(self) -> None:
        """No more input (the transport went away); the reader still gets what is queued."""
        self._ended = True
        self._wake()

    def close(self) -> None:
        """The reader is gone: drop what is queued and refuse further chunks."""
        self._closed = True
        self._chunks = []
        self._head = 0
        self._bytes = 0
        self._wake()

    def _wake(self) -> None:
        self._data_waiters.wake()
        self._space_waiters.wake()


def wait_for_input_or_output(
    incoming: IncomingBuffer, outgoing: OutgoingBuffer | None, *, can_send: bool = True
) -> Awaitable[None]:
    """Wait until ``incoming`` is :attr:`~IncomingBuffer.ready` or ``outgoing`` changes.

    The WebSocket message loop's one wait: it reads and writes, with no writer task. With
    ``can_send``, queued frames end the wait at once; without (no socket attached yet), only
    the next put, close or :meth:`~OutgoingBuffer.notify` does. ``outgoing=None`` waits for
    input only.

    On asyncio this returns the parked future itself (no coroutine frame, no callback is kept
    while an idle connection waits). Meant for one waiting task per pair of buffers.
    """
    sets = (
        (incoming._data_waiters,)
        if outgoing is None
        else (incoming._data_waiters, outgoing._data_waiters)
    )
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio
        return _wait_unless_ready(incoming, outgoing, can_send, sets)
    future: asyncio.Future[None] = loop.create_future()
    if incoming.ready or (can_send and outgoing is not None and len(outgoing)):
        future.set_result(None)
        return future
    for waiters in sets:
        # No cleanup when it is done: in the other buffer it only takes the slot that the
        # next park of this one loop reuses (see _Waiters).
        waiters._park(future)
    return future


async def _wait_unless_ready(
    incoming: IncomingBuffer,
    outgoing: OutgoingBuffer | None,
    can_send: bool,
    sets: tuple[_Waiters, ...],
) -> None:
    if incoming.ready or (can_send and outgoing is not None and len(outgoing)):
        return
    await _wait_any(*sets)


async def send_response(
    send: ASGISend,
    status: int,
    body: bytes = b"",
    *,
    content_type: str | None = "text/plain",
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Send a complete HTTP response."""
    raw: list[tuple[bytes, bytes]] = []
    if content_type is not None:
        raw.append((b"content-type", content_type.encode("latin-1")))
    raw.append((b"content-length", str(len(body)).encode("ascii")))
    raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def wait_for_disconnect(receive: ASGIReceive) -> None:
    """Read (and drop) request messages until the client disconnects."""
    while True:
        message = await receive()
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            return


async def read_body(receive: ASGIReceive, limit: int) -> bytes | None:
    """Read the request body; ``None`` if it exceeds ``limit`` or the client disconnected."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def discard_body(receive: ASGIReceive, limit: int) -> bool:
    """Read and drop the rest of a request body; ``False`` past ``limit`` bytes or on disconnect.

    An HTTP/1.1 server can only reuse a keep-alive connection once the request was read to its
    end: answering early (an error before the body arrived) makes it close the connection, and
    a client that already sent its next request on it sees the request dropped unanswered.
    """
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        size += len(message.get("body", b""))
        if size > limit:
            return False
        if not message.get("more_body", False):
            return True
