"""PostgreSQL driver errors read as their real cause (issue 8.5), against a real server.

A lost connection, a full disk in the sink, a timeout, a missing privilege, a syntax error, an
unreachable or refusing server: each gets a message a user can act on, naming the database id
and never the DSN or the password.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from exporter_api.config import DatabaseConfig
from exporter_api.errors import (
    DatabaseUnavailable,
    ExporterError,
    Forbidden,
    InvalidCredentials,
    QueryFailed,
)
from exporter_api.providers.base import ExportRequest
from exporter_api.providers.postgres import PostgresProvider
from tests.exporter_api.conftest import create_pg_database
from tests.exporter_api.providers.conftest import ALICE_PASSWORD
from tests.exporter_api.providers.sinks import CollectingSink, FailingSink
from tests.services import PostgresCluster, free_port

STREAMING = "SELECT i, md5(i::text), '{marker}' FROM generate_series(1, 5000000) i"
BUSY = "SELECT '{marker}', pg_sleep(30)"


@pytest.fixture
async def monitor(pg: PostgresCluster) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg.dsn())
    try:
        yield conn
    finally:
        await conn.close()


async def _backend_pids(monitor: asyncpg.Connection, marker: str) -> list[int]:
    rows = await monitor.fetch(
        "SELECT pid FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid() AND query LIKE '%' || $1 || '%'",
        marker,
    )
    return [r["pid"] for r in rows]


async def _when_running(monitor: asyncpg.Connection, marker: str) -> int:
    with anyio.fail_after(10):
        while not (pids := await _backend_pids(monitor, marker)):  # noqa: ASYNC110 - polls
            await anyio.sleep(0.02)
    return pids[0]


def _provider(dsn: str, database_id: str = "pg") -> PostgresProvider:
    return PostgresProvider(
        DatabaseConfig(
            id=database_id, display_name="PG", provider="postgres", dsn=dsn, connect_timeout_s=3
        )
    )


def _assert_credential_free(error: ExporterError, pg: PostgresCluster) -> None:
    for secret in (ALICE_PASSWORD, pg.password, f":{pg.port}", "postgresql://"):
        assert secret not in str(error)
        assert secret not in error.detail


@pytest.mark.parametrize("sql", [STREAMING, BUSY], ids=["streaming", "busy"])
async def test_a_terminated_backend_reads_as_a_lost_connection(
    provider: PostgresProvider, pg: PostgresCluster, monitor: asyncpg.Connection, sql: str
) -> None:
    marker = f"lost_{len(sql)}"
    sink = CollectingSink(max_bytes=1)
    request = ExportRequest(sql=sql.format(marker=marker), params={})
    async with anyio.create_task_group() as tg:

        async def terminate() -> None:
            pid = await _when_running(monitor, marker)
            if sql is STREAMING:
                await sink.first_write.wait()
            await monitor.execute("SELECT pg_terminate_backend($1)", pid)

        tg.start_soon(terminate)
        with pytest.raises(DatabaseUnavailable) as info, anyio.fail_after(10):
            await provider.export("alice", ALICE_PASSWORD, request, sink)
    assert info.value.detail == "the database connection was lost (database pg)"
    _assert_credential_free(info.value, pg)


async def test_a_cancel_by_someone_else_is_not_a_timeout(
    provider: PostgresProvider, monitor: asyncpg.Connection
) -> None:
    marker = "dba_cancel"
    request = ExportRequest(sql=BUSY.format(marker=marker), params={})
    async with anyio.create_task_group() as tg:

        async def cancel() -> None:
            pid = await _when_running(monitor, marker)
            await monitor.execute("SELECT pg_cancel_backend($1)", pid)

        tg.start_soon(cancel)
        with pytest.raises(QueryFailed) as info, anyio.fail_after(10):
            await provider.export("alice", ALICE_PASSWORD, request, CollectingSink())
    assert info.value.detail == "the query was cancelled on the database server (57014)"


@pytest.mark.parametrize("kind", ["disk_full", "domain_error"])
async def test_sink_errors_pass_through_and_stop_the_query(
    provider: PostgresProvider, monitor: asyncpg.Connection, kind: str
) -> None:
    # The sink runs inside asyncpg's copy_out: its full disk must not read as a lost database.
    error: Exception = (
        OSError(errno.ENOSPC, "No space left on device")
        if kind == "disk_full"
        else QueryFailed("a domain error of the file writer")
    )
    marker = f"sink_{kind}"
    request = ExportRequest(sql=STREAMING.format(marker=marker), params={})
    with pytest.raises(type(error)) as info, anyio.fail_after(10):
        await provider.export("alice", ALICE_PASSWORD, request, FailingSink(error, fail_on=2))
    assert info.value is error
    # export() returns only once the COPY is gone from the server.
    assert await _backend_pids(monitor, marker) == []


@pytest.mark.parametrize(
    ("sql", "detail"),
    [
        ("SELECT * FROM nope", 'SQL error 42P01: relation "nope" does not exist'),
        ("SELECT * FROM pg_authid", "permission denied for table pg_authid (42501)"),
        ("SELEC 1", 'SQL syntax error: syntax error at or near "SELEC" (42601)'),
        (  # the server echoes a value: had it been the password, it is masked
            f"SELECT '{ALICE_PASSWORD}'::int",
            'SQL error 22P02: invalid input syntax for type integer: "***"',
        ),
    ],
)
async def test_query_error_messages(
    provider: PostgresProvider, pg: PostgresCluster, sql: str, detail: str
) -> None:
    with pytest.raises(QueryFailed) as info:
        await provider.export(
            "alice", ALICE_PASSWORD, ExportRequest(sql=sql, params={}), CollectingSink()
        )
    assert info.value.detail == detail
    _assert_credential_free(info.value, pg)


async def test_unreachable_server(pg: PostgresCluster) -> None:
    provider = _provider(f"postgresql://127.0.0.1:{free_port()}/x", "db-x")
    for attempt in (
        provider.verify_login("alice", ALICE_PASSWORD),
        provider.export(
            "alice", ALICE_PASSWORD, ExportRequest(sql="SELECT 1", params={}), CollectingSink()
        ),
    ):
        with pytest.raises(DatabaseUnavailable) as info:
            await attempt
        assert info.value.detail == "database db-x is unreachable (connection refused)"
        _assert_credential_free(info.value, pg)


async def test_connection_refusals_name_their_cause(pg: PostgresCluster, pg_db: str) -> None:
    base = pg_db.rsplit("/", 1)[0]
    missing = _provider(f"{base}/no_such_database")
    with pytest.raises(DatabaseUnavailable) as info:
        await missing.verify_login("alice", ALICE_PASSWORD)
    assert info.value.detail == (
        "database pg is misconfigured: the database it names does not exist on the server (3D000)"
    )

    locked = create_pg_database(pg, "noconnect").rsplit("/", 1)[1]
    pg.psql(f'REVOKE CONNECT ON DATABASE "{locked}" FROM PUBLIC')
    with pytest.raises(Forbidden) as forbidden:
        await _provider(f"{base}/{locked}").verify_login("alice", ALICE_PASSWORD)
    assert forbidden.value.detail.startswith(f'permission denied for database "{locked}"')
    assert forbidden.value.detail.endswith("(42501)")

    pg.psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'prov_slots0') THEN "
        f"CREATE ROLE prov_slots0 LOGIN CONNECTION LIMIT 0 PASSWORD '{ALICE_PASSWORD}';"
        " END IF; END $$"
    )
    with pytest.raises(DatabaseUnavailable) as full:
        await _provider(pg_db).verify_login("prov_slots0", ALICE_PASSWORD)
    assert full.value.detail == "database pg has no free connections (53300)"

    with pytest.raises(InvalidCredentials):
        await _provider(pg_db).verify_login("alice", "not-the-password")
