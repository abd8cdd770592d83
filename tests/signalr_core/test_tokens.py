"""Self-verifying connection tokens: negotiate on one endpoint, connect on another."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from signalr_core import AuthRequest, HubEndpoint, HubOptions, Principal
from signalr_core.tokens import ConnectionTokens
from tests.services import async_wait_until
from tests.signalr_core._hub_server import (
    FeatureHub,
    json_ws,
    negotiate,
    running_server,
)

pytestmark = pytest.mark.timeout(60)

KEY = b"k" * 32
SCOPE = FeatureHub.__qualname__


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the token itself ---------------------------------------------------------------------------


def test_mint_and_adopt_roundtrip() -> None:
    clock = Clock()
    tokens = ConnectionTokens(KEY, scope=SCOPE, max_age=15, clock=clock)
    token = tokens.mint("abcDEF-_123", "alice")
    connection_id, issued, mac = token.split(".")
    assert (connection_id, int(issued), len(mac)) == ("abcDEF-_123", int(clock.now), 22)
    assert tokens.adoptable(token, "alice") == "abcDEF-_123"
    assert tokens.adoptable(token, "bob") is None
    assert tokens.adoptable(token, None) is None
    anonymous = tokens.mint("anon", None)
    assert tokens.adoptable(anonymous, None) == "anon"
    assert tokens.adoptable(anonymous, "alice") is None


def test_forged_tokens_are_refused() -> None:
    tokens = ConnectionTokens(KEY, scope=SCOPE, max_age=15, clock=Clock())
    token = tokens.mint("conn", "alice")
    connection_id, issued, mac = token.split(".")
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    assert tokens.adoptable(f"{connection_id}.{issued}.{flipped}", "alice") is None
    assert tokens.adoptable(f"other.{issued}.{mac}", "alice") is None
    assert tokens.adoptable(f"{connection_id}.{int(issued) + 1}.{mac}", "alice") is None
    assert tokens.adoptable(f"{connection_id}.{issued}", "alice") is None
    other_key = ConnectionTokens(b"x" * 32, scope=SCOPE, max_age=15, clock=Clock())
    assert other_key.adoptable(token, "alice") is None
    other_hub = ConnectionTokens(KEY, scope="OtherHub", max_age=15, clock=Clock())
    assert other_hub.adoptable(token, "alice") is None
    with pytest.raises(ValueError, match="16 bytes"):
        ConnectionTokens(b"short", scope=SCOPE, max_age=15)


def test_age_bound() -> None:
    clock = Clock()
    tokens = ConnectionTokens(KEY, scope=SCOPE, max_age=15, clock=clock)
    token = tokens.mint("conn", "alice")
    clock.now += 14.5
    assert tokens.adoptable(token, "alice") == "conn"
    clock.now += 0.5
    assert tokens.adoptable(token, "alice") is None
    clock.now -= 20  # issued ahead of this clock by more than a small skew
    assert tokens.adoptable(token, "alice") is None


def test_spent_tokens_are_not_adopted_again_and_are_forgotten_when_expired() -> None:
    clock = Clock()
    tokens = ConnectionTokens(KEY, scope=SCOPE, max_age=15, clock=clock)
    first = tokens.mint("one", "alice")
    tokens.spend(first)
    tokens.spend("not-a-minted-token")
    assert tokens.spent_count == 1
    assert tokens.adoptable(first, "alice") is None
    clock.now += 30
    second = tokens.mint("two", "alice")
    tokens.spend(second)
    assert tokens.spent_count == 1  # the first expired and was dropped


@given(st.text(max_size=300))
def test_adoptable_never_raises(garbage: str) -> None:
    tokens = ConnectionTokens(KEY, scope=SCOPE, max_age=15, clock=Clock())
    assert tokens.adoptable(garbage, "alice") is None
    tokens.spend(garbage)


def test_options_refuse_a_short_key() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        HubOptions(connection_token_key=b"short")
    with pytest.raises(ValueError, match="connection_token_max_age"):
        HubOptions(connection_token_max_age=0)
    assert "k" * 32 not in repr(HubOptions(connection_token_key=KEY))


# -- two endpoints, as two processes ------------------------------------------------------------


def authenticate(request: AuthRequest) -> Principal | None:
    token = request.access_token
    return Principal(user_id=token) if token else None


def endpoint(key: bytes | None = KEY, *, disconnect_timeout: float = 15.0) -> HubEndpoint:
    options = HubOptions(connection_token_key=key, disconnect_timeout=disconnect_timeout)
    return HubEndpoint(FeatureHub, options=options, authenticate=authenticate)


@contextlib.asynccontextmanager
async def pair(a: HubEndpoint, b: HubEndpoint) -> AsyncIterator[tuple[str, str, httpx.AsyncClient]]:
    async with running_server(a) as url_a, running_server(b) as url_b, httpx.AsyncClient() as http:
        yield url_a, url_b, http


async def refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url.replace("http", "ws", 1)):
            pass
    return refused.value.response.status_code


async def test_a_token_negotiated_on_one_endpoint_connects_on_the_other() -> None:
    a, b = endpoint(), endpoint()
    async with pair(a, b) as (url_a, url_b, http):
        body = await negotiate(http, url_a)
        assert body["connectionToken"].startswith(body["connectionId"] + ".")
        assert "useStatefulReconnect" not in body
        token = body["connectionToken"]
        async with json_ws(f"{url_b}?id={token}") as client:
            context = (await client.invoke("GetContext"))["result"]
            assert context["connectionId"] == body["connectionId"]
            assert context["transport"] == "WebSockets"
            assert (await client.invoke("Echo", "hello"))["result"] == "hello"
            await client.invoke("NotifyCaller", "pushed", invocation_id="2")
            notified = await client.receive()
            assert (notified["target"], notified["arguments"]) == ("Notified", ["pushed"])
            assert b.connection_count == 1
            # In use: a second connect with the same token is a conflict, as for any token.
            assert await refused_status(f"{url_b}?id={token}") == 409
        await async_wait_until(lambda: b.connection_count == 0)
        # Finished: the same process never adopts it again.
        assert await refused_status(f"{url_b}?id={token}") == 404


async def test_the_user_must_be_the_one_the_token_was_issued_to() -> None:
    async with pair(endpoint(), endpoint()) as (url_a, url_b, http):
        body = (await http.post(f"{url_a}/negotiate?negotiateVersion=1&access_token=alice")).json()
        token = body["connectionToken"]
        assert await refused_status(f"{url_b}?id={token}&access_token=bob") == 404
        assert await refused_status(f"{url_b}?id={token}") == 404
        async with json_ws(f"{url_b}?id={token}&access_token=alice") as client:
            assert (await client.invoke("Whoami"))["result"] == "alice"


async def test_forged_expired_and_foreign_tokens_are_404() -> None:
    async with (
        pair(endpoint(), endpoint()) as (url_a, url_b, http),
        running_server(endpoint(b"o" * 32)) as url_other,
    ):
        token = (await negotiate(http, url_a))["connectionToken"]
        connection_id, issued, mac = token.split(".")
        forged = f"{connection_id}.{issued}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
        assert await refused_status(f"{url_b}?id={forged}") == 404
        assert await refused_status(f"{url_other}?id={token}") == 404  # another key
        old = ConnectionTokens(KEY, scope=SCOPE, max_age=15, clock=lambda: time.time() - 60)
        assert await refused_status(f"{url_b}?id={old.mint('expired', None)}") == 404
        fresh = ConnectionTokens(KEY, scope=SCOPE, max_age=15)
        async with json_ws(f"{url_b}?id={fresh.mint('minted', None)}") as client:
            assert (await client.invoke("GetContext"))["result"]["connectionId"] == "minted"


async def test_only_websockets_adopt() -> None:
    async with pair(endpoint(), endpoint()) as (url_a, url_b, http):
        token = (await negotiate(http, url_a))["connectionToken"]
        sse = await http.get(url_b, params={"id": token}, headers={"accept": "text/event-stream"})
        assert (sse.status_code, sse.text) == (404, "No Connection with that ID")
        poll = await http.get(url_b, params={"id": token})
        assert poll.status_code == 404
        assert (await http.post(url_b, params={"id": token}, content=b"{}\x1e")).status_code == 404
        # v0: the connection id is the token, never self-verifying.
        v0 = (await http.post(f"{url_a}/negotiate")).json()
        assert "." not in v0["connectionId"]
        assert await refused_status(f"{url_b}?id={v0['connectionId']}") == 404


async def test_without_a_key_tokens_stay_in_their_process() -> None:
    async with pair(endpoint(None), endpoint(None)) as (url_a, url_b, http):
        body = await negotiate(http, url_a)
        assert len(body["connectionToken"]) == 22
        assert await refused_status(f"{url_b}?id={body['connectionToken']}") == 404
    # A key on the connecting side alone does not make a random token adoptable.
    async with pair(endpoint(None), endpoint()) as (url_a, url_b, http):
        token = (await negotiate(http, url_a))["connectionToken"]
        assert await refused_status(f"{url_b}?id={token}") == 404


async def test_the_negotiating_endpoint_drops_the_connection_it_never_saw_connected() -> None:
    a = endpoint(disconnect_timeout=0.3)
    async with pair(a, endpoint()) as (url_a, url_b, http):
        token = (await negotiate(http, url_a))["connectionToken"]
        assert a.connection_count == 1
        async with json_ws(f"{url_b}?id={token}") as client:
            await async_wait_until(lambda: a.connection_count == 0)
            assert (await client.invoke("Echo", "still here"))["result"] == "still here"
        # Dropped unused, its token is spent on A too: A does not adopt it afterwards.
        assert await refused_status(f"{url_a}?id={token}") == 404


async def test_stateful_reconnect_is_not_offered_with_a_key() -> None:
    options = HubOptions(connection_token_key=KEY, allow_stateful_reconnect=True)
    async with running_server(HubEndpoint(FeatureHub, options=options)) as url:
        async with httpx.AsyncClient() as http:
            asked = await http.post(f"{url}/negotiate?negotiateVersion=1&useStatefulReconnect=true")
        assert "useStatefulReconnect" not in asked.json()
