"""Inline work (signalr_core._inline, DirectWriter.write_now): a frame for an idle connection is
written in the producer's task; a write that has to wait is finished by the connection's own
task, in order, and never holds the producer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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

pytestmark = pytest.mark.timeout(30)


class _Writer(DirectWriter):
    """Records each write and the task that began and ended it; a frame ``b"slow"`` waits
    for ``gate``, ``b"fail"`` raises at once, ``b"gone"`` as a socket that went away."""

    def __init__(self) -> None:
        super().__init__(cast("TransportConnection", None), self._unused, anyio.CancelScope())
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
        try:
            if data == b"slow":
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(data)
            raise
        self.ended.append((data, asyncio.current_task()))


class _Host:
    def __init__(self, writer: _Writer | None) -> None:
        self.outgoing = OutgoingBuffer(10, 1 << 20)
        self.direct_writer: DirectWriter | None = writer


@pytest.fixture
async def parked() -> AsyncIterator[asyncio.Future[None]]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    yield future
    future.cancel()


def _inline(writer: _Writer | None) -> tuple[Inline, _Host]:
    host = _Host(writer)
    state = HubConnectionState({"json": JsonHubProtocol()}, transfer_formats=TransferFormat.TEXT)
    return Inline(host, state), host


async def test_a_frame_for_an_idle_loop_is_written_in_the_producers_task(
    parked: asyncio.Future[None],
) -> None:
    writer = _Writer()
    inline, host = _inline(writer)
    inline.park(parked)
    assert inline.write_now(b"hello")
    me = asyncio.current_task()
    assert writer.began == writer.ended == [(b"hello", me)]
    assert not parked.done()  # the loop was not woken
    assert not writer.pending
    assert len(host.outgoing) == 0


async def test_nothing_is_written_inline_unless_the_loop_waits_idle_with_nothing_queued(
    parked: asyncio.Future[None],
) -> None:
    writer = _Writer()
    inline, host = _inline(writer)
    assert not inline.write_now(b"a")  # the loop is not parked: it runs
    inline.park(parked)
    host.outgoing.put(b"queued")
    assert not inline.write_now(b"b")  # it would overtake a queued frame
    host.outgoing.drain()
    inline.unpark()
    assert not inline.write_now(b"c")
    assert writer.began == []
    inline_without, _ = _inline(None)
    inline_without.park(parked)
    assert not inline_without.write_now(b"d")  # no transport attached


async def test_a_write_that_has_to_wait_is_finished_by_the_loop_before_later_frames(
    parked: asyncio.Future[None],
) -> None:
    writer = _Writer()
    inline, host = _inline(writer)
    inline.park(parked)
    assert inline.write_now(b"slow")  # taken: the producer goes on at once
    assert parked.done()  # the loop is woken to finish it
    assert writer.pending
    assert not inline.write_now(b"next")  # so this one is queued behind it
    host.outgoing.put(b"next")

    finished = asyncio.Event()

    async def loop() -> None:
        await writer.write(host.outgoing.drain())
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        await asyncio.sleep(0)
        assert not finished.is_set()  # it waits for the slow client, not the producer
        writer.gate.set()
    assert [data for data, _ in writer.ended] == [b"slow", b"next"]
    producer = asyncio.current_task()
    assert writer.began[0][1] is producer
    assert writer.ended[0][1] is not producer  # finished by the loop's task
    assert not writer.pending


async def test_a_first_step_that_fails_is_raised_by_the_loop(
    parked: asyncio.Future[None],
) -> None:
    writer = _Writer()
    inline, _ = _inline(writer)
    inline.park(parked)
    assert inline.write_now(b"fail")  # the producer does not see the error
    assert parked.done()
    with pytest.raises(RuntimeError, match="refused"):
        await writer.write([])
    assert not writer.pending


async def test_a_client_that_went_away_breaks_the_writer(parked: asyncio.Future[None]) -> None:
    writer = _Writer()
    inline, _ = _inline(writer)
    inline.park(parked)
    assert inline.write_now(b"gone")
    assert writer.broken
    assert writer.scope.cancel_called  # the transport stops reading too
    assert not writer.pending
    assert not inline.write_now(b"more")  # nothing more is tried on it inline


async def test_a_pending_write_is_cancelled_with_the_loop_and_discarded_with_the_transport(
    parked: asyncio.Future[None],
) -> None:
    writer = _Writer()
    inline, _ = _inline(writer)
    inline.park(parked)
    assert inline.write_now(b"slow")
    with anyio.move_on_after(0.05):
        await writer.write([])  # the loop finishing it is cancelled (the connection closes)
    assert writer.cancelled == [b"slow"]  # the write saw the cancellation, as in a task
    assert not writer.pending

    other = _Writer()
    inline, _ = _inline(other)
    inline.park(asyncio.get_running_loop().create_future())
    assert inline.write_now(b"slow")
    other.discard()  # the transport ended before the loop got to it
    assert not other.pending
    assert other.ended == []


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
