"""Fixtures of the runs tests: a PostgreSQL export database with two user roles, and a catalog
(TOML + SQL files) exercising lanes, variants, NoData, failures and a slow, cancellable query."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from exporter_api.config import ExportConfig, load_config
from tests.services import PostgresCluster

EXPORT_DB = "runs_exportdb"  # names of this package only: the cluster is session-wide
USER1, USER1_PASSWORD = "runs_user1", "pw-user1-Secret"
USER2, USER2_PASSWORD = "Иван_runs", "pw-ivan-Secret"  # a Cyrillic login gives Cyrillic file names

SLEEP = "CROSS JOIN pause"
PAUSE = "WITH pause AS MATERIALIZED (SELECT pg_sleep(0.4))\n"
SQL: dict[str, str] = {
    # lane 0
    "orders_v1.sql": f"{PAUSE}SELECT o.order_id, o.customer, o.amount FROM orders o {SLEEP}\n"
    "WHERE o.manager_id = :manager_id AND o.stream_id = :stream_id AND o.order_id % 3 = 0\n"
    "ORDER BY o.order_id;",
    "orders_v2.sql": f"{PAUSE}SELECT o.order_id, o.customer, o.amount FROM orders o {SLEEP}\n"
    "WHERE o.manager_id = :manager_id AND o.stream_id = :stream_id AND o.order_id % 3 = 1\n"
    "ORDER BY o.order_id;",
    "orders_v3.sql": "SELECT o.order_id, o.customer, o.amount FROM orders o\n"
    "WHERE o.manager_id = :manager_id AND o.amount < 0;",
    "empty_v1.sql": "SELECT order_id, customer, amount FROM orders WHERE false;",
    "empty_v2.sql": "SELECT order_id, customer, amount FROM orders WHERE order_id < 0;",
    # lane 1
    "customers_v1.sql": f"{PAUSE}SELECT o.order_id, o.customer, o.amount FROM orders o {SLEEP}\n"
    "WHERE o.stream_id = :stream_id ORDER BY o.order_id;",
    "customers_v2.sql": f"{PAUSE}SELECT o.order_id, o.customer, o.amount FROM orders o {SLEEP}\n"
    "WHERE o.stream_id = :stream_id AND o.amount > 500 ORDER BY o.order_id;",
    # lane 2
    "bad_v1.sql": "SELECT order_id, customer, amount FROM orders ORDER BY order_id LIMIT 5;",
    "bad_v2.sql": "SELECT order_id / (order_id - order_id) AS order_id, customer, amount\n"
    "FROM orders;",
    "bad_v3.sql": "SELECT order_id, customer, amount FROM orders ORDER BY order_id LIMIT 7;",
    # lane 3: a long query producing rows slowly, to be cancelled
    "slow_v1.sql": "SELECT g AS order_id, 'row ' || g AS customer, g AS amount\n"
    "FROM generate_series(1, 10000000) AS g CROSS JOIN LATERAL (SELECT pg_sleep(0.0002)) AS p;",
    # lane 4: ~60 MB of rows over ~1.5 s, in many chunks (progress throttling)
    "progress_v1.sql": "SELECT g AS order_id, repeat('x', 200) AS customer, g AS amount\n"
    "FROM generate_series(1, 300000) AS g\n"
    "WHERE CASE WHEN g % 20000 = 0 THEN pg_sleep(0.1) IS NOT NULL ELSE true END;",
}

CATALOG = """
[server]
max_active_runs_per_user = 3

[output]
encoding = "{encoding}"
file_name_template = "{{login}}_{{script_id}}_v{{variant}}.csv"

[[databases]]
id = "db-pg"
display_name = "PostgreSQL"
provider = "postgres"
dsn = "postgresql://{host}:{port}/{db}"
max_connections = {max_connections}
statement_timeout_s = {statement_timeout_s}

[[managers]]
id = "m1"
display_name = "Manager 1"
streams = [{{ id = "s1", display_name = "Stream 1" }}, {{ id = "s2", display_name = "Поток 2" }}]

[[columns_profiles]]
id = "orders_cols"
items = [
    {{ id = "order_id", label = "OrderId", source = "order_id" }},
    {{ id = "customer", label = "Клиент", source = "customer" }},
    {{ id = "amount", label = "Amount", source = "amount" }},
]

