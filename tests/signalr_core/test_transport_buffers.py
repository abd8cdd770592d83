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
