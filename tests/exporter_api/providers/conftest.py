"""A PostgreSQL database with a non-superuser role, shared by the postgres provider tests."""

from __future__ import annotations

import pytest

from exporter_api.config import DatabaseConfig
from exporter_api.providers.postgres import PostgresProvider
from tests.exporter_api.conftest import create_pg_database
from tests.services import PostgresCluster

ALICE_PASSWORD = "alice-Pa55"


@pytest.fixture(scope="session")
def pg_db(pg: PostgresCluster) -> str:
    """The DSN (without credentials) of a database where `alice` may read `orders` and `big`."""
    dsn = create_pg_database(pg, "provider")
    name = dsn.rsplit("/", 1)[1]
    pg.psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'alice') THEN "
        f"CREATE ROLE alice LOGIN PASSWORD '{ALICE_PASSWORD}'; END IF; END $$"
    )
    pg.psql(
        "CREATE TABLE orders (order_id int PRIMARY KEY, manager_id text, stream_id text,"
        " customer text, amount numeric(12,2), note text);"
        "INSERT INTO orders SELECT i, CASE WHEN i % 3 = 2 THEN 'm2' ELSE 'm1' END,"
        " CASE i % 3 WHEN 0 THEN 's1' WHEN 1 THEN 's2' ELSE 's3' END,"
        " CASE WHEN i % 2 = 0 THEN 'ООО Ромашка ' || i ELSE 'Acme, \"Inc\" ' || i END,"
        " i * 1.5, CASE WHEN i % 10 = 0 THEN E'multi\\nline' END"
        " FROM generate_series(1, 60000) i;"
        "CREATE TABLE big AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, 300000) i;"
        "GRANT SELECT ON orders, big TO alice;",
        db=name,
    )
    return f"postgresql://{pg.host}:{pg.port}/{name}"


@pytest.fixture
def provider(pg_db: str) -> PostgresProvider:
    return PostgresProvider(
        DatabaseConfig(
            id="pg", display_name="PG", provider="postgres", dsn=pg_db, connect_timeout_s=5
        )
    )
