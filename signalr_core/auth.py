"""The authentication hook's input: request headers, query, cookies and the bearer token.

The TypeScript client sends the access token in the ``Authorization: Bearer`` header on HTTP
requests and (in browsers) in the ``access_token`` query parameter for WebSockets and
Server-Sent Events, because those browser APIs cannot set headers. Both are accepted.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl

from signalr_core.context import Principal
from signalr_core.errors import AuthenticationError

__all__ = [
    "AuthRequest",
    "Authenticator",
    "call_authenticate",
    "raw_query_value",
    "request_from_scope",
    "without_token",
]

_V = TypeVar("_V")


@dataclass(frozen=True, kw_only=True)
class AuthRequest:
    """What the ``authenticate`` hook (and the negotiate hooks) see of a request.

    Attributes:
        method: HTTP method (``"GET"`` for WebSocket upgrades).
        path: Request path.
        headers: Request headers; names lower-case, repeated headers joined with ``", "``.
        query: Query parameters (last value wins).
        query_values: Every value of each query parameter, in order (a parameter may repeat:
            ``?runId=a&runId=b``), like ASP.NET's ``Request.Query[name]``.
        cookies: Cookies from the ``Cookie`` header.
        access_token: The bearer token from ``Authorization: Bearer`` or the ``access_token``
            query parameter (the header wins), ``None`` when absent.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    cookies: Mapping[str, str]
    access_token: str | None
    query_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


Authenticator: TypeAlias = Callable[[AuthRequest], "Principal | Awaitable[Principal | None] | None"]
"""``authenticate(request) -> Principal | None`` (sync or async). ``None`` (or raising
:class:`~signalr_core.AuthenticationError`) means anonymous."""


def _parse_cookies(header: str) -> dict[str, str]:
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(header)
    except CookieError:
        return {}
    return {key: morsel.value for key, morsel in cookie.items()}


def request_from_scope(scope: Mapping[str, Any]) -> AuthRequest:
    """Build an :class:`AuthRequest` from an ASGI ``http`` or ``websocket`` scope."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    query = dict(pairs)
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    query_values = {key: tuple(values) for key, values in grouped.items()}
    token: str | None = None
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            token = credentials.strip()
    if token is None:
        token = query.get("access_token") or None
    cookies = _parse_cookies(headers["cookie"]) if "cookie" in headers else {}
    method = scope.get("method", "GET") if scope.get("type") == "http" else "GET"
    return AuthRequest(
        method=method,
        path=scope.get("path", ""),
        headers=headers,
        query=query,
        cookies=cookies,
        access_token=token,
        query_values=query_values,
    )


def without_token(values: Mapping[str, _V]) -> Mapping[str, _V]:
    """Query ``values`` without ``access_token`` (copied only when it is there): what a
    connection's context shows of the request that started it."""
    if "access_token" not in values:
        return values
    return {k: v for k, v in values.items() if k != "access_token"}


def raw_query_value(query_string: bytes, name: bytes) -> str | None:
    """The value of ``name`` in a raw query string when it is there once and needs no
    decoding (``None`` otherwise: :func:`request_from_scope` decodes the query in full)."""
    prefix = name + b"="
    found: bytes | None = None
    for part in query_string.split(b"&"):
        if part.startswith(prefix):
            if found is not None:
                return None
            found = part[len(prefix) :]
    if not found or b"%" in found or b"+" in found:
        return None
    return found.decode("latin-1")


async def call_authenticate(
    authenticate: Authenticator | None, request: AuthRequest
) -> Principal | None:
    """Run the hook (sync or async); refusal by :class:`AuthenticationError` means ``None``."""
    if authenticate is None:
        return None
    try:
        result = authenticate(request)
        if inspect.isawaitable(result):
            result = await result
    except AuthenticationError:
        return None
    if result is not None and not isinstance(result, Principal):
        raise TypeError("authenticate must return a Principal or None")
    return result
