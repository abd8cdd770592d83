"""Inline work (signalr_core._inline, DirectWriter.write_now, transports._eager): a frame for an
idle connection is written in the producer's task; a write that has to wait is finished by the
connection's own task, in order, in one context, and never holds the producer."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, MutableMapping
from typing import Any, cast

import anyio
import pytest

from signalr_core import Hub, HubEndpoint, HubOptions, hub_method
from signalr_core._inline import Inline
from signalr_core.connection import HubConnectionState
from signalr_core.messages import TransferFormat
from signalr_core.protocols.json import JsonHubProtocol
from signalr_core.transports import DirectWriter, OutgoingBuffer, TransportConnection
from tests.signalr_core._hub_server import json_ws, running_server
from tests.signalr_core._idle import HANDSHAKE, scope

pytestmark = pytest.mark.timeout(30)


class _Host:
    """The connection as the writer and the inline work see it."""

    def __init__(self) -> None:
        self.outgoing = OutgoingBuffer(10, 1 << 20)
        self.aborted = False
        self.direct_writer: DirectWriter | None = None


class _Writer(DirectWriter):
    """Records each write and the task that began and ended it. A frame ``b"slow"`` waits for
    ``gate``, ``b"fail"`` raises at once, ``b"gone"`` as a socket that went away,
    ``b"cancelled"`` awaits a cancelled future of the server's."""

    def __init__(self, host: _Host) -> None:
        super().__init__(cast("TransportConnection", host), self._unused, anyio.CancelScope())
        host.direct_writer = self
        self.gate = asyncio.Event()
        self.began: list[tuple[bytes, asyncio.Task[Any] | None]] = []
        self.ended: list[tuple[bytes, asyncio.Task[Any] | None]] = []
        self.cancelled: list[bytes] = []

    async def _unused(self, message: Any) -> None:
        raise AssertionError("send_frames is the writer's only way out")

    async def send_frames(self, frames: list[bytes]) -> None:
        data = b"".join(frames)
        self.began.append((data, asyncio.current_task()))
        if data == b"fail":
            raise RuntimeError("the server refused the frame")
        if data == b"gone":
            raise ConnectionResetError
        if data == b"cancelled":
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future
        try:
            if data == b"slow":
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(data)
            raise
        self.ended.append((data, asyncio.current_task()))


@pytest.fixture
async def parked() -> AsyncIterator[asyncio.Future[None]]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    yield future
    future.cancel()


def _inline(parked: asyncio.Future[None] | None = None) -> tuple[Inline, _Host, _Writer]:
    host = _Host()
    writer = _Writer(host)
    state = HubConnectionState({"json": JsonHubProtocol()}, transfer_formats=TransferFormat.TEXT)
    inline = Inline(host, state)
    if parked is not None:  # as the loop parks: woken by a put, and work may be done inline
        host.outgoing.park(parked)
        inline.park(parked)
    return inline, host, writer


async def test_a_frame_for_an_idle_loop_is_written_in_the_producers_task(
    parked: asyncio.Future[None],
) -> None:
    inline, host, writer = _inline(parked)
    assert inline.write_now(b"hello")
    me = asyncio.current_task()
    assert writer.began == writer.ended == [(b"hello", me)]
    assert not parked.done()  # the loop was not woken
    assert not writer.pending
    assert len(host.outgoing) == 0


async def test_nothing_is_written_inline_unless_the_loop_waits_idle_with_nothing_queued(
    parked: asyncio.Future[None],
) -> None:
    inline, host, writer = _inline()
    assert not inline.write_now(b"a")  # the loop is not parked: it runs
    inline.park(parked)
    host.outgoing.put(b"queued")
    assert not inline.write_now(b"b")  # it would overtake a queued frame
    host.outgoing.drain()
    inline.unpark()
    assert not inline.write_now(b"c")
    host.direct_writer = None
    inline.park(parked)
    assert not inline.write_now(b"d")  # no transport attached
    assert writer.began == []


async def test_a_write_that_has_to_wait_is_finished_by_the_loop_before_later_frames(
    parked: asyncio.Future[None],
) -> None:
    inline, host, writer = _inline(parked)
    assert inline.write_now(b"slow")  # taken: the producer goes on at once
    assert parked.done()  # the loop is woken to finish it
    assert writer.pending
    assert not inline.write_now(b"next")  # so this one is queued behind it
    host.outgoing.put(b"next")
    finished = asyncio.Event()

    async def loop() -> None:
        await writer.send_queued()
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        await anyio.wait_all_tasks_blocked()
        assert not finished.is_set()  # it waits for the slow client, not the producer
        writer.gate.set()
    assert [data for data, _ in writer.ended] == [b"slow", b"next"]
    producer = asyncio.current_task()
    assert writer.began[0][1] is producer
    assert writer.ended[0][1] is not producer  # finished by the loop's task
    assert not writer.pending


