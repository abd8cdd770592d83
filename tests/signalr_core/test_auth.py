"""Authentication: bearer token from the header or the query, per-hub and per-method checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httpx
import pytest
import structlog
import structlog.testing
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from signalr_core import AuthRequest, Hub, HubCallerContext, HubEndpoint, Principal, hub_method
from signalr_core.auth import request_from_scope
from tests.signalr_core._hub_server import FeatureHub, json_ws, negotiate, running_server

pytestmark = pytest.mark.timeout(30)

USERS = {
    "good-token": Principal(user_id="alice"),
    "admin-token": Principal(user_id="root", claims={"role": "admin"}),
}


def authenticate(request: AuthRequest) -> Principal | None:
    return USERS.get(request.access_token or "")


def is_admin(context: HubCallerContext) -> bool:
    return context.user is not None and context.user.claims.get("role") == "admin"


class PrivateHub(Hub):
    authorize = True

    def whoami(self) -> str | None:
        return self.context.user_id

    @hub_method("AdminOnly", authorize=is_admin)
    def admin_only(self) -> str:
        return "admin"


class OpenHub(FeatureHub):
    pass


def test_request_from_scope_reads_token_cookies_and_query() -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/hub",
        "query_string": b"access_token=from-query&x=1",
        "headers": [
            (b"Authorization", b"Bearer from-header"),
            (b"cookie", b"a=1; b=two"),
            (b"x-multi", b"1"),
            (b"x-multi", b"2"),
        ],
    }
    request = request_from_scope(scope)
    assert request.access_token == "from-header"
    assert request.cookies == {"a": "1", "b": "two"}
    assert request.query["x"] == "1"
    assert request.headers["x-multi"] == "1, 2"
    query_only = request_from_scope({**scope, "headers": []})
    assert query_only.access_token == "from-query"
    assert request_from_scope({**scope, "headers": [], "query_string": b""}).access_token is None


@pytest.fixture
async def private_url() -> AsyncIterator[str]:
    async with running_server(HubEndpoint(PrivateHub, authenticate=authenticate)) as base:
        yield base


async def test_negotiate_requires_a_valid_token(private_url: str) -> None:
    async with httpx.AsyncClient() as http:
        anonymous = await http.post(f"{private_url}/negotiate?negotiateVersion=1")
        assert anonymous.status_code == 401
        forged = await http.post(
            f"{private_url}/negotiate?negotiateVersion=1",
            headers={"authorization": "Bearer forged"},
        )
        assert forged.status_code == 401
        by_header = await http.post(
            f"{private_url}/negotiate?negotiateVersion=1",
            headers={"authorization": "Bearer good-token"},
        )
        assert by_header.status_code == 200
        by_query = await http.post(
            f"{private_url}/negotiate?negotiateVersion=1&access_token=good-token"
        )
        assert by_query.status_code == 200


async def test_transport_requests_require_a_valid_token(private_url: str) -> None:
    async with httpx.AsyncClient() as http:
        token = (
            await http.post(
                f"{private_url}/negotiate?negotiateVersion=1",
                headers={"authorization": "Bearer good-token"},
            )
        ).json()["connectionToken"]
        assert (await http.get(private_url, params={"id": token})).status_code == 401
        assert (
            await http.get(private_url, params={"id": token, "access_token": "forged"})
        ).status_code == 401
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{private_url.replace('http', 'ws')}?id={token}"):
                pass
        assert refused.value.response.status_code == 401
        async with json_ws(f"{private_url}?id={token}&access_token=good-token") as client:
            assert (await client.invoke("Whoami"))["result"] == "alice"
            assert (await client.invoke("AdminOnly", invocation_id="2"))["error"] == (
                "Failed to invoke 'AdminOnly' because user is unauthorized"
            )
    async with json_ws(
        private_url, additional_headers={"Authorization": "Bearer admin-token"}
    ) as admin:
        assert (await admin.invoke("AdminOnly"))["result"] == "admin"


async def test_long_polling_refuses_another_user() -> None:
    endpoint = HubEndpoint(OpenHub, authenticate=authenticate)
    async with running_server(endpoint) as url, httpx.AsyncClient() as http:
        token = (await negotiate(http, url))["connectionToken"]
        alice = {"authorization": "Bearer good-token"}
        assert (await http.get(url, params={"id": token}, headers=alice)).status_code == 200
        other = {"authorization": "Bearer admin-token"}
        assert (
            await http.post(url, params={"id": token}, headers=other, content=b"x")
        ).status_code == 403
        assert (await http.get(url, params={"id": token}, headers=other)).status_code == 403
        assert (await http.delete(url, params={"id": token}, headers=alice)).status_code == 202


async def _read_response(stream: anyio.abc.ByteStream) -> tuple[int, bytes]:
    """One HTTP/1.1 response (status, body) from a raw socket; EOF fails the test."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    while len(body) < length:
        body += await stream.receive()
    return int(lines[0].split()[1]), body


