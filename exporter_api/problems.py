"""RFC 9457 problem details: every error response of the REST API is built here."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from exporter_api.errors import BadRequest, ExporterError, TooManyRequests

PROBLEM_CONTENT_TYPE = "application/problem+json"

_log = structlog.get_logger("exporter_api.problems")


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details object (`field` names the offending request field)."""

    title: str
    status: int
    type: str = "about:blank"
    detail: str | None = None
    instance: str | None = None
    field: str | None = None


_encoder = msgspec.json.Encoder()


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    field: str | None = None,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = Problem(
        title=title, status=status, detail=detail or None, field=field, instance=instance
    )
    return Response(
        _encoder.encode(body),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=dict(headers or {}),
    )


def problem_response(exc: ExporterError, instance: str | None = None) -> Response:
    """The problem JSON response for one of our errors."""
    headers: dict[str, str] = {}
    field = exc.field if isinstance(exc, BadRequest) else None
    if isinstance(exc, TooManyRequests) and exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, exc.retry_after_s))
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return problem(
        exc.status, exc.title, exc.detail, field=field, instance=instance, headers=headers
    )


async def _exporter_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ExporterError)
    return problem_response(exc, instance=request.url.path)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    return problem(
        exc.status_code,
        _reason(exc.status_code),
        exc.detail if exc.detail != _reason(exc.status_code) else None,
        instance=request.url.path,
        headers=headers,
    )


async def _unhandled(request: Request, exc: Exception) -> Response:
    # The exception text may hold anything (a DSN, a query): log only its type.
    _log.error("unhandled_error", path=request.url.path, error_type=type(exc).__name__)
    return problem(500, "Internal Server Error", instance=request.url.path)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def exception_handlers() -> dict[int | type[Exception], ExceptionHandler]:
    """Starlette exception handlers mapping every error to problem JSON."""
    return {
        ExporterError: _exporter_error,
        HTTPException: _http_exception,
        Exception: _unhandled,
    }


__all__ = ["PROBLEM_CONTENT_TYPE", "Problem", "exception_handlers", "problem", "problem_response"]
