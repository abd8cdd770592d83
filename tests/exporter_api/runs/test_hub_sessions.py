"""A revoked session loses its live hub connections at once (official Node client, demo app)."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from exporter_api.config import Settings, default_config_path
from tests.exporter_api.conftest import DEMO_LOGIN, SALES, demo_config_with
from tests.exporter_api.runs.live import (
    bearer,
    held_hub_watch,
    hub_watch,
    live_service,
    wait_for_type,
)

pytestmark = pytest.mark.compat

SAME_ORIGIN = {"X-Requested-With": "test"}


async def test_refresh_token_reuse_closes_the_sessions_connections(
    settings: Settings, tmp_path: Path
) -> None:
    config_path = demo_config_with(tmp_path, "refresh_reuse_grace_s = 0")
    async with live_service(config_path, settings.data_dir, "db-test") as service:
        http = service.http
        login = await http.post("/api/auth/login", json=DEMO_LOGIN)
        token = login.json()["accessToken"]
        stolen = login.cookies["exporter_refresh"]
        run_id = (await http.post("/api/runs", json=SALES, headers=bearer(token))).json()["runId"]
        # The rightful client rotates its refresh token ...
        assert (await http.post("/api/auth/refresh", headers=SAME_ORIGIN)).status_code == 200
        async with held_hub_watch(service, token, run_id) as (lines, _):
            with anyio.fail_after(10):
                await wait_for_type(lines, "state")  # run events may come first
            # ... then the old one is presented again: the whole session is revoked.
            async with httpx.AsyncClient(base_url=service.base) as thief:
                thief.cookies.set("exporter_refresh", stolen, path="/api/auth")
                reused = await thief.post("/api/auth/refresh", headers=SAME_ORIGIN)
                assert reused.status_code == 401
            with anyio.fail_after(2):
                closed = await wait_for_type(lines, "closed")
            assert "session has ended" in closed["message"]
        async with hub_watch(service, token, run_id) as again:
            pass
        assert again[0]["type"] == "connect_error"
        assert (await http.get(f"/api/runs/{run_id}", headers=bearer(token))).status_code == 401


async def test_a_session_ended_elsewhere_closes_its_connections(settings: Settings) -> None:
    """Revoked by another instance sharing the state store (here: straight in the store, past
    this process's TokenService), or expired: the connection is closed within a few seconds."""
    async with live_service(default_config_path(), settings.data_dir, "db-test") as service:
        http = service.http
        token = (await http.post("/api/auth/login", json=DEMO_LOGIN)).json()["accessToken"]
        async with httpx.AsyncClient(base_url=service.base) as elsewhere:
            other_login = await elsewhere.post("/api/auth/login", json=DEMO_LOGIN)
            other = other_login.json()["accessToken"]
        run_id = (await http.post("/api/runs", json=SALES, headers=bearer(token))).json()["runId"]
        services = service.app.state.services
        session_id = (await services.tokens.verify_access_token(token)).session_id
        async with (
            held_hub_watch(service, token, run_id) as (lines, _),
            held_hub_watch(service, other, run_id) as (other_lines, _),
        ):
            with anyio.fail_after(10):
                await wait_for_type(lines, "state")
                await wait_for_type(other_lines, "state")
            await services.store.execute(
                "UPDATE sessions SET revoked_at = '2026-01-01T00:00:00.000Z' WHERE id = :id",
                {"id": session_id},
            )
            with anyio.fail_after(5):
                closed = await wait_for_type(lines, "closed")
            assert "session has ended" in closed["message"]
            await anyio.sleep(0.5)
            # the other session keeps its connection
            assert "closed" not in [line["type"] for line in other_lines]
