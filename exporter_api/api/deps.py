"""Request helpers shared by every route module: services, the caller, typed JSON bodies."""

from __future__ import annotations

import functools
import re
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec
import structlog
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
_REGEX = re.compile(r"matching regex '.*'(?= - at `)")
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
    user = await services(request).tokens.verify_access_token(token)
    structlog.contextvars.bind_contextvars(login=user.login)  # the rest of this request's lines
    return user


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


def _bad_request(exc: msgspec.ValidationError, what: str) -> BadRequest:
    message = _REGEX.sub("in the documented format (/api/openapi.json)", str(exc))
    field = None
    if m := _AT.search(message):
        field = m.group("loc").lstrip(".") or None
        message = message[: m.start()]
    if m := _MISSING.search(message) or _UNKNOWN.search(message):
        field = ".".join(p for p in (field, m.group("field")) if p)
    return BadRequest(f"invalid {what}: {message}", field=field)


def decode_json(body: bytes, type_: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise _bad_request(exc, "request body") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def _bare(t: msgspec.inspect.Type) -> msgspec.inspect.Type:
    while isinstance(t, msgspec.inspect.Metadata):
        t = t.type
    return t


@functools.cache
def _integer_fields(type_: Hashable) -> frozenset[str]:
    info = msgspec.inspect.type_info(type_)
    assert isinstance(info, msgspec.inspect.StructType)
    names: set[str] = set()
    for f in info.fields:
        t = _bare(f.type)
        options = t.types if isinstance(t, msgspec.inspect.UnionType) else (t,)
        if any(isinstance(_bare(o), msgspec.inspect.IntType) for o in options):
            names.add(f.encode_name)
    return frozenset(names)


# A query integer is plain ASCII decimal (no "²", "1e1", "5.0" or 5000 digits); anything else
# stays a string, which the Struct then refuses naming the parameter.
_QUERY_INT = re.compile(r"-?[0-9]{1,18}", re.ASCII)


def read_query(request: Request, type_: type[T]) -> T:
    """The query string as ``type_``, a flat Struct whose fields (and their `msgspec.Meta`
    constraints) are the parameters: 400 naming the parameter when one does not fit."""
    ints = _integer_fields(cast("Hashable", type_))
    values: dict[str, Any] = {}
    for name, value in request.query_params.items():
        values[name] = int(value) if name in ints and _QUERY_INT.fullmatch(value) else value
    try:
        return msgspec.convert(values, type_)
    except msgspec.ValidationError as exc:
        raise _bad_request(exc, "query parameter") from None


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
    "read_query",
    "services",
]
