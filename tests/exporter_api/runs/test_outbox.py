"""The run events' outbox: the engine never waits for the hub; events go out in order, the
queue is bounded, and what is queued at shutdown still goes out (for a bounded time)."""

from __future__ import annotations

import anyio
import pytest
import structlog.testing

from exporter_api.runs.outbox import EventOutbox


class SlowHub:
    """Records events; while ``gate`` is unset each publish waits for it (a Redis outage)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, object]] = []
        self.gate = anyio.Event()
        self.waiting = anyio.Event()
        self.fail: set[object] = set()

    async def publish(self, run_id: str, method: str, payload: object) -> None:
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        if payload in self.fail:
            raise RuntimeError("refused")
        self.sent.append((run_id, method, payload))


async def test_the_engine_never_waits_and_events_go_out_in_order() -> None:
    hub = SlowHub()
    outbox = EventOutbox(hub)
    with anyio.fail_after(5):
        async with outbox.running():
            for i in range(5):
                await outbox.publish("R", "script.progress", i)  # returns at once
            await hub.waiting.wait()  # the sender waits on the hub, nobody else does
            assert hub.sent == []
            hub.gate.set()
    assert [payload for _, _, payload in hub.sent] == [0, 1, 2, 3, 4]
    assert outbox.queued == 0


async def test_a_full_queue_drops_the_oldest_events_and_says_so_once() -> None:
    hub = SlowHub()
    outbox = EventOutbox(hub, limit=3)
    with structlog.testing.capture_logs() as logs, anyio.fail_after(5):
        async with outbox.running():
            await outbox.publish("R", "m", "in flight")
            await hub.waiting.wait()
            for i in range(6):
                await outbox.publish("R", "m", i)
            assert outbox.queued == 3
            hub.gate.set()
    assert [payload for _, _, payload in hub.sent] == ["in flight", 3, 4, 5]
    assert outbox.dropped == 3
    assert [e["event"] for e in logs].count("hub_events_dropped") == 1


async def test_a_failed_event_is_logged_and_the_next_ones_go_on() -> None:
    hub = SlowHub()
    hub.gate.set()
    hub.fail.add("bad")
    outbox = EventOutbox(hub)
    with structlog.testing.capture_logs() as logs, anyio.fail_after(5):
        async with outbox.running():
            for payload in ("a", "bad", "b"):
                await outbox.publish("R", "m", payload)
    assert [payload for _, _, payload in hub.sent] == ["a", "b"]
    [failed] = [e for e in logs if e["event"] == "event_publish_failed"]
    assert failed["run_id"] == "R"
    assert failed["error_type"] == "RuntimeError"


async def test_what_is_queued_at_shutdown_goes_out_within_the_flush_timeout() -> None:
    hub = SlowHub()
    outbox = EventOutbox(hub, flush_timeout_s=0.2)
    with structlog.testing.capture_logs() as logs, anyio.fail_after(5):
        async with outbox.running():
            await outbox.publish("R", "m", 1)
            await outbox.publish("R", "m", 2)
            await hub.waiting.wait()
        # The hub never answered: the flush gave up, the rest is dropped and said so.
    assert hub.sent == []
    assert outbox.queued == 0
    assert [e["count"] for e in logs if e["event"] == "hub_events_unsent"] == [1]


@pytest.mark.parametrize("when", ["before", "after"])
async def test_outside_running_an_event_goes_out_in_the_callers_task(when: str) -> None:
    hub = SlowHub()
    hub.gate.set()
    outbox = EventOutbox(hub)
    if when == "after":
        async with outbox.running():
            pass
    await outbox.publish("R", "m", "direct")
    assert hub.sent == [("R", "m", "direct")]


async def test_a_subscription_waits_until_the_events_before_it_have_gone_out() -> None:
    # The hub's snapshot promise: state read, then every event queued before the read goes out
    # before the snapshot is returned, so no event the caller gets afterwards is older.
    hub = SlowHub()
    outbox = EventOutbox(hub)
    order: list[str] = []
    with anyio.fail_after(5):
        async with outbox.running(), anyio.create_task_group() as tg:
            await outbox.publish("R", "run.updated", "Running")
            await outbox.publish("R", "run.updated", "Success")
            await hub.waiting.wait()

            async def subscribe() -> None:
                await outbox.caught_up()
                order.append(f"snapshot after {len(hub.sent)} events")

            tg.start_soon(subscribe)
            await anyio.wait_all_tasks_blocked()
            assert order == []  # still waiting for the queued events
            hub.gate.set()
    assert order == ["snapshot after 2 events"]


async def test_a_subscription_waits_for_a_stuck_hub_only_so_long() -> None:
    hub = SlowHub()
    outbox = EventOutbox(hub, flush_timeout_s=0.0)
    with anyio.fail_after(5):
        async with outbox.running():
            await outbox.publish("R", "m", 1)
            await hub.waiting.wait()
            await outbox.caught_up(timeout_s=0.05)  # returns: the caller is not held for good
            await outbox.publish("R", "m", 2)
        await outbox.caught_up()  # stopped: nothing more goes out, nobody waits for it
    assert hub.sent == []
