"""Behind a reverse proxy: the client's address and scheme from ``X-Forwarded-*`` headers.

Behind HAProxy or nginx every request comes from the proxy's address, so login throttling would
lock out everyone at once and logs would name the proxy; and with TLS ending at the proxy the
service sees plain ``http`` and would not mark its cookies ``Secure``. Proxies tell the truth in
``X-Forwarded-For`` (each hop appends the address it received the request from) and
``X-Forwarded-Proto`` — but a client can send those headers too, so they are believed only when
the direct peer is in ``[server] trusted_proxies``.

``X-Forwarded-For`` is read from the right: every address added by a trusted proxy is skipped,
and the first one that is not trusted is the client (anything left of it was written by the
client and proves nothing). When every address is trusted, the left-most one is the client.

The rewritten ``scope["client"]`` and ``scope["scheme"]`` are what every later layer reads
(``request.client``, ``request.url.scheme``); the client address is also bound to the structlog
context (``client_ip``) for the logs of the request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from exporter_api.logging import log_context

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = {
    "http": {"http": "http", "https": "https"},
    "websocket": {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"},
}


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    """``[server] trusted_proxies`` entries (addresses or CIDRs, validated by load_config)."""
    return [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs]


def _address(text: str) -> Address | None:
    """An address from a header entry or an ASGI peer: ``1.2.3.4``, ``1.2.3.4:5678``,
    ``2001:db8::1``, ``[2001:db8::1]:5678``; ``None`` for anything else."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ProxyHeadersMiddleware:
    """Pure ASGI middleware: trusted peers' ``X-Forwarded-For`` / ``-Proto`` become the scope's
    ``client`` and ``scheme``; from any other peer the headers are ignored.

    Args:
        app: the application to call.
        trusted_proxies: addresses or CIDRs of the proxies in front of the service.
    """

    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.networks = parse_networks(trusted_proxies)

    def trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer = scope.get("client")
        if self.networks and peer and self.trusted(_address(str(peer[0]))):
            scope = self._rewritten(scope)
        client = scope.get("client")
        with log_context(client_ip=client[0] if client else None):
            await self.app(scope, receive, send)

    def _rewritten(self, scope: Scope) -> Scope:
        forwarded_for: list[str] = []
        forwarded_proto: list[str] = []
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded_for.extend(value.decode("latin-1").split(","))
            elif name == b"x-forwarded-proto":
                forwarded_proto.extend(value.decode("latin-1").split(","))
        scope = dict(scope)
        client: Address | None = None
        for entry in reversed(forwarded_for):
            address = _address(entry)
            if address is None:
                break  # garbage: nothing left of it can be trusted either
            client = address
            if not self.trusted(address):
                break
        if client is not None:
            scope["client"] = (str(client), 0)
        if forwarded_proto:
            scheme = _SCHEMES[scope["type"]].get(forwarded_proto[-1].strip().lower())
            if scheme is not None:
                scope["scheme"] = scheme
        return scope


__all__ = ["ProxyHeadersMiddleware", "parse_networks"]
