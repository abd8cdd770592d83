"""The bounded buffers between transports and connections."""

from __future__ import annotations

import anyio
import pytest

from signalr_core.transports import IncomingBuffer, OutgoingBuffer

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


async def test_outgoing_buffer_hold_keeps_one_writer_and_the_order() -> None:
    buffer = OutgoingBuffer(max_messages=10, max_bytes=100)
    sent: list[list[bytes]] = []

    async def writer() -> None:  # a transport's send loop
        while True:
            await buffer.wait()
            chunks = buffer.drain()
            if not chunks:
                return
            sent.append(chunks)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        await anyio.wait_all_tasks_blocked()
        # The holder's frames go out directly when the writer is parked.
        buffer.hold()
        assert buffer.put(b"a")
        assert buffer.put(b"b")
        await anyio.wait_all_tasks_blocked()
        assert sent == []  # held: the writer was not woken
        assert buffer.take_held() == [b"a", b"b"]
        assert buffer.put(b"c")  # written while the holder sends: the writer still waits
        await anyio.wait_all_tasks_blocked()
        assert sent == []
        buffer.release()
        await anyio.wait_all_tasks_blocked()
        assert sent == [[b"c"]]
        # Not held: puts wake the writer as before, and take_held gives nothing.
        assert buffer.put(b"d")
        assert buffer.take_held() is None
        await anyio.wait_all_tasks_blocked()
        assert sent == [[b"c"], [b"d"]]
        # close() wakes the writer; it waits again while the buffer is held, then sends the
        # rest and ends.
        buffer.hold()
        assert buffer.put(b"e")
        buffer.close()
        assert buffer.take_held() is None  # the writer is no longer parked
        await anyio.wait_all_tasks_blocked()
        assert sent == [[b"c"], [b"d"]]
        buffer.release()
    assert sent == [[b"c"], [b"d"], [b"e"]]


async def test_outgoing_buffer_take_held_leaves_frames_to_a_writer_that_is_not_parked() -> None:
    buffer = OutgoingBuffer(max_messages=10, max_bytes=100)
    buffer.hold()
    assert buffer.put(b"x")
    assert buffer.take_held() is None  # nobody parked in wait(): the writer is sending
    buffer.release()
    with anyio.fail_after(1):
        await buffer.wait()  # released with a frame queued: returns at once
    assert buffer.drain() == [b"x"]


async def test_waiting_with_timeouts_does_not_pile_up_waiters() -> None:
    buffer = OutgoingBuffer(max_messages=10, max_bytes=100)
    for _ in range(50):
        with anyio.move_on_after(0.001):
            await buffer.wait()
    assert buffer._data_waiters.parked == []  # each cancelled wait removed itself
    incoming = IncomingBuffer(1)
    for _ in range(20):
        with anyio.move_on_after(0.001):
            await incoming.get()
    assert incoming._data_waiters.parked == []
