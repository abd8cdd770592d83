"""Behind a reverse proxy: client address and scheme from X-Forwarded-* only from trusted peers."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
import structlog
from starlette.types import Receive, Scope, Send

from exporter_api.app import create_app
from exporter_api.config import Settings, load_config
from exporter_api.proxy import ProxyHeadersMiddleware
from tests.exporter_api.conftest import DEMO_LOGIN, NoRuns

PROXIES = ["10.0.0.0/8", "2001:db8:1::/48"]


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """What the application behind the middleware sees."""
    client = scope.get("client")
    body = msgspec.json.encode(
        {
            "client": client[0] if client else None,
            "scheme": scope["scheme"],
            "logged": structlog.contextvars.get_contextvars().get("client_ip"),
        }
    )
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _seen(
    peer: str, headers: dict[str, str] | list[tuple[str, str]], proxies: list[str] = PROXIES
) -> dict[str, Any]:
    app = ProxyHeadersMiddleware(_echo, trusted_proxies=proxies)
    transport = httpx.ASGITransport(app=app, client=(peer, 4711))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        response = await client.get("/", headers=headers)
    seen: dict[str, Any] = response.json()
    return seen


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # One trusted proxy: the address it appended.
        ("10.0.0.2", "203.0.113.7", "203.0.113.7"),
        # Whatever the client wrote itself (left of the real address) is ignored.
        ("10.0.0.2", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
        # Two trusted proxies: the right-most untrusted address.
        ("10.0.0.2", "198.51.100.1, 203.0.113.7, 10.9.9.9", "203.0.113.7"),
        # Every hop trusted: the left-most.
        ("10.0.0.2", "10.1.1.1, 10.2.2.2", "10.1.1.1"),
        # Ports and IPv6 forms.
        ("10.0.0.2", "203.0.113.7:5555", "203.0.113.7"),
        ("10.0.0.2", "[2001:db8:2::5]:443", "2001:db8:2::5"),
        ("2001:db8:1::9", "2001:db8:2::5", "2001:db8:2::5"),
        # Garbage where the client's address should be: the peer stays the client.
        ("10.0.0.2", "203.0.113.7, not-an-address", "10.0.0.2"),
        ("10.0.0.2", "unknown", "10.0.0.2"),
    ],
)
async def test_trusted_peer_forwarded_for(peer: str, forwarded_for: str, client: str) -> None:
    seen = await _seen(peer, {"X-Forwarded-For": forwarded_for})
    assert seen["client"] == client
    assert seen["logged"] == client


async def test_several_forwarded_for_headers_read_as_one_list() -> None:
    headers = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.7")]
    assert (await _seen("10.0.0.2", headers))["client"] == "203.0.113.7"


async def test_untrusted_peer_cannot_spoof() -> None:
    spoof = {"X-Forwarded-For": "10.0.0.5, 203.0.113.7", "X-Forwarded-Proto": "https"}
    seen = await _seen("192.0.2.50", spoof)
    assert seen == {"client": "192.0.2.50", "scheme": "http", "logged": "192.0.2.50"}
    # No trusted proxy configured: nobody is believed, not even loopback.
    seen = await _seen("127.0.0.1", spoof, proxies=[])
    assert seen == {"client": "127.0.0.1", "scheme": "http", "logged": "127.0.0.1"}


async def test_forwarded_proto_from_a_trusted_peer() -> None:
    assert (await _seen("10.0.0.2", {"X-Forwarded-Proto": "https"}))["scheme"] == "https"
    assert (await _seen("10.0.0.2", {"X-Forwarded-Proto": "http, https"}))["scheme"] == "https"
    assert (await _seen("10.0.0.2", {"X-Forwarded-Proto": "gopher"}))["scheme"] == "http"
    # No X-Forwarded-For: the peer stays the client.
    assert (await _seen("10.0.0.2", {"X-Forwarded-Proto": "https"}))["client"] == "10.0.0.2"


async def test_websocket_scheme_follows_forwarded_proto() -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)

    middleware = ProxyHeadersMiddleware(app, trusted_proxies=PROXIES)
    scope = {
        "type": "websocket",
        "scheme": "ws",
        "client": ("10.0.0.2", 1),
        "headers": [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"203.0.113.7")],
    }

    async def never(*_: Any) -> Any:
        raise AssertionError

    await middleware(scope, never, never)
    assert (scopes[0]["scheme"], scopes[0]["client"]) == ("wss", ("203.0.113.7", 0))
    assert scope["scheme"] == "ws"  # the caller's scope is left as it was


# --- the service behind a proxy ---------------------------------------------------------------


def _service(settings: Settings) -> Any:
    config = load_config(settings.config_path)
    server = msgspec.structs.replace(
        config.server, trusted_proxies=["10.0.0.0/8"], login_max_failures=2
    )
    return create_app(settings, msgspec.structs.replace(config, server=server), runs=NoRuns())


class _Client:
    def __init__(self, app: Any, peer: str) -> None:
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(peer, 4711)),
            base_url="http://127.0.0.1:8000",
        )


async def test_login_throttle_counts_the_forwarded_client(settings: Settings) -> None:
    app = _service(settings)
    wrong = {**DEMO_LOGIN, "dbPassword": "wrong"}
    async with app.router.lifespan_context(app):
        proxy = _Client(app, "10.0.0.2").http
        outsider = _Client(app, "192.0.2.50").http
        async with proxy, outsider:
            for _ in range(2):
                failed = await proxy.post(
                    "/api/auth/login", json=wrong, headers={"X-Forwarded-For": "203.0.113.7"}
                )
                assert failed.status_code == 401
            locked = await proxy.post(
                "/api/auth/login", json=DEMO_LOGIN, headers={"X-Forwarded-For": "203.0.113.7"}
            )
            other = await proxy.post(
                "/api/auth/login", json=DEMO_LOGIN, headers={"X-Forwarded-For": "203.0.113.8"}
            )
            assert locked.status_code == 429  # that client, through the proxy
            assert other.status_code == 200  # another client behind the same proxy is not
            # A peer that is no proxy gains nothing by inventing addresses: its own counts.
            for n in range(2):
                spoofed = {"X-Forwarded-For": f"198.51.100.{n}"}
                response = await outsider.post("/api/auth/login", json=wrong, headers=spoofed)
                assert response.status_code == 401
            response = await outsider.post(
                "/api/auth/login", json=DEMO_LOGIN, headers={"X-Forwarded-For": "198.51.100.9"}
            )
            assert response.status_code == 429


async def test_refresh_cookie_is_secure_behind_tls_termination(settings: Settings) -> None:
    assert not settings.cookie_secure  # served on loopback over plain http
    app = _service(settings)
    tls = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    async with app.router.lifespan_context(app):
        proxy = _Client(app, "10.0.0.2").http
        outsider = _Client(app, "192.0.2.50").http
        async with proxy, outsider:
            behind_tls = await proxy.post("/api/auth/login", json=DEMO_LOGIN, headers=tls)
            plain = await proxy.post("/api/auth/login", json=DEMO_LOGIN)
            spoofed = await outsider.post("/api/auth/login", json=DEMO_LOGIN, headers=tls)
            logout = await proxy.post("/api/auth/logout", headers=tls)
    assert behind_tls.status_code == 200
    assert "secure" in behind_tls.headers["set-cookie"].lower()
    assert "secure" not in plain.headers["set-cookie"].lower()
    assert "secure" not in spoofed.headers["set-cookie"].lower()
    assert "secure" in logout.headers["set-cookie"].lower()  # cleared with the same attributes
