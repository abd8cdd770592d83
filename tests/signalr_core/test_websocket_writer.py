"""The WebSocket message loop is the socket's writer: frames still flow while it is blocked."""

from __future__ import annotations

import anyio
import pytest

from signalr_core import Hub, HubEndpoint, hub_method
from tests.signalr_core._hub_server import frame, json_ws, running_server

pytestmark = pytest.mark.timeout(30)


class BusyHub(Hub):
    @hub_method("NotifyThenWait")
    async def notify_then_wait(self, tag: str) -> None:
        await self.clients.caller.send("Notified", tag)
        await anyio.sleep_forever()  # keeps the only worker busy until the connection ends


async def test_frames_go_out_while_the_loop_waits_for_a_busy_worker() -> None:
    # One worker (the default), two invocations in one WebSocket message: the loop hands the
    # first to the worker and then waits for it to take the second, without returning to its
    # top (where it writes). The worker's message must still reach the client meanwhile; with
    # nobody writing while the loop waits, it would sit in the buffer and this would time out.
    async with running_server(HubEndpoint(BusyHub)) as base, json_ws(base) as client:
        await client.ws.send(
            "".join(
                frame(
                    {
                        "type": 1,
                        "invocationId": str(n),
                        "target": "NotifyThenWait",
                        "arguments": [str(n)],
                    }
                )
                for n in (1, 2)
            )
        )
        with anyio.fail_after(5):
            message = await client.receive()
        assert message == {"type": 1, "target": "Notified", "arguments": ["1"]}


async def test_frames_queued_before_the_socket_attached_go_out_when_it_does() -> None:
    # The handshake answer is queued by the message loop before (or while) the transport
    # attaches its socket; it must go out without any further input from the client.
    async with running_server(HubEndpoint(BusyHub)) as base, json_ws(base) as client:
        await client.send(
            {"type": 1, "invocationId": "1", "target": "NotifyThenWait", "arguments": ["x"]}
        )
        with anyio.fail_after(5):
            assert (await client.receive())["arguments"] == ["x"]
