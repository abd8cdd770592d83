"""Request helpers shared by every route module: services, the caller, typed JSON bodies."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from exporter_api.errors import BadRequest, PayloadTooLarge, Unauthorized
from exporter_api.security.tokens import AuthenticatedUser

if TYPE_CHECKING:
    from exporter_api.services import Services

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_AT = re.compile(r" - at `\$(?P<loc>[^`]*)`$")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def current_user(request: Request) -> AuthenticatedUser:
    """The caller of a request with a valid `Authorization: Bearer` access token."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("an access token is required (Authorization: Bearer ...)")
    return await services(request).tokens.verify_access_token(token)


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The request body, refused with 413 beyond `limit` (default: server.max_body_bytes)."""
    max_bytes = limit if limit is not None else services(request).config.server.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the request body exceeds {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the request body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, type_: type[T], limit: int | None = None) -> T:
    """Decode the body into `type_`; 400 naming the field for bad JSON, types or missing fields."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise BadRequest("the request body must be application/json")
    body = await read_body(request, limit)
    return decode_json(body, type_)


def decode_json(body: bytes, type_: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = None
        if m := _AT.search(message):
            field = m.group("loc").lstrip(".") or None
            message = message[: m.start()]
        if m := _MISSING.search(message) or _UNKNOWN.search(message):
            field = ".".join(p for p in (field, m.group("field")) if p)
        raise BadRequest(f"invalid request body: {message}", field=field) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def json_response(
    value: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        _encoder.encode(value),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


__all__ = [
    "bearer_token",
    "current_user",
    "decode_json",
    "json_response",
    "read_body",
    "read_json",
    "services",
]