async def test_refused_post_reads_its_body_so_the_keep_alive_connection_survives() -> None:
    # The body arrives after the headers: answering 403 before reading it made the server close
    # the connection, and a client's next request on it was dropped unanswered (a flaky
    # "Server disconnected without sending a response" in the test above).
    endpoint = HubEndpoint(OpenHub, authenticate=authenticate)
    async with running_server(endpoint) as url, httpx.AsyncClient() as http:
        token = (await negotiate(http, url))["connectionToken"]
        alice = {"authorization": "Bearer good-token"}
        assert (await http.get(url, params={"id": token}, headers=alice)).status_code == 200
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        request = (
            f"{{method}} {parts.path}?id={token} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
            "authorization: Bearer admin-token\r\ncontent-length: {length}\r\n\r\n"
        )
        with anyio.fail_after(10):
            async with await anyio.connect_tcp(parts.hostname, parts.port) as stream:
                await stream.send(request.format(method="POST", length=1).encode())
                await anyio.sleep(0.2)
                await stream.send(b"x")
                assert (await _read_response(stream))[0] == 403
                await stream.send(request.format(method="GET", length=0).encode())
                assert (await _read_response(stream))[0] == 403
        assert (await http.delete(url, params={"id": token}, headers=alice)).status_code == 202


async def test_per_method_authorization_on_an_open_hub() -> None:
    async with running_server(HubEndpoint(OpenHub, authenticate=authenticate)) as url:
        async with json_ws(url) as anonymous:
            assert (await anonymous.invoke("Whoami"))["result"] is None
            assert (await anonymous.invoke("Secret", invocation_id="2"))["error"] == (
                "Failed to invoke 'Secret' because user is unauthorized"
            )
        async with json_ws(f"{url}?access_token=good-token") as alice:
            assert (await alice.invoke("Whoami"))["result"] == "alice"
            assert (await alice.invoke("Secret", invocation_id="2"))["result"] == "classified"


async def test_logs_bind_connection_id_and_never_contain_tokens() -> None:
    secret = "good-token"
    with structlog.testing.capture_logs() as logs:
        async with running_server(HubEndpoint(OpenHub, authenticate=authenticate)) as url:
            async with httpx.AsyncClient() as http:
                body = (
                    await http.post(
                        f"{url}/negotiate?negotiateVersion=1&access_token={secret}",
                        headers={"authorization": f"Bearer {secret}"},
                    )
                ).json()
            async with json_ws(f"{url}?id={body['connectionToken']}&access_token={secret}") as c:
                assert (await c.invoke("Crash"))["error"]
    failures = [entry for entry in logs if entry["event"] == "invocation_failed"]
    assert failures
    assert failures[0]["connection_id"] == body["connectionId"]
    assert failures[0]["method"] == "Crash"
    for entry in logs:
        assert secret not in repr(entry)
        assert body["connectionToken"] not in repr(entry)


def test_request_from_scope_keeps_every_value_of_a_repeated_parameter() -> None:
    scope = {"type": "websocket", "path": "/hub", "query_string": b"runId=a&x=1&runId=b&runId=a"}
    request = request_from_scope(scope)
    assert request.query["runId"] == "a"  # last value wins
    assert request.query_values == {"runId": ("a", "b", "a"), "x": ("1",)}


def is_admin_user(user: Principal) -> bool:
    """The hub policy: only users with the admin role."""
    return user.claims.get("role") == "admin"


class AdminHub(Hub):
    authorize = staticmethod(is_admin_user)

    def whoami(self) -> str | None:
        return self.context.user_id


async def test_refusals_carry_the_reason_in_the_body() -> None:
    # The official client's error text is the body or else the reason phrase, which hypercorn
    # does not send: the body carries it, so the text reads as with Kestrel.
    private = HubEndpoint(PrivateHub, authenticate=authenticate)
    admin = HubEndpoint(AdminHub, authenticate=authenticate)
    async with (
        private.lifespan(),
        admin.lifespan(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=private)) as private_http,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=admin)) as admin_http,
    ):
        refused = await private_http.post("http://hub/hub/negotiate?negotiateVersion=1")
        assert (refused.status_code, refused.text) == (401, "Unauthorized")
        assert refused.headers["www-authenticate"] == "Bearer"
        # A hub policy: anonymous -> 401, an authenticated user it refuses -> 403.
        anonymous = await admin_http.post("http://hub/hub/negotiate?negotiateVersion=1")
        assert (anonymous.status_code, anonymous.text) == (401, "Unauthorized")
        alice = await admin_http.post(
            "http://hub/hub/negotiate?negotiateVersion=1",
            headers={"authorization": "Bearer good-token"},
        )
        assert (alice.status_code, alice.text) == (403, "Forbidden")
        root = await admin_http.post(
            "http://hub/hub/negotiate?negotiateVersion=1",
            headers={"authorization": "Bearer admin-token"},
        )
        assert root.status_code == 200
        wrong = await admin_http.put("http://hub/hub")
        assert (wrong.status_code, wrong.text) == (405, "Method Not Allowed")
