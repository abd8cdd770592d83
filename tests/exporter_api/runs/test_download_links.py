"""Signed download links against the demo: a plain GET (no token) downloads a file or the zip;
links are scoped to their run and file, expire, die with the session, and never carry a token."""

from __future__ import annotations

import dataclasses
import io
import time
import zipfile
from pathlib import Path
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette

from exporter_api.app import create_app
from exporter_api.config import Settings
from exporter_api.services import Services
from tests.exporter_api.conftest import DEMO_LOGIN, SALES, demo_config_with, running_app


async def _login(client: httpx.AsyncClient, **changes: str) -> tuple[str, dict[str, str]]:
    response = await client.post("/api/auth/login", json={**DEMO_LOGIN, **changes})
    assert response.status_code == 200, response.text
    token: str = response.json()["accessToken"]
    return token, {"Authorization": f"Bearer {token}"}


async def _finished_run(client: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, Any]:
    run_id = (await client.post("/api/runs", json=SALES, headers=auth)).json()["runId"]
    with anyio.fail_after(20):
        while True:
            state: dict[str, Any] = (await client.get(f"/api/runs/{run_id}", headers=auth)).json()
            if state["status"] not in ("Queued", "Running"):
                return state
            await anyio.sleep(0.05)


def _services(app: Starlette) -> Services:
    services: Services = app.state.services
    return services


async def test_signed_links_download_without_a_token(settings: Settings) -> None:
    app = create_app(settings)
    async with running_app(app) as client:
        token, auth = await _login(client)
        state = await _finished_run(client, auth)
        run_id = state["runId"]
        assert state["status"] == "Success"
        listed = (await client.get(f"/api/runs/{run_id}/files", headers=auth)).json()
        assert [f["fileId"] for f in listed["files"]] == [f["fileId"] for f in state["files"]]
        first = listed["files"][0]
        url = first["downloadUrl"]
        assert url.startswith(f"/api/runs/{run_id}/files/{first['fileId']}?sig=")
        assert token not in url
        assert token.split(".")[2] not in url  # not even the JWT's signature

        client.cookies.clear()  # nothing but the link itself
        plain = await client.get(url)
        assert plain.status_code == 200
        assert plain.headers["content-disposition"].startswith("attachment;")
        assert plain.headers["cache-control"] == "private, no-store"
        assert plain.headers["x-content-sha256"] == first["sha256"]
        assert len(plain.content) == first["sizeBytes"]

        archive = await client.get(listed["zipUrl"])
        assert archive.status_code == 200
        names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
        assert sorted(names) == sorted(f["name"] for f in listed["files"])

        # Bearer downloads still work, on the bare path too.
        bare = f"/api/runs/{run_id}/files/{first['fileId']}"
        assert (await client.get(bare, headers=auth)).content == plain.content
        assert (await client.get(bare)).status_code == 401

        # Scoped: a file's link does not open another file, the zip, or another run.
        second = listed["files"][1]
        sig = url.split("?sig=", 1)[1]
        for wrong in (
            f"/api/runs/{run_id}/files/{second['fileId']}?sig={sig}",
            f"/api/runs/{run_id}/files.zip?sig={sig}",
            f"/api/runs/01HZZZZZZZZZZZZZZZZZZZZZZZ/files/{first['fileId']}?sig={sig}",
            f"{bare}?sig={sig[:-3]}xyz",
            f"{bare}?sig=",
        ):
            response = await client.get(wrong)
            assert response.status_code == 403, wrong
            assert response.headers["content-type"] == "application/problem+json"

        # Another user holding the link, with their own token: 404 as for any run of others.
        _, other = await _login(client, dbUsername="USER2")
        assert (await client.get(url, headers=other)).status_code == 404
        assert (await client.get(listed["zipUrl"], headers=other)).status_code == 404

        # Expired links are refused.
        links = _services(app).links
        session_id = (await _services(app).tokens.verify_access_token(token)).session_id
        old, _ = links.mint(run_id, first["fileId"], session_id, now=time.time() - 3600)
        expired = await client.get(f"{bare}?sig={old}")
        assert expired.status_code == 403
        assert "expired" in expired.json()["detail"]

        # Logout ends the session's links at once.
        await client.post("/api/auth/logout", headers={**auth, "X-Requested-With": "test"})
        ended = await client.get(url)
        assert ended.status_code == 403
        assert "session" in ended.json()["detail"]
        assert (await client.get(listed["zipUrl"])).status_code == 403


async def test_run_state_rebuilds_the_page(settings: Settings) -> None:
    """GET /api/runs/{runId} carries what the console shows: the tree and the files."""
    async with running_app(create_app(settings)) as client:
        _, auth = await _login(client)
        state = await _finished_run(client, auth)
        (group,) = state["groups"]
        (script,) = group["scripts"]
        assert [v["status"] for v in script["variants"]] == ["Success"] * 3
        by_id = {f["fileId"]: f for f in state["files"]}
        for variant in script["variants"]:
            file = by_id[variant["fileId"]]
            assert file["variant"] == variant["variant"]
            assert file["rows"] == variant["rowsExported"]
            assert (await client.get(file["downloadUrl"])).status_code == 200
        assert (await client.get(state["zipUrl"])).status_code == 200


async def test_files_recorded_before_media_types_are_listed_as_downloaded(
    settings: Settings, tmp_path: Path
) -> None:
    """A file recorded before migration 0008 (no media type) is a CSV in ``[output]
    encoding``: its listing, the run's state and its download all say the same charset."""
    config = demo_config_with(tmp_path, "")
    text = config.read_text("utf-8")
    assert '\nencoding = "utf-8" ' in text  # [output] encoding
    config.write_text(text.replace('\nencoding = "utf-8" ', '\nencoding = "cp1251" ', 1), "utf-8")
    app = create_app(dataclasses.replace(settings, config_path=config))
    async with running_app(app) as client:
        _, auth = await _login(client)
        run_id = (await _finished_run(client, auth))["runId"]
        await _services(app).store.execute(
            "UPDATE run_files SET media_type = NULL WHERE run_id = :run_id", {"run_id": run_id}
        )
        listed = (await client.get(f"/api/runs/{run_id}/files", headers=auth)).json()["files"]
        state = (await client.get(f"/api/runs/{run_id}", headers=auth)).json()["files"]
        served = [(await client.get(f["downloadUrl"])).headers["content-type"] for f in listed]
    assert served == ["text/csv; charset=windows-1251"] * len(listed) != []
    assert [f["mediaType"] for f in listed] == served
    assert [f["mediaType"] for f in state] == served
