"""CORS: allow-listed origins are echoed with credentials; preflights are answered; "*" is
answered without credentials; WebSockets from other origins are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from signalr_core import CorsPolicy, HubEndpoint, HubOptions
from tests.signalr_core._hub_server import FeatureHub, json_ws, running_server

pytestmark = pytest.mark.timeout(30)

ALLOWED = "http://app.example:8080"


def test_policy_rules() -> None:
    policy = CorsPolicy([ALLOWED + "/"])
    assert policy.is_allowed(ALLOWED)
    assert not policy.is_allowed("http://evil.example")
    assert CorsPolicy(["*"]).is_allowed("http://anything")
    assert not CorsPolicy([]).enabled


@pytest.fixture
async def url() -> AsyncIterator[str]:
    options = HubOptions(allowed_origins=(ALLOWED,))
    async with running_server(HubEndpoint(FeatureHub, options=options)) as base:
        yield base


async def test_preflight_for_an_allowed_origin(url: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.options(
            f"{url}/negotiate",
            headers={
                "origin": ALLOWED,
                "access-control-request-method": "POST",
                "access-control-request-headers": "x-signalr-user-agent, x-custom",
            },
        )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    for name in (
        "x-requested-with",
        "x-signalr-user-agent",
        "authorization",
        "content-type",
        "x-custom",
    ):
        assert name in allowed_headers


async def test_actual_requests_echo_the_origin(url: str) -> None:
    async with httpx.AsyncClient() as http:
        allowed = await http.post(
            f"{url}/negotiate?negotiateVersion=1", headers={"origin": ALLOWED}
        )
        assert allowed.headers["access-control-allow-origin"] == ALLOWED
        assert allowed.headers["access-control-allow-credentials"] == "true"
        other = await http.post(
            f"{url}/negotiate?negotiateVersion=1", headers={"origin": "http://evil.example"}
        )
        assert other.status_code == 200
        assert "access-control-allow-origin" not in other.headers
        refused = await http.options(
            f"{url}/negotiate",
            headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
        )
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers


async def test_wildcard_allows_any_origin_without_credentials() -> None:
    options = HubOptions(allowed_origins=("*",))
    async with (
        running_server(HubEndpoint(FeatureHub, options=options)) as url,
        httpx.AsyncClient() as http,
    ):
        actual = await http.post(
            f"{url}/negotiate?negotiateVersion=1", headers={"origin": "http://any.example"}
        )
        assert actual.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in actual.headers
        preflight = await http.options(
            f"{url}/negotiate",
            headers={"origin": "http://any.example", "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in preflight.headers


async def test_websocket_from_a_disallowed_origin_is_refused(url: str) -> None:
    ws_url = url.replace("http://", "ws://", 1)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url, origin=Origin("http://evil.example")):
            pass
    assert refused.value.response.status_code == 403
    async with json_ws(url, origin=Origin(ALLOWED)) as client:
        assert (await client.invoke("Echo", "ok"))["result"] == "ok"
