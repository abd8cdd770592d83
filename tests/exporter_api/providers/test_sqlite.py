from __future__ import annotations

import csv
import errno
import io
import math
import random
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from exporter_api.config import default_config_path, load_config
from exporter_api.errors import DatabaseUnavailable, InvalidCredentials, QueryFailed
from exporter_api.providers.base import ExportColumn, ExportRequest
from exporter_api.providers.sqlite import SqliteProvider
from tests.exporter_api.providers.sinks import CollectingSink, FailingSink

DEMO = default_config_path()
# count, sum(amount), sum(customer_id), max(order_date) of the generated orders
FINGERPRINT = (30000, 15028850.0, 9015000, "2025-12-31")
PARAMS = {"manager_id": "m1", "stream_id": "s1", "login": "USER1", "database_id": "db-test"}


def _provider(data_dir: Path) -> SqliteProvider:
    db = load_config(DEMO).database("db-test")
    assert db is not None
    return SqliteProvider(db, data_dir, DEMO.parent)


@pytest.fixture
async def provider(demo_data_dir: Path) -> SqliteProvider:
    """The demo database, generated once per session by the `demo_data_dir` fixture."""
    return _provider(demo_data_dir)


def _script(script_id: str, variant: int = 1) -> str:
    config = load_config(DEMO)
    for group in config.groups:
        for script in group.scripts:
            if script.id == script_id:
                return script.variants[variant - 1].sql
    raise AssertionError(script_id)