[[groups]]
id = "g-sales"
display_name = "Продажи"

[[groups.scripts]]
id = "s-orders"
display_name = "Orders"
execution_lane = 0
columns_profile_id = "orders_cols"
variants = ["sql/orders_v1.sql", "sql/orders_v2.sql", "sql/orders_v3.sql"]

[[groups.scripts]]
id = "s-customers"
display_name = "Customers"
execution_lane = 1
columns_profile_id = "orders_cols"
variants = ["sql/customers_v1.sql", "sql/customers_v2.sql"]

[[groups.scripts]]
id = "s-empty"
display_name = "Nothing"
execution_lane = 0
columns_profile_id = "orders_cols"
variants = ["sql/empty_v1.sql", "sql/empty_v2.sql"]

[[groups]]
id = "g-misc"
display_name = "Misc"

[[groups.scripts]]
id = "s-bad"
display_name = "Division by zero in variant 2"
execution_lane = 2
columns_profile_id = "orders_cols"
variants = ["sql/bad_v1.sql", "sql/bad_v2.sql", "sql/bad_v3.sql"]

[[groups]]
id = "g-slow"
display_name = "Slow"

[[groups.scripts]]
id = "s-slow"
display_name = "Slow and long"
execution_lane = 3
columns_profile_id = "orders_cols"
variants = ["sql/slow_v1.sql"]

[[groups.scripts]]
id = "s-progress"
display_name = "Many chunks"
execution_lane = 4
columns_profile_id = "orders_cols"
variants = ["sql/progress_v1.sql"]
"""

SETUP_SQL = f"""
CREATE ROLE {USER1} LOGIN PASSWORD '{USER1_PASSWORD}';
CREATE ROLE "{USER2}" LOGIN PASSWORD '{USER2_PASSWORD}';
CREATE TABLE orders (
    order_id integer PRIMARY KEY,
    manager_id text NOT NULL,
    stream_id text NOT NULL,
    customer text NOT NULL,
    amount numeric(12, 2) NOT NULL
);
INSERT INTO orders
SELECT i, 'm1', CASE WHEN i % 2 = 0 THEN 's1' ELSE 's2' END,
       CASE i % 3 WHEN 0 THEN 'ООО "Ромашка", ' || i WHEN 1 THEN 'Acme ' || i ELSE 'Globex' END,
       (i * 37 % 1000) + 0.5
FROM generate_series(1, 300) AS i;
GRANT SELECT ON orders TO {USER1}, "{USER2}";
"""


@dataclass(frozen=True)
class ExportDatabase:
    cluster: PostgresCluster
    name: str

    def psql(self, sql: str) -> str:
        return self.cluster.psql(sql, db=self.name)


@pytest.fixture(scope="session")
def export_db(pg: PostgresCluster) -> ExportDatabase:
    pg.psql(f"CREATE DATABASE {EXPORT_DB}")
    pg.psql(SETUP_SQL, db=EXPORT_DB)
    return ExportDatabase(pg, EXPORT_DB)


def write_catalog(
    directory: Path,
    db: ExportDatabase,
    *,
    encoding: str = "utf-8",
    max_connections: int = 4,
    statement_timeout_s: float = 60,
) -> Path:
    (directory / "sql").mkdir(parents=True, exist_ok=True)
    for name, sql in SQL.items():
        (directory / "sql" / name).write_text(sql + "\n", encoding="utf-8")
    path = directory / "exporter.toml"
    path.write_text(
        CATALOG.format(
            encoding=encoding,
            host=db.cluster.host,
            port=db.cluster.port,
            db=db.name,
            max_connections=max_connections,
            statement_timeout_s=statement_timeout_s,
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def catalog_path(tmp_path: Path, export_db: ExportDatabase) -> Path:
    return write_catalog(tmp_path / "catalog", export_db)


@pytest.fixture
def catalog(catalog_path: Path) -> ExportConfig:
    return load_config(catalog_path)


async def poll_until(check: Callable[[], Awaitable[bool]], limit_s: float = 10.0) -> None:
    """Wait until ``check()`` holds (fails the test after ``limit_s`` seconds)."""
    with anyio.fail_after(limit_s):
        while True:
            if await check():
                return
            await anyio.sleep(0.05)
