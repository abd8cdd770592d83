"""/api/docs over HTTP: the page, its scripts and styles come from this server (vendored by
`make assets`), under a CSP that allows nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter_api.api import meta
from exporter_api.config import Settings
from tests.exporter_api.conftest import app_client


async def test_docs_page_and_its_assets_load(settings: Settings) -> None:
    async with app_client(settings) as client:
        page = await client.get("/api/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
        assert sorted(assets) == [
            "/static/api-docs.js",
            "/static/vendor/swagger-ui/swagger-ui-bundle.js",
            "/static/vendor/swagger-ui/swagger-ui.css",
        ]
        assert "<script>" not in page.text  # nothing inline: the CSP would block it
        for asset in assets:
            response = await client.get(asset)
            assert response.status_code == 200, asset
            assert len(response.content) > 100, asset
        bundle = await client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
        assert "SwaggerUIBundle" in bundle.text
        init = (await client.get("/static/api-docs.js")).text
        assert 'url: "/api/openapi.json"' in init
        assert "validatorUrl: null" in init  # no badge fetched from elsewhere
        assert (await client.get("/api/openapi.json")).status_code == 200


async def test_docs_page_without_assets_is_a_problem(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(meta, "_DOCS_BUNDLE", tmp_path / "missing.js")
    async with app_client(settings) as client:
        response = await client.get("/api/docs")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "make assets" in response.json()["detail"]
