"""CORS for hub endpoints: an origin allow-list with credentials.

The JavaScript client sends credentials (cookies) with ``withCredentials`` (the default): an
allow-listed ``Origin`` is echoed with ``Access-Control-Allow-Credentials: true``, as ASP.NET's
``WithOrigins(...).AllowCredentials()``. The wildcard ``"*"`` allows any origin WITHOUT
credentials (``Access-Control-Allow-Origin: *``), as ASP.NET's ``AllowAnyOrigin()``, which
refuses to be combined with ``AllowCredentials()``: echoing every origin with credentials would
let any web page act with the user's cookies. A WebSocket upgrade whose ``Origin`` is not
allowed is refused (browsers apply no CORS to WebSockets).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from signalr_core.transports import ASGIMessage, ASGISend

__all__ = ["DEFAULT_ALLOWED_HEADERS", "CorsPolicy"]

DEFAULT_ALLOWED_HEADERS: Final = (
    "X-Requested-With",
    "X-SignalR-User-Agent",
    "Authorization",
    "Content-Type",
)
_ALLOWED_METHODS: Final = "GET, POST, DELETE, OPTIONS"
_MAX_AGE: Final = "600"


class CorsPolicy:
    """Which origins may call the endpoint from a browser.

    Args:
        allowed_origins: Exact origins (``"https://app.example"``), answered with credentials;
            ``"*"`` allows any other origin without credentials (``Access-Control-Allow-Origin:
            *``).
    """

    def __init__(self, allowed_origins: Iterable[str]) -> None:
        origins = [origin.strip().rstrip("/").lower() for origin in allowed_origins]
        self._any = "*" in origins
        self._origins = frozenset(o for o in origins if o != "*")

    @property
    def enabled(self) -> bool:
        """Whether any origin is allowed at all."""
        return self._any or bool(self._origins)

    def is_allowed(self, origin: str) -> bool:
        """Whether ``origin`` is on the allow-list."""
        return self._any or origin.rstrip("/").lower() in self._origins

    def websocket_allowed(self, origin: str | None) -> bool:
        """Whether a WebSocket upgrade from ``origin`` may proceed (always without CORS, or
        without an ``Origin`` header: not a browser)."""
        return not self.enabled or origin is None or self.is_allowed(origin)

    def _credentialed(self, origin: str) -> bool:
        return origin.rstrip("/").lower() in self._origins

    def is_preflight(self, method: str, headers: Mapping[str, str]) -> bool:
        """An ``OPTIONS`` request with ``Origin`` and ``Access-Control-Request-Method``."""
        return (
            method == "OPTIONS"
            and "origin" in headers
            and "access-control-request-method" in headers
        )

    def preflight_headers(self, headers: Mapping[str, str]) -> list[tuple[str, str]] | None:
        """Headers answering a preflight, ``None`` when the origin is not allowed."""
        origin = headers.get("origin", "")
        if not self.is_allowed(origin):
            return None
        allowed: dict[str, str] = {h.lower(): h for h in DEFAULT_ALLOWED_HEADERS}
        for requested in headers.get("access-control-request-headers", "").split(","):
            name = requested.strip()
            if name:
                allowed.setdefault(name.lower(), name)
        if self._credentialed(origin):
            first = [
                ("access-control-allow-origin", origin),
                ("access-control-allow-credentials", "true"),
            ]
        else:
            first = [("access-control-allow-origin", "*")]
        return [
            *first,
            ("access-control-allow-methods", _ALLOWED_METHODS),
            ("access-control-allow-headers", ", ".join(allowed.values())),
            ("access-control-max-age", _MAX_AGE),
            ("vary", "Origin"),
        ]

    def response_headers(self, origin: str | None) -> Sequence[tuple[bytes, bytes]]:
        """Headers added to an actual response for ``origin`` (empty when not allowed)."""
        if origin is None or not self.is_allowed(origin):
            return ()
        if not self._credentialed(origin):
            return ((b"access-control-allow-origin", b"*"), (b"vary", b"Origin"))
        return (
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        )

    def wrap_send(self, send: ASGISend, origin: str | None) -> ASGISend:
        """An ASGI ``send`` that adds the CORS headers to the response start."""
        extra = self.response_headers(origin)
        if not extra:
            return send

        async def send_with_cors(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        return send_with_cors
