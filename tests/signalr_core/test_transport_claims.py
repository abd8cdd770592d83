"""Transport requests racing for one connection, driven straight through the ASGI app."""

from __future__ import annotations

import functools

import anyio
import httpx
import pytest

from signalr_core import HubEndpoint, HubOptions, Principal
from signalr_core.auth import AuthRequest
from signalr_core.transports import ASGIMessage
from tests.signalr_core._hub_server import FeatureHub

pytestmark = pytest.mark.timeout(30)


async def _negotiate(endpoint: HubEndpoint, query: str = "") -> str:
    transport = httpx.ASGITransport(app=endpoint)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post(f"/hub/negotiate?negotiateVersion=1{query}")
    token: str = response.json()["connectionToken"]
    return token


async def _websocket(
    endpoint: HubEndpoint,
    token: str,
    done: anyio.Event,
    *,
    first: tuple[ASGIMessage, ...] = (),
    close_code: int = 1000,
    answered: anyio.Event | None = None,
) -> list[str]:
    """One WebSocket request whose ``accept`` takes a while; returns the ASGI event types.

    It receives ``first`` after connecting, then ends with ``close_code`` once ``done`` is set;
    ``answered`` is set at the server's first message (the handshake's answer).
    """
    sent: list[str] = []
    script = [{"type": "websocket.connect"}, *first]

    async def receive() -> ASGIMessage:
        if script:
            return script.pop(0)
        await done.wait()
        return {"type": "websocket.disconnect", "code": close_code}

    async def send(message: ASGIMessage) -> None:
        sent.append(message["type"])
        if message["type"] == "websocket.accept":
            await anyio.sleep(0.05)  # a real server writes the 101 response here
        elif message["type"] == "websocket.send" and answered is not None:
            answered.set()

    scope = {
        "type": "websocket",
        "path": "/hub",
        "query_string": f"id={token}".encode(),
        "headers": [],
    }
    await endpoint(scope, receive, send)
    return sent


async def test_two_websocket_requests_cannot_both_activate_a_connection() -> None:
    endpoint = HubEndpoint(FeatureHub)
    async with endpoint.lifespan():
        token = await _negotiate(endpoint)
        done = anyio.Event()
        results: list[list[str]] = []

        async def one() -> None:
            results.append(await _websocket(endpoint, token, done))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
            await anyio.sleep(0.3)
            done.set()
        accepted = [r for r in results if "websocket.accept" in r]
        assert len(accepted) == 1, results
        refused = next(r for r in results if "websocket.accept" not in r)
        assert refused == ["websocket.close"]


async def test_delete_from_another_user_is_forbidden() -> None:
    users = {"alice": "alice", "bob": "bob"}

    def authenticate(request: AuthRequest) -> Principal | None:
        name = request.headers.get("x-user")
        return Principal(user_id=users[name], name=name) if name in users else None

    endpoint = HubEndpoint(
        FeatureHub, authenticate=authenticate, options=HubOptions(long_poll_timeout=0.5)
    )
    async with endpoint.lifespan():
        transport = httpx.ASGITransport(app=endpoint)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            alice = {"x-user": "alice"}
            negotiated = await http.post("/hub/negotiate?negotiateVersion=1", headers=alice)
            token = negotiated.json()["connectionToken"]
            first = await http.get("/hub", params={"id": token}, headers=alice)
            assert first.status_code == 200
            other = await http.delete("/hub", params={"id": token}, headers={"x-user": "bob"})
            assert other.status_code == 403
            own = await http.delete("/hub", params={"id": token}, headers=alice)
            assert own.status_code == 202


async def test_two_stateful_resumes_cannot_both_take_over_a_connection() -> None:
    options = HubOptions(allow_stateful_reconnect=True, disconnect_timeout=5.0)
    endpoint = HubEndpoint(FeatureHub, options=options)
    async with endpoint.lifespan():
        token = await _negotiate(endpoint, "&useStatefulReconnect=true")
        handshake = {"type": "websocket.receive", "text": '{"protocol":"json","version":2}\x1e'}
        dropped = anyio.Event()
        answered = anyio.Event()
        done = anyio.Event()
        results: list[list[str]] = []

        async def resume() -> None:
            results.append(await _websocket(endpoint, token, done))

        async with anyio.create_task_group() as tg:
            # The first socket breaks (1006): the connection waits for a stateful reconnect.
            tg.start_soon(
                functools.partial(
                    _websocket,
                    endpoint,
                    token,
                    dropped,
                    first=(handshake,),
                    close_code=1006,
                    answered=answered,
                )
            )
            await answered.wait()  # the handshake is processed
            dropped.set()
            await anyio.sleep(0.1)
            tg.start_soon(resume)
            tg.start_soon(resume)
            await anyio.sleep(0.3)
            done.set()
        accepted = [r for r in results if "websocket.accept" in r]
        assert len(accepted) == 1, results
        assert next(r for r in results if "websocket.accept" not in r) == ["websocket.close"]