def _direct(p: SqliteProvider, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
    with sqlite3.connect(p.path) as conn:
        return conn.execute(sql, args).fetchall()


async def test_demo_database_is_deterministic(provider: SqliteProvider) -> None:
    assert _direct(provider, "SELECT count(*) FROM ledger", ()) == [(2_000_000,)]
    fingerprint = _direct(
        provider,
        "SELECT count(*), round(sum(amount), 2), sum(customer_id), max(order_date) FROM orders",
        (),
    )
    assert fingerprint == [FINGERPRINT]


async def test_login(provider: SqliteProvider) -> None:
    await provider.verify_login("USER1", "demo")
    await provider.verify_login("USER2", "demo")
    with pytest.raises(InvalidCredentials):
        await provider.verify_login("USER1", "wrong")
    with pytest.raises(InvalidCredentials):
        await provider.verify_login("NOBODY", "demo")


async def test_missing_database_file_is_unavailable(tmp_path: Path) -> None:
    config = load_config(DEMO).database("db-test")
    assert config is not None
    p = SqliteProvider(config, tmp_path, tmp_path)  # no init_sql beside it: nothing generated
    p.init_sql = None
    await p.start()
    with pytest.raises(DatabaseUnavailable):
        await p.verify_login("USER1", "demo")


async def test_export_all_columns_uses_manager_and_stream(provider: SqliteProvider) -> None:
    sink = CollectingSink()
    request = ExportRequest(sql=_script("s-orders", 1), params=PARAMS, batch_rows=300)
    result = await provider.export("USER1", "demo", request, sink)
    expected = _direct(
        provider,
        "SELECT count(*) FROM orders WHERE manager_id='m1' AND stream_id='s1' AND status='open'",
        (),
    )[0][0]
    assert result.rows == expected == sum(sink.rows) > 300
    assert max(sink.rows) == 300  # batched
    assert result.bytes == len(sink.data)
    rows = list(csv.reader(io.StringIO(sink.data.decode())))
    assert rows[0] == ["order_id", "customer", "order_date", "city", "amount", "status"]
    assert len(rows) == expected + 1
    assert {r[5] for r in rows[1:]} == {"open"}


async def test_export_custom_columns_in_given_order(provider: SqliteProvider) -> None:
    sink = CollectingSink()
    columns = [ExportColumn("customer", "Customer"), ExportColumn("order_id", "OrderId")]
    request = ExportRequest(
        sql=_script("s-orders", 2), params=PARAMS, columns=columns, delimiter=";"
    )
    result = await provider.export("USER1", "demo", request, sink)
    lines = sink.lines
    assert lines[0] == "Customer;OrderId"
    assert len(lines) == result.rows + 1
    # Customer names with quotes are quoted like PostgreSQL does.
    assert any(line.startswith('"Umbrella ""Ltd""') for line in lines[1:])


async def test_no_rows_writes_nothing(provider: SqliteProvider) -> None:
    sink = CollectingSink()
    request = ExportRequest(sql=_script("s-payments", 3), params=PARAMS)
    result = await provider.export("USER1", "demo", request, sink)
    assert (result.rows, result.bytes, sink.chunks) == (0, 0, [])


async def test_cp1251_encoding(provider: SqliteProvider) -> None:
    sink = CollectingSink()
    request = ExportRequest(
        sql="SELECT name FROM customers WHERE customer_id = 18", params={}, encoding="cp1251"
    )
    await provider.export("USER1", "demo", request, sink)
    assert sink.data == "name\nООО Ромашка 18\n".encode("cp1251")


async def test_sql_error_is_query_failed(provider: SqliteProvider) -> None:
    with pytest.raises(QueryFailed, match="no such table"):
        await provider.export(
            "USER1", "demo", ExportRequest(sql="SELECT * FROM nope", params={}), CollectingSink()
        )


async def test_wrong_password_refuses_export(provider: SqliteProvider) -> None:
    with pytest.raises(InvalidCredentials):
        await provider.export(
            "USER1", "nope", ExportRequest(sql="SELECT 1", params={}), CollectingSink()
        )


async def test_statement_timeout(provider: SqliteProvider) -> None:
    slow = "SELECT count(*) FROM ledger a JOIN ledger b ON b.amount = a.amount"
    request = ExportRequest(sql=slow, params={}, statement_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(QueryFailed) as info:
        await provider.export("USER1", "demo", request, CollectingSink())
    assert info.value.detail == "the query exceeded the statement timeout of 0.3 s"
    assert time.monotonic() - started < 3


async def test_cancel_stops_the_worker_thread(provider: SqliteProvider) -> None:
    sink = CollectingSink(delay_s=0.05, max_bytes=1)
    request = ExportRequest(sql=_script("s-ledger"), params=PARAMS, batch_rows=1000)
    threads_before = threading.active_count()
    with anyio.move_on_after(0.5) as scope:
        await provider.export("USER1", "demo", request, sink)
    assert scope.cancelled_caught
    assert 0 < sum(sink.rows) < 2_000_000
    # export() returned only after its worker thread stopped reading.
    done = sum(sink.rows)
    await anyio.sleep(0.3)
    assert sum(sink.rows) == done
    assert threading.active_count() <= threads_before + 1


async def test_variants_really_filter_by_manager_and_stream(provider: SqliteProvider) -> None:
    ids: dict[str, set[str]] = {}
    for manager, stream in (("m1", "s1"), ("m1", "s2"), ("m2", "s3")):
        sink = CollectingSink()
        params = {**PARAMS, "manager_id": manager, "stream_id": stream}
        request = ExportRequest(sql=_script("s-orders", 2), params=params, header=False)
        await provider.export("USER1", "demo", request, sink)
        ids[stream] = {line.split(",", 1)[0] for line in sink.lines}
    assert all(ids.values())
    assert not ids["s1"] & ids["s2"]
    assert not ids["s1"] & ids["s3"]
    nothing = CollectingSink()
    mismatched = {**PARAMS, "manager_id": "m2", "stream_id": "s1"}
    await provider.export(
        "USER1", "demo", ExportRequest(sql=_script("s-orders", 2), params=mismatched), nothing
    )
    assert nothing.chunks == []


def test_import_computes_no_password_hash() -> None:
    # A module-level scrypt at import blocks whoever imports it (the app factory on the event
    # loop); the unknown-login dummy hash is computed on first use, on a worker thread.
    code = (
        "import exporter_api.security.passwords as p\n"
        "calls = []\n"
        "real = p.hash_password\n"
        "p.hash_password = lambda *a, **k: calls.append(1) or real(*a, **k)\n"
        "import exporter_api.providers.sqlite as s\n"
        "assert calls == [], calls\n"
        "assert s._check_password('x', None) is False\n"
        "assert calls == [1], calls\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_sink_errors_pass_through_unchanged(provider: SqliteProvider) -> None:
    # A full disk is the file writer's to report: not a database error, not an exception group.
    error = OSError(errno.ENOSPC, "No space left on device")
    sink = FailingSink(error, fail_on=2)
    request = ExportRequest(sql=_script("s-ledger"), params=PARAMS, batch_rows=1000)
    threads_before = threading.active_count()
    with pytest.raises(OSError, match="No space left") as info:
        await provider.export("USER1", "demo", request, sink)
    assert info.value is error
    assert len(sink.rows) == 2  # the query stopped at the failed write
    assert threading.active_count() <= threads_before + 1
    domain = QueryFailed("a domain error raised by the sink")
    with pytest.raises(QueryFailed) as raised:
        await provider.export("USER1", "demo", request, FailingSink(domain))
    assert raised.value is domain


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM nope", "SQL error: no such table: nope"),
        ("SELECT * FORM orders", 'SQL syntax error: near "FORM": syntax error'),
        (
            "DELETE FROM orders RETURNING order_id",
            "permission denied: exports may only read (attempt to write a readonly database)",
        ),
    ],
)
async def test_sql_error_messages(provider: SqliteProvider, sql: str, message: str) -> None:
    with pytest.raises(QueryFailed) as info:
        await provider.export("USER1", "demo", ExportRequest(sql=sql, params={}), CollectingSink())
    assert info.value.detail == message


_TRICKY = (
    "SELECT 1 AS id, 'plain' AS name, 1.5 AS amount, NULL AS note UNION ALL "
    "SELECT 2, 'with \"quotes\", and commas', -0.25, 'two' || char(10) || 'lines' UNION ALL "
    "SELECT 3, 'ООО Ромашка', 100.0, '' UNION ALL "
    "SELECT 4, 'semi;colon', 7, 'cr' || char(13) || 'here' ORDER BY 1"
)


@pytest.mark.parametrize("delimiter", [",", ";"])
@pytest.mark.parametrize("batch_rows", [1, 2, 5000])
async def test_csv_is_what_csv_writer_makes_of_the_values(
    provider: SqliteProvider, delimiter: str, batch_rows: int
) -> None:
    # Plain CSV is formatted in C (_sqlitecsv.c): byte for byte what csv.writer makes of the
    # same values (NULL as nothing), in batches of any size.
    expected = io.StringIO()
    writer = csv.writer(expected, delimiter=delimiter, lineterminator="\n")
    writer.writerow(["id", "name", "amount", "note"])
    writer.writerows(
        [(v if v is not None else "") for v in row] for row in _direct(provider, _TRICKY, ())
    )
    for columns in (
        None,
        [ExportColumn(source=c, label=c) for c in ("id", "name", "amount", "note")],
    ):
        sink = CollectingSink()
        request = ExportRequest(
            sql=_TRICKY, params={}, delimiter=delimiter, batch_rows=batch_rows, columns=columns
        )
        result = await provider.export("USER1", "demo", request, sink)
        assert result.rows == 4
        assert sink.data.decode("utf-8") == expected.getvalue()


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 5000])
async def test_control_characters_in_values_are_written_exactly(
    provider: SqliteProvider, batch_rows: int
) -> None:
    sql = (
        "SELECT 1 AS id, 'plain' AS name, 1.5 AS amount UNION ALL "
        "SELECT 2, 'say \"hi\", then go', NULL UNION ALL "
        "SELECT 3, 'a' || char(31) || 'b', 2 UNION ALL "
        "SELECT 4, char(31), -0.25 UNION ALL "
        "SELECT 5, 'last', 100.0 ORDER BY 1"
    )
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(["id", "name", "amount"])
    writer.writerows(
        [(v if v is not None else "") for v in row] for row in _direct(provider, sql, ())
    )
    sink = CollectingSink()
    request = ExportRequest(sql=sql, params={}, batch_rows=batch_rows)
    result = await provider.export("USER1", "demo", request, sink)
    assert result.rows == 5
    assert sink.data.decode("utf-8") == expected.getvalue()
    assert "a\x1fb" in expected.getvalue()


