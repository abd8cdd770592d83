"""Fixtures for the export service: settings with a temporary data dir, a running app."""

from __future__ import annotations

import base64
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from exporter_api.app import create_app
from exporter_api.config import Settings, default_config_path, load_config
from exporter_api.providers import create_provider
from exporter_api.services import Services
from exporter_api.store import Store, open_store
from tests.bodies import group, login_body, run_body, script
from tests.services import PostgresCluster, free_port

# A run of the demo: the g-sales group's one script, every column.
SALES = run_body("SingleGroup", group("g-sales", script("s-orders")))

DEMO_LOGIN = login_body("USER1", "demo", "db-test")


class NoRuns:
    """The runs feature left out: these tests cover the auth/catalog layer on its own."""

    def __init__(self) -> None:
        self.routes: list[BaseRoute] = []
        self.services: Services | None = None

    @asynccontextmanager
    async def lifespan(self, services: Services) -> AsyncIterator[None]:
        self.services = services
        yield

    async def drain(self) -> list[str]:
        return []

    async def shutdown(self) -> None:
        pass


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose demo database is generated once per session (it takes seconds)."""
    data_dir = tmp_path_factory.mktemp("demo-data")
    config = load_config(default_config_path())
    for db in config.databases:
        provider = create_provider(db, data_dir, default_config_path().parent)
        anyio.run(provider.start)
    return data_dir


@pytest.fixture
def settings(tmp_path: Path, demo_data_dir: Path) -> Settings:
    data_dir = tmp_path / "var"
    demo = demo_data_dir / "demo"
    data_dir.mkdir()
    (data_dir / "demo").symlink_to(demo, target_is_directory=True)
    demo.mkdir(exist_ok=True)
    return Settings(config_path=default_config_path(), data_dir=data_dir)


def demo_config_with(tmp_path: Path, server_lines: str) -> Path:
    """A copy of the demo configuration (its SQL files too) with ``server_lines`` added to
    its ``[server]`` table; returns the copy's path."""
    config_dir = tmp_path / "config"
    shutil.copytree(default_config_path().parent, config_dir)
    config_path = config_dir / default_config_path().name
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(
        text.replace("[server]\n", f"[server]\n{server_lines}\n", 1), encoding="utf-8"
    )
    return config_path


@asynccontextmanager
async def running_app(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered and an httpx client speaking ASGI to it."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
        ) as client,
    ):
        yield client


def app_client(settings: Settings) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The demo app (without the runs feature) running, with a client.

    Use it inside the test (`async with app_client(settings) as client:`): pytest-asyncio runs
    async fixture setup and teardown in different tasks, and the app's lifespan task group must
    be entered and left in one task.
    """
    return running_app(create_app(settings, runs=NoRuns()))


async def ended_run(
    client: httpx.AsyncClient, run_id: str, auth: dict[str, str], limit_s: float = 20.0
) -> dict[str, Any]:
    """``GET /api/runs/{run_id}`` once the run has ended (a REST client has no event to await:
    it polls, failing the test after ``limit_s`` seconds)."""
    with anyio.fail_after(limit_s):
        while True:
            state: dict[str, Any] = (await client.get(f"/api/runs/{run_id}", headers=auth)).json()
            if state["status"] not in ("Queued", "Running"):
                return state
            await anyio.sleep(0.05)


def b64key(seed: bytes) -> str:
    return base64.urlsafe_b64encode(seed * (32 // len(seed))).decode()


def create_pg_database(pg: PostgresCluster, prefix: str) -> str:
    """A fresh database in the throwaway cluster; returns its superuser DSN."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    pg.psql(f'CREATE DATABASE "{name}"')
    return pg.dsn(db=name)


def pg_login_database(pg: PostgresCluster, prefix: str, role: str, password: str) -> str:
    """A fresh database and a login role ``role`` with ``password`` (users log in with their own
    database accounts); returns the DSN a catalog names (no credentials)."""
    name = create_pg_database(pg, prefix).rsplit("/", 1)[1]
    pg.psql(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
        f"CREATE ROLE {role} LOGIN PASSWORD '{password}'; END IF; END $$"
    )
    return f"postgresql://{pg.host}:{pg.port}/{name}"


_PG_LOGIN_CONFIG = """
[[databases]]
id = "pg"
display_name = "PostgreSQL"
provider = "postgres"
dsn = "{dsn}"
connect_timeout_s = {connect_timeout_s}

[[databases]]
id = "down"
display_name = "Unreachable"
provider = "postgres"
dsn = "postgresql://127.0.0.1:{closed_port}/nothing"
connect_timeout_s = 2

[[managers]]
id = "m1"
display_name = "Manager 1"
streams = [{{ id = "s1", display_name = "Stream 1" }}]

[[columns_profiles]]
id = "p"
items = [{{ id = "x", label = "X", source = "x" }}]

[[groups]]
id = "g"
display_name = "G"

[[groups.scripts]]
id = "s"
display_name = "S"
execution_lane = 0
columns_profile_id = "p"
variants = ["q.sql"]
"""


def pg_login_config(dsn: str, connect_timeout_s: int) -> str:
    """A catalog with the PostgreSQL database ``dsn`` (id ``pg``, one script ``s`` reading
    ``q.sql``) and an unreachable one (id ``down``, a closed port)."""
    return _PG_LOGIN_CONFIG.format(
        dsn=dsn, closed_port=free_port(), connect_timeout_s=connect_timeout_s
    )


def pg_store_settings(tmp_path: Path, pg: PostgresCluster, config_text: str) -> Settings:
    """Settings for ``config_text`` (written to tmp_path/exporter.toml) on a fresh PostgreSQL
    state store, with keys given (a shared store never generates them)."""
    config = tmp_path / "exporter.toml"
    config.write_text(config_text, encoding="utf-8")
    return Settings(
        config_path=config,
        data_dir=tmp_path / "var",
        state_url=create_pg_database(pg, "state"),
        jwt_key=b"j" * 32,
        vault_key=b"v" * 32,
    )


def pg_login_settings(
    tmp_path: Path, pg: PostgresCluster, dsn: str, query: str, connect_timeout_s: int
) -> Settings:
    """`pg_store_settings` for `pg_login_config` of ``dsn``, its script's ``q.sql`` being
    ``query``."""
    (tmp_path / "q.sql").write_text(query, encoding="utf-8")
    return pg_store_settings(tmp_path, pg, pg_login_config(dsn, connect_timeout_s))


@pytest.fixture(scope="module")
def pg_state_url(pg: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """A PostgreSQL database for the state store, one per test module."""
    return create_pg_database(pg, "state_" + request.module.__name__.rsplit(".", 1)[-1][:20])


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The state store on both backends (PostgreSQL: a fresh schema per test)."""
    if request.param == "sqlite":
        s = await open_store(tmp_path)
    else:
        pg: PostgresCluster = request.getfixturevalue("pg")
        s = await open_store(tmp_path, create_pg_database(pg, "store"))
    try:
        yield s
    finally:
        await s.aclose()
