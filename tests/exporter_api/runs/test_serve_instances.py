"""Two `exporter-api serve` processes with the same `--state-url` (and data directory, standing
in for shared storage) cooperate: a run driven by one that is killed with SIGKILL, or stopped
with SIGTERM, is carried on by the other and ends Success with every file whole."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx

from tests.bodies import login_body
from tests.exporter_api.conftest import create_pg_database
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD, ExportDatabase, write_catalog
from tests.exporter_api.runs.live import until_serving
from tests.services import PostgresCluster, free_port

ORDERS = {
    "mode": "SingleScript",
    "selection": {"groups": [{"groupId": "g-sales", "scripts": [{"scriptId": "s-orders"}]}]},
}
HEARTBEAT_S, TAKEOVER_S = 0.3, 1.5
KEY = base64.b64encode(b"k" * 32).decode()  # one key for both (a shared store makes none)


def _catalog(tmp_path: Path, export_db: ExportDatabase) -> Path:
    path = write_catalog(tmp_path / "cat", export_db)
    text = path.read_text(encoding="utf-8").replace(
        "[server]\n",
        f"[server]\nheartbeat_s = {HEARTBEAT_S}\ntakeover_after_s = {TAKEOVER_S}\n"
        "drain_grace_s = 0\n",  # SIGTERM hands the run over at once
        1,
    )
    path.write_text(text, encoding="utf-8")
    return path


@asynccontextmanager
async def serve(
    config: Path, data: Path, state_url: str, log: Path
) -> AsyncIterator[tuple[anyio.abc.Process, httpx.AsyncClient]]:
    port = free_port()
    with log.open("wb") as out:
        process = await anyio.open_process(
            [
                sys.executable,
                *("-m", "exporter_api", "serve", "--config", str(config)),
                *("--data-dir", str(data), "--state-url", state_url, "--port", str(port)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "EXPORTER_JWT_KEY": KEY, "EXPORTER_VAULT_KEY": KEY},
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            await until_serving(http, 30)
            yield process, http
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _login(http: httpx.AsyncClient) -> dict[str, str]:
    response = await http.post("/api/auth/login", json=login_body(USER1, USER1_PASSWORD, "db-pg"))
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['accessToken']}"}


async def _run(http: httpx.AsyncClient, auth: dict[str, str], run_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/runs/{run_id}", headers=auth)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def _variants(state: dict[str, Any]) -> list[str]:
    return [v["status"] for v in state["groups"][0]["scripts"][0]["variants"]]


async def _carried_on(
    tmp_path: Path, export_db: ExportDatabase, pg: PostgresCluster, stop: signal.Signals
) -> None:
    config = _catalog(tmp_path, export_db)
    state_url = create_pg_database(pg, "serve")
    data = tmp_path / "data"
    async with (
        serve(config, data, state_url, tmp_path / "a.log") as (a, http_a),
        serve(config, data, state_url, tmp_path / "b.log") as (_, http_b),
    ):
        auth = await _login(http_a)
        created = await http_a.post("/api/runs", json=ORDERS, headers=auth)
        run_id = created.json()["runId"]
        with anyio.fail_after(20):
            while _variants(await _run(http_b, auth, run_id))[:2] != ["Success", "Running"]:  # noqa: ASYNC110 - polling another process over HTTP
                await anyio.sleep(0.05)
        first = (await _run(http_b, auth, run_id))["files"][0]
        a.send_signal(stop)
        stopped = time.monotonic()
        await a.wait()
        with anyio.fail_after(20):
            # (Queued again for a moment once resumed: nothing of it runs until a slot is free)
            while (state := await _run(http_b, auth, run_id))["status"] in ("Queued", "Running"):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        carried_on = time.monotonic() - stopped
        for f in state["files"]:
            body = (await http_b.get(f["downloadUrl"])).content
            assert hashlib.sha256(body).hexdigest() == f["sha256"]
    a_log = (tmp_path / "a.log").read_text(encoding="utf-8")
    b_log = (tmp_path / "b.log").read_text(encoding="utf-8")
    assert "run_claimed" in b_log  # B carried it on
    assert run_id in b_log
    assert ("run_handed_over" in a_log) == (stop == signal.SIGTERM)
    assert state["status"] == "Success", state
    assert _variants(state) == ["Success", "Success", "NoData"]
    assert state["files"][0]["fileId"] == first["fileId"]  # the finished variant's file kept
    assert len(state["files"]) == 2
    assert carried_on < TAKEOVER_S + 5  # the rest of the run included


async def test_a_killed_instances_run_is_carried_on_by_the_other(
    tmp_path: Path, export_db: ExportDatabase, pg: PostgresCluster
) -> None:
    await _carried_on(tmp_path, export_db, pg, signal.SIGKILL)


async def test_a_stopped_instance_hands_its_run_to_the_other(
    tmp_path: Path, export_db: ExportDatabase, pg: PostgresCluster
) -> None:
    await _carried_on(tmp_path, export_db, pg, signal.SIGTERM)
