"""What an idle WebSocket connection costs the hub: bytes and tasks, counted, not timed.

The bounds are the lean-idle-connection goals: at most 10 KB of the hub's own state per idle
WebSocket connection on top of a bare ASGI WebSocket app (tracemalloc, the same in-process
calls for both), and one task of its own (the connection's ``run``; no writer task, no
invocation workers before the first invocation that needs one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import structlog

from signalr_core import Hub, HubEndpoint, hub_method
from tests.signalr_core._idle import (
    HANDSHAKE,
    IdleSocket,
    Message,
    bare_app,
    measure_idle,
    scope,
    settle,
)

pytestmark = pytest.mark.timeout(60)

CONNECTIONS = 200
HUB_SHARE_LIMIT = 10 * 1024


class IdleHub(Hub):
    @hub_method("Echo")
    async def echo(self, message: str) -> str:
        return message


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    # Debug logging (connect/disconnect) would allocate during the measurement.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    yield
    structlog.reset_defaults()


async def test_an_idle_websocket_connection_holds_at_most_10_kb_of_hub_state() -> None:
    bare = await measure_idle(bare_app(), CONNECTIONS, handshake=False)
    endpoint = HubEndpoint(IdleHub)
    async with endpoint.lifespan():
        await measure_idle(endpoint, 20, handshake=True)  # warm caches up first
        hub = await measure_idle(endpoint, CONNECTIONS, handshake=True)
    share = hub.bytes_per_connection - bare.bytes_per_connection
    assert share <= HUB_SHARE_LIMIT, f"{share:.0f} bytes of hub state per idle connection"
    # One task of the hub's own per connection beside the ASGI call: its run().
    assert bare.tasks_per_connection == 1
    assert hub.tasks_per_connection == 2


async def test_workers_start_with_the_first_invocation_and_replies_still_flow() -> None:
    endpoint = HubEndpoint(IdleHub)
    async with endpoint.lifespan():
        socket = IdleSocket(handshake=True)
        before = len(asyncio.all_tasks())
        call = asyncio.ensure_future(endpoint(scope(), socket.receive, socket.send))
        await socket.idle
        await settle()
        assert len(asyncio.all_tasks()) - before == 2  # the ASGI call and run(): no workers
        assert socket.sent[:2] == [
            {"type": "websocket.accept"},
            {"type": "websocket.send", "text": "{}\x1e"},  # the message loop wrote it
        ]
        socket.hang_up()
        await call
    # A second connection invokes a coroutine method: one worker starts, the reply goes out.
    async with endpoint.lifespan():
        replies: list[str] = []
        done = asyncio.get_running_loop().create_future()
        script: list[Message] = [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": HANDSHAKE},
            {
                "type": "websocket.receive",
                "text": '{"type":1,"invocationId":"1","target":"Echo","arguments":["hi"]}\x1e',
            },
        ]

        async def receive() -> Message:
            if script:
                return script.pop(0)
            await done
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message: Message) -> None:
            if message["type"] == "websocket.send":
                replies.append(str(message["text"]))
                if '"invocationId":"1"' in replies[-1] and not done.done():
                    done.set_result(None)

        await endpoint(scope(), receive, send)
        assert replies[0] == "{}\x1e"
        assert '"result":"hi"' in replies[-1]
