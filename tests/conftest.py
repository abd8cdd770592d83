from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import PostgresCluster, RedisServer, postgres_cluster, redis_server


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster (scram-sha-256) shared by the session."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """A throwaway redis-server on a free port shared by the session."""
    with redis_server() as server:
        yield server
