"""Session.run: one connection's failure stays that connection's."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import anyio
import pytest

from signalr_core import Hub, HubEndpoint, HubOptions, hub_method
from tests.signalr_core._hub_server import json_ws, running_server

pytestmark = pytest.mark.timeout(30)


class _Hub(Hub):
    @hub_method("Poison")
    def poison(self) -> str:
        return "poison"

    @hub_method("Echo")
    def echo(self, text: str) -> str:
        return text


def _cancelling_sends(app: Any, *, suspend_first: bool) -> Any:
    """``app`` behind a send that awaits a future of its own that was cancelled (a server's
    cancelled future), for the frame answering ``Poison``."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def cancelling_send(message: MutableMapping[str, Any]) -> None:
            if '"poison"' in (message.get("text") or ""):
                if suspend_first:
                    await asyncio.sleep(0)
                cancelled = asyncio.get_running_loop().create_future()
                cancelled.cancel()
                await cancelled
            await send(message)

        await app(scope, receive, cancelling_send)

    return wrapped


@pytest.mark.parametrize(
    ("inline_io", "suspend_first"), [(True, False), (True, True), (False, False)]
)
async def test_a_cancelled_error_out_of_a_send_fails_that_connection_only(
    inline_io: bool, suspend_first: bool
) -> None:
    # Not a cancellation of the connection's task: let through, it would stop the endpoint's
    # task group and close every other connection.
    endpoint = HubEndpoint(_Hub, options=HubOptions(inline_io=inline_io))
    app = _cancelling_sends(endpoint, suspend_first=suspend_first)
    async with running_server(app) as base, json_ws(base) as one, json_ws(base) as two:
        assert (await two.invoke("Echo", "before"))["result"] == "before"
        await one.send({"type": 1, "invocationId": "1", "target": "Poison", "arguments": []})
        with anyio.fail_after(5):
            close = await one.receive()
        assert close["type"] == 7
        assert close["error"].startswith("Connection closed with an error.")
        assert (await two.invoke("Echo", "still here"))["result"] == "still here"