@pytest.mark.parametrize("sql", ["SELECT x'41FF42' AS a", "SELECT 1 AS a, x'FF' AS b"])
async def test_a_value_that_is_not_utf8_text_fails_clearly(
    provider: SqliteProvider, sql: str
) -> None:
    with pytest.raises(QueryFailed) as caught:
        await provider.export("USER1", "demo", ExportRequest(sql=sql, params={}), CollectingSink())
    assert caught.value.detail == (
        "SQL error: a value is not UTF-8 text (a BLOB, or text stored in another encoding)"
    )


async def test_blobs_of_utf8_text_are_written_as_their_text(provider: SqliteProvider) -> None:
    # As sqlite3 -csv writes them (SQLite's text of the bytes), one column or several.
    for sql, expected in (
        ("SELECT x'414243' AS a", b"a\nABC\n"),
        ("SELECT x'414243' AS a, NULL AS b, '' AS c", b"a,b,c\nABC,,\n"),
    ):
        sink = CollectingSink()
        await provider.export("USER1", "demo", ExportRequest(sql=sql, params={}), sink)
        assert sink.data == expected


async def test_a_row_of_one_empty_field_is_written_as_csv_writer_does(
    provider: SqliteProvider,
) -> None:
    # An empty line would be no row at all to a CSV reader: "" keeps the row.
    sql = "SELECT NULL AS a UNION ALL SELECT '' UNION ALL SELECT 'x'"
    sink = CollectingSink()
    await provider.export("USER1", "demo", ExportRequest(sql=sql, params={}), sink)
    assert sink.data == b'a\n""\n""\nx\n'


