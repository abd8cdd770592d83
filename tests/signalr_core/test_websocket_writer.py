"""The WebSocket message loop is the socket's writer: frames still flow while it is blocked;
and a chunk received while it is idle runs in the transport's task, as the loop would run it."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable
from typing import Any

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


# While the message loop waits idle, a received chunk runs in the transport's task
# (Session.receive_now): these check that it behaves as the loop does.

_who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


async def _doubled(value: int) -> int:
    await anyio.sleep(0.01)  # really suspends: the rest of the chunk must wait for it
    return 2 * value


class PlainHub(Hub):
    async def on_connected(self) -> None:
        _who.set(self.context.connection_id)

    @hub_method("Who")
    def who(self) -> bool:
        return _who.get() == self.context.connection_id

    @hub_method("Doubled")
    def doubled(self, value: int) -> Awaitable[int]:
        return _doubled(value)  # a plain function returning an awaitable

    @hub_method("Echo")
    def echo(self, text: str) -> str:
        return text


def _call(invocation_id: str, target: str, *args: Any) -> str:
    return frame(
        {"type": 1, "invocationId": invocation_id, "target": target, "arguments": list(args)}
    )


async def test_plain_methods_run_at_once_see_the_connection_context() -> None:
    async with running_server(HubEndpoint(PlainHub)) as base, json_ws(base) as client:
        for n in range(3):  # the first waits may differ: the later ones run at once
            assert (await client.invoke("Who", invocation_id=str(n)))["result"] is True


async def test_an_awaitable_result_is_answered_before_the_rest_of_the_chunk() -> None:
    async with running_server(HubEndpoint(PlainHub)) as base, json_ws(base) as client:
        assert (await client.invoke("Echo", "warm"))["result"] == "warm"
        await client.ws.send(_call("2", "Doubled", 21) + _call("3", "Echo", "after"))
        with anyio.fail_after(5):
            first, second = await client.receive(), await client.receive()
        assert (first["invocationId"], first["result"]) == ("2", 42)
        assert (second["invocationId"], second["result"]) == ("3", "after")


async def test_messages_before_a_bad_frame_run_then_the_connection_closes() -> None:
    async with running_server(HubEndpoint(PlainHub)) as base, json_ws(base) as client:
        assert (await client.invoke("Echo", "warm"))["result"] == "warm"
        await client.ws.send(_call("2", "Echo", "before") + "{not json\x1e")
        with anyio.fail_after(5):
            reply, close = await client.receive(), await client.receive()
        assert (reply["invocationId"], reply["result"]) == ("2", "before")
        assert close["type"] == 7
        assert close["error"].startswith("Connection closed with an error.")
