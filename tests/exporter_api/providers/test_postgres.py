from __future__ import annotations

import csv
import io
import time

import anyio
import asyncpg
import pytest

from exporter_api.config import DatabaseConfig
from exporter_api.csvcodec import record_count, record_ends
from exporter_api.errors import DatabaseUnavailable, InvalidCredentials, QueryFailed
from exporter_api.providers.base import ExportColumn, ExportRequest
from exporter_api.providers.postgres import PostgresProvider
from tests.exporter_api.providers.conftest import ALICE_PASSWORD
from tests.exporter_api.providers.sinks import CollectingSink
from tests.services import PostgresCluster, free_port

PARAMS = {"manager_id": "m1", "stream_id": "s1", "login": "alice", "database_id": "pg"}
ORDERS_SQL = """
-- orders of the user's manager/stream; ':manager_id' in a literal is not a parameter
SELECT order_id, customer, amount, note
FROM orders
WHERE manager_id = :manager_id AND stream_id = :stream_id AND ':manager_id' <> ''
ORDER BY order_id;
"""


async def test_login_with_real_roles(provider: PostgresProvider) -> None:
    await provider.verify_login("alice", ALICE_PASSWORD)
    with pytest.raises(InvalidCredentials):
        await provider.verify_login("alice", "wrong")
    with pytest.raises(InvalidCredentials):
        await provider.verify_login("nobody", ALICE_PASSWORD)


async def test_unreachable_database_is_unavailable() -> None:
    provider = PostgresProvider(
        DatabaseConfig(
            id="gone",
            display_name="Gone",
            provider="postgres",
            dsn=f"postgresql://127.0.0.1:{free_port()}/x",
            connect_timeout_s=2,
        )
    )
    with pytest.raises(DatabaseUnavailable) as info:
        await provider.verify_login("alice", ALICE_PASSWORD)
    assert ALICE_PASSWORD not in str(info.value)


async def test_copy_export_counts_rows_per_chunk(
    provider: PostgresProvider, pg: PostgresCluster, pg_db: str
) -> None:
    sink = CollectingSink()
    request = ExportRequest(sql=ORDERS_SQL, params=PARAMS)
    result = await provider.export("alice", ALICE_PASSWORD, request, sink)
    expected = int(
        pg.psql(
            "SELECT count(*) FROM orders WHERE manager_id='m1' AND stream_id='s1'",
            db=pg_db.rsplit("/", 1)[1],
        )
    )
    assert result.rows == expected == sum(sink.rows)
    assert len(sink.chunks) > 1  # streamed in chunks, each with its own row count
    assert result.bytes == len(sink.data)
    records = list(csv.reader(io.StringIO(sink.data.decode())))
    assert records[0] == ["order_id", "customer", "amount", "note"]
    assert len(records) == expected + 1
    assert records[10][3] == "multi\nline"  # quoted line breaks are not row ends
    assert records[1][1] == 'Acme, "Inc" 3'
    assert records[2][1] == "ООО Ромашка 6"


async def test_custom_columns_delimiter_and_cp1251(provider: PostgresProvider) -> None:
    sink = CollectingSink()
    request = ExportRequest(
        sql=ORDERS_SQL,
        params=PARAMS,
        columns=[ExportColumn("customer", "Customer"), ExportColumn("order_id", "OrderId")],
        delimiter=";",
        encoding="cp1251",
    )
    result = await provider.export("alice", ALICE_PASSWORD, request, sink)
    text = sink.data.decode("cp1251")
    lines = text.splitlines()
    assert lines[0] == "Customer;OrderId"
    assert lines[1] == '"Acme, ""Inc"" 3";3'
    assert lines[2] == "ООО Ромашка 6;6"
    assert result.rows == len(lines) - 1


async def test_no_rows_writes_nothing(provider: PostgresProvider) -> None:
    sink = CollectingSink()
    params = {**PARAMS, "stream_id": "nope"}
    result = await provider.export(
        "alice", ALICE_PASSWORD, ExportRequest(sql=ORDERS_SQL, params=params), sink
    )
    assert (result.rows, result.bytes, sink.chunks) == (0, 0, [])


async def test_parameters_are_never_spliced(provider: PostgresProvider) -> None:
    sink = CollectingSink()
    evil = {**PARAMS, "stream_id": "s1' OR '1'='1"}
    result = await provider.export(
        "alice", ALICE_PASSWORD, ExportRequest(sql=ORDERS_SQL, params=evil), sink
    )
    assert result.rows == 0


async def test_statement_timeout(provider: PostgresProvider) -> None:
    request = ExportRequest(sql="SELECT pg_sleep(5)", params={}, statement_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(QueryFailed) as info:
        await provider.export("alice", ALICE_PASSWORD, request, CollectingSink())
    assert info.value.detail == "the query exceeded the statement timeout of 0.3 s"
    assert time.monotonic() - started < 3


async def _active_queries(pg: PostgresCluster, marker: str) -> int:
    conn = await asyncpg.connect(pg.dsn())
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'alice'"
            " AND state = 'active' AND query LIKE '%' || $1 || '%'",
            marker,
        )
        return count
    finally:
        await conn.close()


@pytest.mark.parametrize("while_streaming", [False, True])
async def test_cancel_stops_the_query_on_the_server(
    provider: PostgresProvider, pg: PostgresCluster, while_streaming: bool
) -> None:
    marker = f"cancel_marker_{int(while_streaming)}"
    if while_streaming:  # rows are flowing, the sink is slow
        sql = f"SELECT a.id, a.h, '{marker}' FROM big a, big b"
        sink = CollectingSink(delay_s=0.05, max_bytes=1)
    else:  # the server is busy before the first row
        sql = f"SELECT '{marker}', pg_sleep(30)"
        sink = CollectingSink()
    request = ExportRequest(sql=sql, params={})
    async with anyio.create_task_group() as tg:
        tg.start_soon(provider.export, "alice", ALICE_PASSWORD, request, sink)
        with anyio.fail_after(10):
            while await _active_queries(pg, marker) == 0:  # noqa: ASYNC110 - polls the server
                await anyio.sleep(0.05)
            if while_streaming:
                await sink.first_write.wait()
        tg.cancel_scope.cancel()
    # export() has returned: the query must be gone from the server within a second.
    deadline = time.monotonic() + 1.0
    while await _active_queries(pg, marker) and time.monotonic() < deadline:  # noqa: ASYNC110
        await anyio.sleep(0.05)
    assert await _active_queries(pg, marker) == 0


def test_csv_records_are_counted_outside_quotes() -> None:
    data = b'a,b\n1,"x\ny"\n2,"q""\n"\n3,z\n'
    assert record_count(data) == len(record_ends(data)) == 4
    assert record_count(b"") == 0
