from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import msgspec
import pytest

from exporter_api import app as app_module
from exporter_api.app import create_app
from exporter_api.config import Settings, load_config
from tests.exporter_api.conftest import DEMO_LOGIN, NoRuns, app_client, running_app
from tests.services import exporter_serve


async def test_openapi_document(settings: Settings) -> None:
    async with app_client(settings) as client:
        response = await client.get("/api/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"] == "3.1.0"
    login = doc["paths"]["/api/auth/login"]["post"]
    ref = login["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(schema["required"]) == {
        "dbUsername",
        "dbPassword",
        "databaseId",
        "managerId",
        "streamId",
    }
    assert {"400", "401", "429", "503"} <= set(login["responses"])
    scripts = doc["paths"]["/api/catalog/scripts"]["get"]
    assert scripts["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/api/catalog/databases"]["get"]
    assert "Problem" in doc["components"]["schemas"]


async def test_unknown_routes_and_methods_are_problem_json(settings: Settings) -> None:
    async with app_client(settings) as client:
        missing = await client.get("/api/nope")
        wrong_method = await client.get("/api/auth/login")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["status"] == 405


async def test_console_index_served_at_root(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    static = tmp_path / "static"
    monkeypatch.setattr(app_module, "STATIC_DIR", static)
    async with app_client(settings) as client:
        absent = await client.get("/")
    assert absent.status_code == 404
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>console</title>", encoding="utf-8")
    (static / "app.js").write_text("console.log(1)", encoding="utf-8")
    async with app_client(settings) as client:
        index = await client.get("/")
        asset = await client.get("/static/app.js")
    assert index.status_code == 200
    assert "console" in index.text
    assert asset.status_code == 200


async def test_console_files_compressed_and_revalidated(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    static = tmp_path / "static"
    (static / "vendor").mkdir(parents=True)
    script = "export const x = 1;\n" * 200
    (static / "index.html").write_text("<!doctype html>" + "<p>console</p>" * 100, encoding="utf-8")
    (static / "app.js").write_text(script, encoding="utf-8")
    (static / "vendor" / "client.js").write_text(script, encoding="utf-8")
    monkeypatch.setattr(app_module, "STATIC_DIR", static)
    gzip = {"Accept-Encoding": "gzip"}
    async with app_client(settings) as client:
        index = await client.get("/", headers=gzip)
        asset = await client.get("/static/app.js", headers=gzip)
        vendored = await client.get("/static/vendor/client.js", headers=gzip)
        plain = await client.get("/static/app.js", headers={"Accept-Encoding": "identity"})
        again = await client.get("/static/app.js", headers={"If-None-Match": asset.headers["etag"]})
    for response in (index, asset, vendored):
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert int(response.headers["content-length"]) < len(script) / 4
    assert asset.text == script  # httpx decoded it
    assert asset.headers["cache-control"] == "no-cache"
    assert vendored.headers["cache-control"] == "public, max-age=86400"
    assert "content-encoding" not in plain.headers
    assert again.status_code == 304


def test_serve_runs_under_hypercorn_with_json_logs(settings: Settings, tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    served = exporter_serve(settings.config_path, settings.data_dir, log_path, timeout=60)
    with served as (proc, url), httpx.Client(base_url=url) as client:
        databases = client.get("/api/catalog/databases")
        login = client.post("/api/auth/login", json=DEMO_LOGIN)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(15)
    assert databases.json()["databases"][0]["id"] == "db-test"
    assert login.status_code == 200
    assert "Secure" not in login.headers["set-cookie"]  # plain http on loopback works
    events = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            events.append(record["event"])
            assert '"demo"' not in line  # the password is never logged
    assert "service_started" in events
    assert "login_succeeded" in events
    assert (settings.data_dir / "jwt.key").stat().st_mode & 0o077 == 0
    assert (settings.data_dir / "vault.key").stat().st_mode & 0o077 == 0


async def test_refused_cors_preflight_is_problem_json(settings: Settings) -> None:
    config = load_config(settings.config_path)
    config = msgspec.structs.replace(
        config,
        server=msgspec.structs.replace(config.server, cors_origins=["http://console.example"]),
    )
    app = create_app(settings, config, runs=NoRuns())
    preflight = {"Access-Control-Request-Method": "POST"}
    async with running_app(app) as client:
        ok = await client.options(
            "/api/auth/login", headers={**preflight, "Origin": "http://console.example"}
        )
        refused = await client.options(
            "/api/auth/login", headers={**preflight, "Origin": "http://evil.example"}
        )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://console.example"
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["detail"] == "Disallowed CORS origin"
