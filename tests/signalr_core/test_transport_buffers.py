"""The bounded buffers between transports and connections."""

from __future__ import annotations

import anyio
import pytest

from signalr_core.transports import IncomingBuffer, OutgoingBuffer, wait_for_input_or_output

pytestmark = pytest.mark.timeout(10)


async def test_incoming_buffer_order_end_and_backpressure() -> None:
    buffer = IncomingBuffer(2)
    assert await buffer.put(b"a")
    assert await buffer.put(b"b")
    blocked_put_done = anyio.Event()
    results: list[bool] = []

    async def third() -> None:
        results.append(await buffer.put(b"c"))
        blocked_put_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(third)
        await anyio.wait_all_tasks_blocked()
        assert not blocked_put_done.is_set()  # full: the writer waits
        assert await buffer.get() == b"a"
        await blocked_put_done.wait()
    assert results == [True]
    buffer.end()
    assert not await buffer.put(b"late")  # input ended
    assert [await buffer.get(), await buffer.get(), await buffer.get()] == [b"b", b"c", None]


async def test_incoming_buffer_close_drops_and_wakes_both_sides() -> None:
    buffer = IncomingBuffer(1)
    assert await buffer.put(b"x")
    outcomes: list[object] = []

    async def writer() -> None:
        outcomes.append(await buffer.put(b"y"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        await anyio.wait_all_tasks_blocked()
        buffer.close()
    assert outcomes == [False]
    assert await buffer.get() is None


async def test_incoming_buffer_reader_waits_for_data() -> None:
    buffer = IncomingBuffer(4)
    got: list[bytes | None] = []

    async def reader() -> None:
        got.append(await buffer.get())
        got.append(await buffer.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        assert await buffer.put(b"1")
        await anyio.wait_all_tasks_blocked()
        buffer.end()
    assert got == [b"1", None]


async def test_incoming_buffer_is_bounded_in_bytes() -> None:
    buffer = IncomingBuffer(10)
    assert await buffer.put(b"12345678")
    with anyio.move_on_after(0.05) as waited:
        await buffer.put(b"9abc")  # 12 bytes would be queued: the writer waits
    assert waited.cancel_called
    assert await buffer.get() == b"12345678"
    assert await buffer.put(b"x" * 20)  # an empty buffer takes any chunk (transports cap it)
    assert await buffer.get() == b"x" * 20


def test_outgoing_buffer_limits() -> None:
    buffer = OutgoingBuffer(max_messages=2, max_bytes=10)
    assert buffer.put(b"12345")
    assert not buffer.put(b"123456")  # over the byte limit
    assert buffer.put(b"1")
    assert not buffer.put(b"1")  # over the message limit
    assert buffer.put(b"forced", force=True)
    assert buffer.drain() == [b"12345", b"1", b"forced"]
    buffer.close()
    assert not buffer.put(b"x")


async def test_one_wait_for_input_or_output() -> None:
    """The WebSocket message loop's wait: received data or frames to send, whichever first."""
    incoming = IncomingBuffer(100)
    outgoing = OutgoingBuffer(max_messages=10, max_bytes=100)
    woken: list[str] = []

    async def waiter(can_send: bool) -> None:
        await wait_for_input_or_output(incoming, outgoing, can_send=can_send)
        woken.append("woken")

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, True)
        await anyio.wait_all_tasks_blocked()
        assert outgoing.put(b"frame")  # a frame to send ends the wait
        await anyio.wait_all_tasks_blocked()
        assert woken == ["woken"]
        # Queued frames end the wait at once when they can be sent ...
        await wait_for_input_or_output(incoming, outgoing, can_send=True)
        # ... and not when no socket is attached: then notify() (a socket came) does.
        tg.start_soon(waiter, False)
        await anyio.wait_all_tasks_blocked()
        assert woken == ["woken"]
        outgoing.notify()
        await anyio.wait_all_tasks_blocked()
        assert woken == ["woken", "woken"]
        assert outgoing.drain() == [b"frame"]
        # Received data ends it too.
        tg.start_soon(waiter, True)
        await anyio.wait_all_tasks_blocked()
        await incoming.put(b"data")
        await anyio.wait_all_tasks_blocked()
        assert woken == ["woken"] * 3
        assert incoming.get_nowait() == b"data"
        assert incoming.get_nowait() is None
    # Finished waits hold no list in either buffer (at most the one slot, reused).
    assert incoming._data_waiters.more is None
    assert outgoing._data_waiters.more is None


async def test_incoming_buffer_compacts_as_it_reads() -> None:
    incoming = IncomingBuffer(10_000)
    for i in range(200):
        await incoming.put(b"%d" % i)
    read = [await incoming.get() for _ in range(150)]
    assert read == [b"%d" % i for i in range(150)]
    assert len(incoming._chunks) < 200  # read chunks do not pile up until the end
    await incoming.put(b"last")
    rest = [await incoming.get() for _ in range(51)]
    assert rest == [*(b"%d" % i for i in range(150, 200)), b"last"]
    assert incoming._chunks == []  # empty again: no storage held


async def test_waiting_with_timeouts_does_not_pile_up_waiters() -> None:
    buffer = OutgoingBuffer(max_messages=10, max_bytes=100)
    for _ in range(50):
        with anyio.move_on_after(0.001):
            await buffer.wait()
    assert not buffer._data_waiters.parked  # each cancelled wait removed itself
    incoming = IncomingBuffer(1)
    for _ in range(20):
        with anyio.move_on_after(0.001):
            await incoming.get()
    assert not incoming._data_waiters.parked