async def test_cancel_stops_a_running_read(provider: SqliteProvider) -> None:
    # A query that finds no row for a long time: cancelling interrupts the C read in SQLite.
    slow = "SELECT a.entry_id FROM ledger a JOIN ledger b ON b.amount = a.amount + 1e9"
    started = time.monotonic()
    with anyio.move_on_after(0.3) as scope:
        await provider.export("USER1", "demo", ExportRequest(sql=slow, params={}), CollectingSink())
    assert scope.cancelled_caught
    assert time.monotonic() - started < 3


async def test_cp1251_names_the_row_and_column(provider: SqliteProvider) -> None:
    sql = "SELECT 1 AS id, 'Москва' AS city UNION ALL SELECT 2, 'Snow ☃' ORDER BY 1"
    request = ExportRequest(sql=sql, params={}, encoding="cp1251")
    with pytest.raises(QueryFailed) as caught:
        await provider.export("USER1", "demo", request, CollectingSink())
    assert (
        caught.value.detail == "row 2, column 'city' holds '☃', which cannot be written in cp1251"
    )


_REALS = [1234567890.1234567, 0.1 + 0.2, 1 / 3, 2 / 3 * 1e10, 123456789012345678.0, 5e-324]


async def test_reals_are_written_as_the_same_double(provider: SqliteProvider) -> None:
    # SQLite's own text of a REAL has 15 significant digits (1234567890.12346); 16 or 17 are
    # written when 15 do not read back as the same double. Text SQLite already wrote exactly
    # stays as it was ("1.0e+16", "100.0").
    values = ", ".join(repr(v) for v in _REALS)
    sql = (
        f"SELECT value AS r FROM json_each('[{values}]')"
        " UNION ALL SELECT 1e16 UNION ALL SELECT 100.0"
        " UNION ALL SELECT 0.1 UNION ALL SELECT -2.5 UNION ALL SELECT 7"
        " UNION ALL SELECT 0.0001 UNION ALL SELECT -0.00012345 UNION ALL SELECT 123456789012345.0"
        " UNION ALL SELECT 1e15 UNION ALL SELECT 1e-05 UNION ALL SELECT 0.0"
    )
    sink = CollectingSink()
    await provider.export("USER1", "demo", ExportRequest(sql=sql, params={}), sink)
    written = [row[0] for row in csv.reader(io.StringIO(sink.data.decode()))][1:]
    assert [float(v) for v in written[: len(_REALS)]] == _REALS
    assert written[:2] == ["1234567890.1234567", "0.30000000000000004"]
    assert written[len(_REALS) :] == [
        *("1.0e+16", "100.0", "0.1", "-2.5", "7", "0.0001", "-0.00012345"),
        *("123456789012345.0", "1.0e+15", "1.0e-05", "0.0"),
    ]


async def test_random_reals_read_back_as_the_doubles_sqlite_holds(
    provider: SqliteProvider,
) -> None:
    # Doubles of every magnitude (random bits) and short decimals (the common case, formatted
    # without SQLite's conversion): each written text parses to the double SQLite holds (it
    # may parse the literals inexactly, so what it holds is the reference), and is SQLite's
    # own text wherever that reads back exactly.
    rng = random.Random(11)
    values = [
        struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(3000)
    ]
    values += [rng.randint(-(10**15), 10**15) / 10 ** rng.randint(0, 19) for _ in range(3000)]
    values += [round(rng.uniform(-1e6, 1e6), rng.randint(0, 4)) for _ in range(3000)]
    literals = ", ".join(f"({i}, {v!r})" for i, v in enumerate(values) if math.isfinite(v))
    query = f"SELECT column1 AS i, column2 AS r FROM (VALUES {literals})"
    held = {
        row[0]: row[1:]
        for row in _direct(provider, f"SELECT i, r, CAST(r AS TEXT) FROM ({query})", ())
    }
    sink = CollectingSink()
    await provider.export("USER1", "demo", ExportRequest(sql=query, params={}), sink)
    written = list(csv.reader(io.StringIO(sink.data.decode())))[1:]
    assert len(written) == len(held) > 8900
    assert all(float(text) == held[int(i)][0] for i, text in written)
    exact = [
        (text, held[int(i)][1])
        for i, text in written
        if float(str(held[int(i)][1])) == held[int(i)][0]
    ]
    assert len(exact) > 5000
    assert all(text == own for text, own in exact)
