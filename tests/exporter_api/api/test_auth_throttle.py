"""Login throttling under parallel attempts, through the real app, on both state stores.

Each burst counts the calls that reach the database (the provider's `verify_login`, wrapped)
and holds every call until all requests are decided: either asking the database or answered
without it. So the attempts overlap for sure, and nothing is ordered by sleeping.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import httpx
import pytest

from exporter_api.app import create_app
from exporter_api.config import Settings
from exporter_api.providers.base import DatabaseProvider
from exporter_api.services import Services
from tests.bodies import login_body
from tests.exporter_api.conftest import (
    DEMO_LOGIN,
    NoRuns,
    pg_login_database,
    pg_login_settings,
    running_app,
)
from tests.services import PostgresCluster

PARALLEL = 50
MAX_FAILURES = 5  # login_max_failures (the demo config and the default)
PASSWORD = "carol-Pa55-word"


class Burst:
    """Counts the calls reaching the database; each waits until all requests are decided."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.calls = 0
        self.answered_without_db = 0
        self.statuses: list[int] = []
        self.retry_after: list[int] = []
        self._decided = anyio.Event()

    def _settle(self) -> None:
        if self.calls + self.answered_without_db >= self.total:
            self._decided.set()

    def instrument(self, provider: DatabaseProvider, monkeypatch: pytest.MonkeyPatch) -> None:
        original = provider.verify_login

        async def counted(username: str, password: str) -> None:
            self.calls += 1
            self._settle()
            await self._decided.wait()
            await original(username, password)

        monkeypatch.setattr(provider, "verify_login", counted)

    async def run(self, clients: Sequence[httpx.AsyncClient], body: dict[str, str]) -> None:
        async def one(client: httpx.AsyncClient) -> None:
            response = await client.post("/api/auth/login", json=body)
            self.statuses.append(response.status_code)
            if response.status_code == 429:
                self.retry_after.append(int(response.headers["retry-after"]))
                assert response.headers["content-type"] == "application/problem+json"
                self.answered_without_db += 1
                self._settle()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(self.total):
                    tg.start_soon(one, clients[i % len(clients)])


async def _in_flight(services: Services) -> int:
    row = await services.store.fetch_one("SELECT COUNT(*) FROM login_attempts")
    assert row is not None
    return int(row[0])


async def test_parallel_wrong_logins_reach_the_database_five_times_sqlite_store(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = NoRuns()
    async with running_app(create_app(settings, runs=runs)) as client:
        assert runs.services is not None
        burst = Burst(PARALLEL)
        burst.instrument(runs.services.providers["db-test"], monkeypatch)
        await burst.run([client], {**DEMO_LOGIN, "dbPassword": "wrong"})
        counts = collections.Counter(burst.statuses)
        assert burst.calls == MAX_FAILURES
        assert counts == {401: MAX_FAILURES, 429: PARALLEL - MAX_FAILURES}
        assert all(1 <= s <= 60 for s in burst.retry_after)
        assert await _in_flight(runs.services) == 0
        # The five failures locked the key: even the right password waits now.
        locked = await client.post("/api/auth/login", json=DEMO_LOGIN)
        assert locked.status_code == 429
        assert burst.calls == MAX_FAILURES
        assert (
            await client.post("/api/auth/login", json={**DEMO_LOGIN, "dbUsername": "USER2"})
        ).status_code == 200


@pytest.fixture(scope="module")
def pg_target(pg: PostgresCluster) -> str:
    return pg_login_database(pg, "throttle", "carol", PASSWORD)


@pytest.fixture
def pg_settings(tmp_path: Path, pg: PostgresCluster, pg_target: str) -> Settings:
    return pg_login_settings(tmp_path, pg, pg_target, "SELECT 1 AS x", connect_timeout_s=5)


def _pg_body(database_id: str = "pg", password: str = PASSWORD) -> dict[str, str]:
    return login_body("carol", password, database_id)


async def test_parallel_wrong_logins_exact_across_two_instances_postgres_store(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two instances share the PostgreSQL store; real PostgreSQL refuses the password."""
    burst = Burst(PARALLEL)
    async with AsyncExitStack() as stack:
        clients = []
        services = []
        for _ in range(2):
            runs = NoRuns()
            clients.append(
                await stack.enter_async_context(running_app(create_app(pg_settings, runs=runs)))
            )
            assert runs.services is not None
            assert runs.services.store.backend == "postgres"
            burst.instrument(runs.services.providers["pg"], monkeypatch)
            services.append(runs.services)
        await burst.run(clients, _pg_body(password="wrong"))
        counts = collections.Counter(burst.statuses)
        assert burst.calls == MAX_FAILURES
        assert counts == {401: MAX_FAILURES, 429: PARALLEL - MAX_FAILURES}
        assert await _in_flight(services[0]) == 0
        assert (await clients[1].post("/api/auth/login", json=_pg_body())).status_code == 429


async def test_unreachable_database_does_not_count_as_a_failure(pg_settings: Settings) -> None:
    runs = NoRuns()
    async with running_app(create_app(pg_settings, runs=runs)) as client:
        assert runs.services is not None
        for _ in range(MAX_FAILURES + 2):
            down = await client.post("/api/auth/login", json=_pg_body(database_id="down"))
            assert down.status_code == 503
        assert await _in_flight(runs.services) == 0
        assert (await client.post("/api/auth/login", json=_pg_body())).status_code == 200
