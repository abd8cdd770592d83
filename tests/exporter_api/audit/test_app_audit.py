"""The audit trail of a running service, on both state stores: logins (failed, locked out,
throttled, succeeded), a run from start to end with the sha256 of its files, downloads by token
and by signed link, a cancel, a logout; run retention keeps the records; `exporter-api audit`
exports them."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Message

from exporter_api.app import create_app
from exporter_api.audit import AuditRecord
from exporter_api.config import Settings
from exporter_api.errors import StoreUnavailable
from exporter_api.services import Services
from tests.exporter_api.conftest import (
    DEMO_LOGIN,
    SALES,
    create_pg_database,
    demo_config_with,
    running_app,
)
from tests.services import PostgresCluster


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "sqlite":
        return settings
    pg: PostgresCluster = request.getfixturevalue("pg")
    return dataclasses.replace(
        settings,
        state_url=create_pg_database(pg, "audit"),
        jwt_key=b"j" * 32,
        vault_key=b"v" * 32,
    )


def _services(app: Starlette) -> Services:
    services: Services = app.state.services
    return services


async def _records(app: Starlette, **filters: Any) -> list[AuditRecord]:
    trail = _services(app).audit
    return [r async for r in trail.query("2000-01-01", "2100-01-01", **filters)]


async def _wait_for_end(client: httpx.AsyncClient, run_id: str, auth: dict[str, str]) -> None:
    with anyio.fail_after(20):
        while True:
            state = (await client.get(f"/api/runs/{run_id}", headers=auth)).json()
            if state["status"] not in ("Queued", "Running"):
                return
            await anyio.sleep(0.05)


async def _finished_run(client: httpx.AsyncClient) -> tuple[dict[str, str], str, dict[str, Any]]:
    """Logged in as USER1, a SALES run that has ended: the token header, its id, its files."""
    login = await client.post("/api/auth/login", json=DEMO_LOGIN)
    auth = {"Authorization": f"Bearer {login.json()['accessToken']}"}
    run_id = (await client.post("/api/runs", json=SALES, headers=auth)).json()["runId"]
    await _wait_for_end(client, run_id, auth)
    listed = (await client.get(f"/api/runs/{run_id}/files", headers=auth)).json()
    return auth, run_id, listed


async def test_logins_are_recorded_never_the_password(store_settings: Settings) -> None:
    app = create_app(store_settings)
    async with running_app(app) as client:
        for _ in range(5):  # the 5th failure locks (login, client) out
            bad = await client.post("/api/auth/login", json={**DEMO_LOGIN, "dbPassword": "nope"})
            assert bad.status_code == 401
        for _ in range(3):  # refused again and again: one record per lock-out window
            throttled = await client.post("/api/auth/login", json=DEMO_LOGIN)
            assert throttled.status_code == 429
        other = await client.post("/api/auth/login", json={**DEMO_LOGIN, "dbUsername": "USER2"})
        assert other.status_code == 200
        token = other.json()["accessToken"]
        logout = await client.post("/api/auth/logout", headers={"Authorization": f"Bearer {token}"})
        assert logout.status_code == 204
        records = await _records(app)
    actions = [(r.action, r.login) for r in records]
    assert actions == [
        *[("login.failed", "USER1")] * 5,
        ("login.locked_out", "USER1"),
        ("login.throttled", "USER1"),
        ("login.succeeded", "USER2"),
        ("logout", "USER2"),
    ]
    assert {r.client for r in records} == {"127.0.0.1"}
    assert {r.database_id for r in records} == {"db-test"}
    assert records[0].details == {
        "manager_id": "m1",
        "stream_id": "s1",
        "reason": "invalid_credentials",
    }
    session = records[-2].details["session_id"]
    assert records[-1].details == {"session_id": session}
    text = json.dumps([r.details for r in records])
    assert "nope" not in text
    assert "demo" not in text
    assert token not in text


async def test_a_run_its_downloads_and_its_end_are_recorded(store_settings: Settings) -> None:
    app = create_app(store_settings)
    async with running_app(app) as client:
        auth, run_id, listed = await _finished_run(client)
        first = listed["files"][0]
        by_token = await client.get(f"/api/runs/{run_id}/files/{first['fileId']}", headers=auth)
        assert by_token.status_code == 200
        by_link = await client.get(listed["zipUrl"])  # no token: the signed link alone
        assert by_link.status_code == 200
        records = await _records(app, login="user1")

        # Retention of the run (and its files) keeps every record of it.
        engine = app.state.runs.engine
        engine.retention.days = 1
        assert await engine.retention.sweep(datetime.now(UTC) + timedelta(days=2)) == [run_id]
        assert (await client.get(f"/api/runs/{run_id}", headers=auth)).status_code == 404
        assert await _records(app, login="user1") == records

    by_action = {r.action: r for r in records}
    assert [r.action for r in records] == [
        "login.succeeded",
        "run.started",
        "run.ended",
        "download.file",
        "download.zip",
    ]
    started = by_action["run.started"]
    assert started.run_id == run_id
    assert started.client == "127.0.0.1"
    assert started.details["manager_id"] == "m1"
    assert started.details["stream_id"] == "s1"
    assert started.details["mode"] == "SingleGroup"
    [script] = started.details["scripts"]
    assert script["group_id"] == "g-sales"
    assert script["script_id"] == "s-orders"
    assert script["export_mode"] == "AllColumns"
    assert script["variants"]
    assert script["columns"]
    assert script["format"]["type"] == "csv"

    ended = by_action["run.ended"]
    assert ended.run_id == run_id
    assert ended.details["status"] == "Success"
    files = ended.details["files"]
    assert [f["file_id"] for f in files] == [f["fileId"] for f in listed["files"]]
    assert ended.details["rows"] == sum(f["rows"] for f in files) > 0
    assert ended.details["bytes"] == sum(f["size_bytes"] for f in files)
    # The sha256 recorded is the downloaded content's.
    assert files[0]["sha256"] == hashlib.sha256(by_token.content).hexdigest()

    file_record = by_action["download.file"]
    assert file_record.details["via"] == "token"
    assert file_record.details["files"] == [
        {"file_id": first["fileId"], "name": first["name"], "sha256": first["sha256"]}
    ]
    zip_record = by_action["download.zip"]
    assert zip_record.details["via"] == "link"
    assert len(zip_record.details["files"]) == len(files)
    assert "sig" not in json.dumps(zip_record.details)


@asynccontextmanager
async def _download_held_open(
    app: Starlette, path: str, headers: dict[str, str]
) -> AsyncIterator[None]:
    """A download of ``path`` (a plain ASGI call) whose client got the status line and the
    first bytes and then reads no more, until the block ends: it holds a download slot."""
    first_body, done = anyio.Event(), anyio.Event()
    statuses: list[int] = []

    async def receive() -> Message:
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif not first_body.is_set():
            first_body.set()
            await done.wait()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, scope, receive, send)
        try:
            with anyio.fail_after(10):
                await first_body.wait()
            assert statuses == [200]
            yield
        finally:
            done.set()


async def test_only_downloads_served_are_recorded(settings: Settings, tmp_path: Path) -> None:
    """A download refused -- file gone (404), range outside the file (416), too many at once
    (429) -- leaves no record, by token or by signed link, nor does a HEAD (the headers
    alone); one served leaves exactly one."""
    config = demo_config_with(tmp_path, "max_downloads_per_user = 1")
    app = create_app(dataclasses.replace(settings, config_path=config))
    async with running_app(app) as client:
        auth, run_id, listed = await _finished_run(client)
        first, gone = listed["files"][:2]
        first_path = f"/api/runs/{run_id}/files/{first['fileId']}"
        gone_path = f"/api/runs/{run_id}/files/{gone['fileId']}"
        zip_path = f"/api/runs/{run_id}/files.zip"

        past_the_end = {"Range": f"bytes={first['sizeBytes']}-"}
        for url, headers in ((first_path, auth), (first["downloadUrl"], {})):
            refused = await client.get(url, headers={**headers, **past_the_end})
            assert refused.status_code == 416
        (app.state.runs.files_root / run_id / gone["name"]).unlink()
        for url, headers in ((gone_path, auth), (gone["downloadUrl"], {})):
            assert (await client.get(url, headers=headers)).status_code == 404
        async with _download_held_open(app, first_path, auth):  # the user's one slot
            for url, headers in (
                (first_path, auth),
                (first["downloadUrl"], {}),
                (zip_path, auth),
                (listed["zipUrl"], {}),
            ):
                assert (await client.get(url, headers=headers)).status_code == 429
        held = [r.action for r in await _records(app) if r.action.startswith("download.")]
        assert held == ["download.file"]  # the download holding the slot was served

        for url, headers in ((first_path, auth), (first["downloadUrl"], {}), (zip_path, auth)):
            assert (await client.head(url, headers=headers)).status_code == 200  # not recorded
            assert (await client.get(url, headers=headers)).status_code == 200
        ranged = await client.get(first["downloadUrl"], headers={"Range": "bytes=1-"})
        assert ranged.status_code == 206

        # A download whose record cannot be stored is refused before its status line.
        with pytest.MonkeyPatch.context() as patch:

            async def unsaved(*args: Any, **kwargs: Any) -> None:
                raise StoreUnavailable()

            patch.setattr(_services(app).audit, "record", unsaved)
            unrecorded = await client.get(listed["zipUrl"])
            assert unrecorded.status_code == 503
            assert unrecorded.headers["content-type"] == "application/problem+json"
        records = [r for r in await _records(app) if r.action.startswith("download.")]

    assert [(r.action, r.details["via"], "range" in r.details) for r in records] == [
        ("download.file", "token", False),  # held open
        ("download.file", "token", False),
        ("download.file", "link", False),
        ("download.zip", "token", False),
        ("download.file", "link", True),
    ]
    one_file = [{"file_id": first["fileId"], "name": first["name"], "sha256": first["sha256"]}]
    assert [r.details["files"] for r in records if r.action == "download.file"] == [one_file] * 4


async def test_a_cancel_and_the_run_it_ended_are_recorded(store_settings: Settings) -> None:
    app = create_app(store_settings)
    async with running_app(app) as client:
        login = await client.post("/api/auth/login", json=DEMO_LOGIN)
        auth = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        # A draining instance only queues new runs: this one stays Queued until cancelled.
        await app.state.runs.engine.drain(grace_s=0)
        run_id = (await client.post("/api/runs", json=SALES, headers=auth)).json()["runId"]
        cancelled = await client.post(f"/api/runs/{run_id}/cancel", headers=auth)
        assert cancelled.status_code == 202
        assert cancelled.json()["status"] == "Cancelled"
        records = await _records(app)
    assert [r.action for r in records] == [
        "login.succeeded",
        "run.started",
        "run.ended",
        "run.cancel_requested",
    ]
    assert records[2].details["status"] == "Cancelled"
    assert records[2].details["files"] == []
    assert records[3].run_id == run_id
    assert records[3].details == {"status": "Cancelled"}


def test_the_audit_command_exports_csv_and_json(store_settings: Settings) -> None:
    settings = store_settings
    store_args = ["--state-url", settings.state_url] if settings.state_url else []

    async def fill() -> None:
        app = create_app(settings)
        async with running_app(app) as client:
            for user in ("USER1", "USER2"):
                ok = await client.post("/api/auth/login", json={**DEMO_LOGIN, "dbUsername": user})
                assert ok.status_code == 200

    anyio.run(fill)

    def audit(*args: str) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "exporter_api",
                "audit",
                "--data-dir",
                str(settings.data_dir),
                "--since",
                "2000-01-01",
                *store_args,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    rows = list(csv.DictReader(io.StringIO(audit())))
    assert [(r["action"], r["login"]) for r in rows] == [
        ("login.succeeded", "USER1"),
        ("login.succeeded", "USER2"),
    ]
    assert json.loads(rows[0]["details"])["manager_id"] == "m1"
    lines = audit("--login", "user2", "--format", "json").splitlines()
    assert [json.loads(line)["login"] for line in lines] == ["USER2"]
    assert (
        audit("--until", "2001-01-01")
        == "event_id,at,action,login,database_id,client,run_id,details\n"
    )


async def test_each_script_is_recorded_and_served_in_its_own_format(
    settings: Settings, tmp_path: Path
) -> None:
    # s-payments uses the excel-ru profile, made cp1251 here while [output] stays UTF-8;
    # s-orders is chosen as XLSX by the run.
    config = demo_config_with(tmp_path, "")
    text = config.read_text("utf-8")
    assert 'encoding = "utf-8-sig"' in text
    config.write_text(text.replace('encoding = "utf-8-sig"', 'encoding = "cp1251"', 1), "utf-8")
    app = create_app(dataclasses.replace(settings, config_path=config))
    body = {
        "mode": "SingleGroup",
        "selection": {
            "groups": [
                {
                    "groupId": "g-sales",
                    "enabled": True,
                    "scripts": [
                        {
                            "scriptId": "s-orders",
                            "enabled": True,
                            "exportMode": "AllColumns",
                            "format": "xlsx",
                        },
                        {"scriptId": "s-payments", "enabled": True, "exportMode": "AllColumns"},
                        {"scriptId": "s-customers", "enabled": True, "exportMode": "AllColumns"},
                    ],
                }
            ]
        },
    }
    async with running_app(app) as client:
        login = await client.post("/api/auth/login", json=DEMO_LOGIN)
        auth = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        created = await client.post("/api/runs", json=body, headers=auth)
        assert created.status_code == 201, created.text
        run_id = created.json()["runId"]
        await _wait_for_end(client, run_id, auth)
        listed = (await client.get(f"/api/runs/{run_id}/files", headers=auth)).json()
        first: dict[str, dict[str, Any]] = {}
        for f in listed["files"]:
            first.setdefault(f["scriptId"], f)
        served: dict[str, str] = {}
        for script_id, f in first.items():
            got = await client.get(f"/api/runs/{run_id}/files/{f['fileId']}", headers=auth)
            assert got.status_code == 200
            served[script_id] = got.headers["content-type"]
        [started] = [r for r in await _records(app) if r.action == "run.started"]

    win = "text/csv; charset=windows-1251"
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert served == {"s-orders": xlsx, "s-payments": win, "s-customers": "text/csv; charset=utf-8"}
    assert {s: f["mediaType"] for s, f in first.items()} == served
    formats = {s["script_id"]: s["format"] for s in started.details["scripts"]}
    assert formats == {
        "s-orders": {"type": "xlsx", "profile": None},
        "s-payments": {
            "type": "csv",
            "profile": "excel-ru",
            "delimiter": ";",
            "encoding": "cp1251",
            "header": True,
            "decimal_separator": ",",
            "date_format": "dd.mm.yyyy",
        },
        "s-customers": {
            "type": "csv",
            "profile": None,
            "delimiter": ",",
            "encoding": "utf-8",
            "header": True,
            "decimal_separator": ".",
            "date_format": "iso",
        },
    }
    assert "format" not in started.details  # no run-wide format: each script has its own