async def test_frames_behind_a_pending_write_stay_queued_when_the_loop_is_cancelled(
    parked: asyncio.Future[None],
) -> None:
    # The connection closes while its loop finishes a half-done write: what was queued behind
    # it (the Close message among it) must still be in the buffer for send_rest.
    inline, host, writer = _inline(parked)
    assert inline.write_now(b"slow")
    host.outgoing.put(b"close")
    with anyio.move_on_after(0.05):
        await writer.send_queued()
    assert writer.cancelled == [b"slow"]  # the write saw the cancellation, as in a task
    assert host.outgoing.drain() == [b"close"]


async def test_a_frame_made_while_a_write_runs_is_queued_behind_it(
    parked: asyncio.Future[None],
) -> None:
    # A send wrapper (or a log handler it fires) that makes another frame for the same
    # connection, synchronously, inside the write: it must not be written inside the write
    # nor lost, but queued behind it, with the loop woken to send it.
    inline, host, writer = _inline(parked)

    class Nesting(_Writer):
        async def send_frames(self, frames: list[bytes]) -> None:
            if frames == [b"outer"]:
                assert not inline.write_now(b"nested")  # as the connection's _enqueue does:
                host.outgoing.put(b"nested")  # not inline, so queued
            await super().send_frames(frames)

    nesting = Nesting(host)
    assert inline.write_now(b"outer")
    assert [data for data, _ in nesting.ended] == [b"outer"]
    assert host.outgoing.drain() == [b"nested"]
    assert parked.done()  # the loop sends it
    assert writer.began == []


async def test_a_first_step_that_fails_is_raised_by_the_loop(
    parked: asyncio.Future[None],
) -> None:
    inline, _, writer = _inline(parked)
    assert inline.write_now(b"fail")  # the producer does not see the error
    assert parked.done()
    with pytest.raises(RuntimeError, match="refused"):
        await writer.send_queued()
    assert not writer.pending


async def test_a_cancelled_error_of_the_servers_does_not_reach_the_producer(
    parked: asyncio.Future[None],
) -> None:
    inline, _, writer = _inline(parked)
    assert inline.write_now(b"cancelled")  # a broadcast would go on with the next connection
    assert writer.pending
    with pytest.raises(RuntimeError, match="cancelled a send"):
        await writer.send_queued()  # the connection fails (Close with an error), not cancelled


async def test_a_client_that_went_away_breaks_the_writer(parked: asyncio.Future[None]) -> None:
    inline, _, writer = _inline(parked)
    assert inline.write_now(b"gone")
    assert writer.broken
    assert writer.scope.cancel_called  # the transport stops reading too
    assert not writer.pending
    assert not inline.write_now(b"more")  # nothing more is tried on it inline


async def test_a_discarded_write_is_cancelled_as_a_task_would_be() -> None:
    inline, _, writer = _inline(asyncio.get_running_loop().create_future())
    assert inline.write_now(b"slow")
    writer.discard()  # the transport ended before the loop got to it
    assert not writer.pending
    assert writer.cancelled == [b"slow"]  # its except / finally blocks ran
    assert writer.ended == []


async def test_a_write_the_loop_is_finishing_is_dropped_when_the_transport_ends(
    parked: asyncio.Future[None],
) -> None:
    # A client that stopped reading: the write would wait for good. The server ends the
    # transport (uvicorn's websocket.disconnect on shutdown); the loop must not stay in it.
    inline, host, writer = _inline(parked)
    assert inline.write_now(b"slow")
    host.outgoing.put(b"later")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.send_queued)  # the connection's loop finishes the write
            await anyio.wait_all_tasks_blocked()
            writer.discard()  # from the transport's task
    assert writer.cancelled == [b"slow"]  # its except / finally blocks ran
    assert writer.broken  # the loop takes the client for gone
    assert writer.scope.cancel_called
    assert not writer.pending
    assert host.outgoing.drain() == [b"later"]  # nothing more was written on it


