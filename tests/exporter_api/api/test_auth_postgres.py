"""Login through the REST API against real PostgreSQL roles, with the state in PostgreSQL too."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter_api.app import create_app
from exporter_api.config import Settings
from tests.bodies import login_body
from tests.exporter_api.conftest import (
    NoRuns,
    pg_login_database,
    pg_login_settings,
    running_app,
)
from tests.services import PostgresCluster

PASSWORD = "bob-Pa55-word"


@pytest.fixture(scope="module")
def pg_target(pg: PostgresCluster) -> str:
    return pg_login_database(pg, "login", "bob", PASSWORD)


@pytest.fixture
def pg_settings(tmp_path: Path, pg: PostgresCluster, pg_target: str) -> Settings:
    query = "SELECT 1 AS x WHERE :manager_id = 'm1'"
    return pg_login_settings(tmp_path, pg, pg_target, query, connect_timeout_s=3)


def _body(database_id: str = "pg", password: str = PASSWORD) -> dict[str, str]:
    return login_body("bob", password, database_id)


async def test_real_role_logs_in_wrong_password_401_unreachable_503(
    pg_settings: Settings, pg: PostgresCluster
) -> None:
    async with running_app(create_app(pg_settings, runs=NoRuns())) as client:
        ok = await client.post("/api/auth/login", json=_body())
        assert ok.status_code == 200
        token = ok.json()["accessToken"]
        wrong = await client.post("/api/auth/login", json=_body(password="nope"))
        assert wrong.status_code == 401
        down = await client.post("/api/auth/login", json=_body(database_id="down"))
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert PASSWORD not in down.text
        auth = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/api/catalog/scripts", headers=auth)).status_code == 200
        assert (await client.post("/api/auth/logout")).status_code == 204
        assert (await client.get("/api/catalog/scripts", headers=auth)).status_code == 401
    # The state lives in PostgreSQL: sessions there, the password nowhere in clear.
    state_db = (pg_settings.state_url or "").rsplit("/", 1)[1]
    dump = pg.psql("SELECT row_to_json(s)::text FROM sessions s", db=state_db)
    dump += pg.psql("SELECT row_to_json(c)::text FROM session_credentials c", db=state_db)
    assert "bob" in dump
    assert '"revoked_reason":"logout"' in dump
    assert PASSWORD not in dump
    assert not (pg_settings.data_dir / "state.sqlite3").exists()
