from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exporter_api.errors import BadRequest, TooManyRequests
from exporter_api.problems import PROBLEM_CONTENT_TYPE, exception_handlers


async def _boom(request: Request) -> Response:
    raise RuntimeError("postgresql://u:secret@db/x exploded")


async def _bad(request: Request) -> Response:
    raise BadRequest("unknown group 'g-x'", field="selection.groups[0].groupId")


async def _busy(request: Request) -> Response:
    raise TooManyRequests("slow down", retry_after_s=7)


def _client() -> httpx.AsyncClient:
    app = Starlette(
        routes=[Route("/boom", _boom), Route("/bad", _bad), Route("/busy", _busy)],
        exception_handlers=exception_handlers(),
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_unhandled_errors_are_opaque_problem_json() -> None:
    async with _client() as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    # `type` is left out: RFC 9457 reads a missing type as "about:blank".
    assert response.json() == {"title": "Internal Server Error", "status": 500, "instance": "/boom"}


async def test_our_errors_carry_field_and_retry_after() -> None:
    async with _client() as client:
        bad = await client.get("/bad")
        busy = await client.get("/busy")
    assert bad.json()["field"] == "selection.groups[0].groupId"
    assert bad.json()["detail"] == "unknown group 'g-x'"
    assert busy.status_code == 429
    assert busy.headers["retry-after"] == "7"