async def test_a_discarded_write_hands_an_asyncio_lock_on() -> None:
    # hypercorn's sends take a lock; a write that was handed it while half-done must pass it
    # on when it is dropped, or the next sender waits forever.
    lock = asyncio.Lock()

    class Locking(_Writer):
        async def send_frames(self, frames: list[bytes]) -> None:
            async with lock:
                await asyncio.sleep(0)

    host = _Host()
    writer = Locking(host)
    await lock.acquire()  # another sender holds it
    assert not writer.write_now([b"x"])  # so the write waits for it
    third = asyncio.ensure_future(lock.acquire())
    await anyio.wait_all_tasks_blocked()  # the third sender waits behind it
    lock.release()  # handed to the pending write
    writer.discard()
    with anyio.fail_after(1):
        await third


_span: contextvars.ContextVar[str] = contextvars.ContextVar("span", default="none")


async def test_every_step_of_a_write_runs_in_one_context() -> None:
    # A send wrapper that sets a context variable around the inner send (as tracing
    # middleware does) must find its token's context again after a suspension in another task.
    resets: list[str] = []

    class Traced(_Writer):
        async def send_frames(self, frames: list[bytes]) -> None:
            token = _span.set("send")
            try:
                await self.gate.wait()
            finally:
                resets.append(_span.get())
                _span.reset(token)

    host = _Host()
    writer = Traced(host)
    assert not writer.write_now([b"x"])
    writer.gate.set()
    await writer.send_queued()  # finished in this task, in the writer's context
    assert resets == ["send"]
    assert _span.get() == "none"  # nothing leaked into the finishing task's context


class _BroadcastHub(Hub):
    @hub_method("ToAll")
    async def to_all(self, text: str) -> None:
        await self.clients.all.send("Said", text)


@pytest.mark.parametrize("inline_io", [True, False])
async def test_broadcasts_reach_every_idle_connection_in_order(inline_io: bool) -> None:
    endpoint = HubEndpoint(_BroadcastHub, options=HubOptions(inline_io=inline_io))
    async with (
        running_server(endpoint) as base,
        json_ws(base) as one,
        json_ws(base) as two,
        json_ws(base) as three,
    ):
        for n in range(20):
            await one.send({"type": 1, "target": "ToAll", "arguments": [str(n)]})
        with anyio.fail_after(5):
            for client in (one, two, three):
                said = [(await client.receive())["arguments"][0] for _ in range(20)]
                assert said == [str(n) for n in range(20)]


class _SlowSocket:
    """An in-process WebSocket whose client stops reading at the frame with ``"A"`` (its
    send takes the bytes, as hypercorn's does, then waits for ``gate``)."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.inbox.put_nowait({"type": "websocket.connect"})
        self.inbox.put_nowait({"type": "websocket.receive", "text": HANDSHAKE})
        self.sent: list[str] = []
        self.ready = asyncio.Event()
        self.gate = asyncio.Event()

    async def receive(self) -> MutableMapping[str, Any]:
        return await self.inbox.get()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "websocket.send":
            text = message["text"]
            self.sent.append(text)
            if text.startswith("{}"):
                self.ready.set()
            if '"A"' in text:
                await self.gate.wait()
        elif message["type"] == "websocket.close":
            self.sent.append("CLOSE")
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})


class _EndingHub(_BroadcastHub):
    ended: asyncio.Event  # set by each test: the connection's run has ended

    async def on_disconnected(self, exception: Exception | None) -> None:
        type(self).ended.set()


@pytest.mark.parametrize("inline_io", [True, False])
async def test_closing_during_a_pending_write_still_sends_what_was_queued_and_close(
    inline_io: bool,
) -> None:
    _EndingHub.ended = asyncio.Event()
    endpoint = HubEndpoint(_EndingHub, options=HubOptions(inline_io=inline_io))
    socket = _SlowSocket()
    app: Any = endpoint
    async with endpoint.lifespan(), anyio.create_task_group() as tg:
        tg.start_soon(app, scope(), socket.receive, socket.send)
        with anyio.fail_after(5):
            await socket.ready.wait()
        await endpoint.hub_context.clients.all.send("A", 1)  # the client stalls on it
        await endpoint.hub_context.clients.all.send("B", 2)  # queued behind it
        await endpoint.hub_context.close_connections(where=lambda _connection: True)
        with anyio.fail_after(5):
            await _EndingHub.ended.wait()  # the close took the loop away while it waited
        socket.gate.set()
    frames = "".join(text for text in socket.sent if text != "CLOSE")
    assert frames.index('"A"') < frames.index('"B"') < frames.index('"type":7')
    assert socket.sent[-1] == "CLOSE"
