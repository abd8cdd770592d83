from __future__ import annotations

import csv
import errno
import io
import math
import os
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
import structlog.testing

from exporter_api.config import default_config_path, load_config
from exporter_api.csvcodec import CsvEncoder
from exporter_api.errors import DatabaseUnavailable, InvalidCredentials, QueryFailed
from exporter_api.providers.base import ExportColumn, ExportRequest
from exporter_api.providers.sqlite import SqliteProvider, csv_reader
from tests.exporter_api.providers.sinks import CollectingSink, FailingSink
from tests.services import wait_until

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
async def test_csv_is_what_csv_encoder_makes_of_the_values(
    provider: SqliteProvider, delimiter: str, batch_rows: int
) -> None:
    # Plain CSV is formatted in C (_sqlitecsv.c): byte for byte what the rows path's
    # CsvEncoder makes of the same values (NULL as nothing, a lone CR quoted), in batches of
    # any size.
    encoder = CsvEncoder(delimiter, "utf-8", ["id", "name", "amount", "note"])
    expected = encoder.header() + encoder.encode(_direct(provider, _TRICKY, ()), 1)
    assert b'"cr\rhere"' in expected
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
        assert sink.data == expected


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


@pytest.mark.parametrize(
    "sql", ["SELECT CAST(x'41FF42' AS TEXT) AS a", "SELECT 1 AS a, CAST(x'FF' AS TEXT) AS b"]
)
async def test_a_value_that_is_not_utf8_text_fails_clearly(
    provider: SqliteProvider, sql: str
) -> None:
    with pytest.raises(QueryFailed) as caught:
        await provider.export("USER1", "demo", ExportRequest(sql=sql, params={}), CollectingSink())
    assert caught.value.detail == (
        "SQL error: a text value is not UTF-8 (text stored in another encoding)"
    )


async def test_blobs_are_written_in_hex(provider: SqliteProvider) -> None:
    # As PostgreSQL's COPY writes a bytea: any bytes, UTF-8 text or not, one column or several.
    for sql, expected in (
        ("SELECT x'414243' AS a", b"a\n\\x414243\n"),
        ("SELECT x'41FF0a22' AS a, NULL AS b, '' AS c, x'' AS d", b"a,b,c,d\n\\x41ff0a22,,,\\x\n"),
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


@pytest.fixture
def fallback(
    provider: SqliteProvider, demo_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> SqliteProvider:
    """The demo database through a provider whose C reader cannot be imported (a build
    without a compiler or sqlite3.h: `hatch_build.py` then makes a pure wheel); `provider`,
    made before, keeps its reader."""
    monkeypatch.setitem(sys.modules, "exporter_api.providers._sqlitecsv", None)
    assert csv_reader() is None
    return _provider(demo_data_dir)


async def test_without_the_c_reader_rows_are_formatted_in_python(
    fallback: SqliteProvider, provider: SqliteProvider
) -> None:
    assert provider.server_csv  # the C reader: CSV bytes from the provider
    assert not fallback.server_csv  # runs ask for rows, as from Oracle
    with structlog.testing.capture_logs() as logs:
        await fallback.start()
    assert [e["event"] for e in logs] == ["sqlite_csv_reader_unavailable"]
    assert logs[0]["log_level"] == "warning"
    with structlog.testing.capture_logs() as logs:
        await provider.start()
    assert logs == []
    # Bytes asked for all the same: CsvEncoder's, the same as the C reader's.
    for p in (fallback, provider):
        sink = CollectingSink()
        request = ExportRequest(sql=_TRICKY, params={}, delimiter=";", batch_rows=3)
        result = await p.export("USER1", "demo", request, sink)
        assert (result.rows, result.bytes) == (4, len(sink.data))
        assert sink.rows == [3, 1]
    encoder = CsvEncoder(";", "utf-8", ["id", "name", "amount", "note"])
    assert sink.data == encoder.header() + encoder.encode(_direct(provider, _TRICKY, ()), 1)


class _EncodingSink(CollectingSink):
    """What a run's output does with rows (`ExportRequest.rows`): CsvEncoder's CSV."""

    def __init__(self, delimiter: str) -> None:
        super().__init__()
        self.delimiter = delimiter
        self.encoder: CsvEncoder | None = None
        self.done = 0

    async def write_rows(self, header: list[str], batch: list[tuple[object, ...]]) -> None:
        if self.encoder is None:
            self.encoder = CsvEncoder(self.delimiter, "utf-8", header)
            self.chunks.append(self.encoder.header())
        self.chunks.append(self.encoder.encode(batch, self.done + 1))
        self.done += len(batch)
        self.rows.append(len(batch))


# Values whose text the C reader and csv.writer write alike: integers, REALs in plain notation
# (1e-4 <= |v| < 1e15, and both zeros), text with every character that needs quoting.
_SAME = [
    (0, 1.5, "plain"),
    (-1, -0.25, "a,b;c"),
    (9223372036854775807, 0.30000000000000004, 'say "hi"'),
    (-9223372036854775808, 1234567890.1234567, "two\nlines"),
    (42, -0.0, "cr\ralone"),
    (7, 0.0, "crlf\r\nend"),
    (8, 100.0, "  spaces  "),
    (9, 0.0001, ""),
    (10, 999999999999999.9, None),
    (11, -123.456, "ООО «Ромашка» ☃ 🚀"),
    (12, 1 / 3, "\x1f unit separator"),
    (None, None, '"'),
]
# REALs both write as the same double in other notations: the C reader SQLite's ("1.0e+16",
# "Inf", 16 or 17 digits as printf's %g), csv.writer Python's repr ("1e+16", "inf").
_REALS_DIFFER = [1e15, 1e16, -1e300, 5e-324, 1e-300, 2.5e-5, 1.7976931348623157e308]


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


@pytest.mark.parametrize("delimiter", [",", ";"])
@pytest.mark.parametrize("batch_rows", [1, 5, 5000])
async def test_the_c_reader_and_the_rows_path_write_the_same_bytes(
    provider: SqliteProvider, fallback: SqliteProvider, delimiter: str, batch_rows: int
) -> None:
    selects = [", ".join(map(_literal, row)) for row in _SAME]
    sql = "SELECT column1 AS n, column2 AS r, column3 AS t FROM (VALUES ({}))".format(
        "), (".join(selects)
    )
    datas = []
    for p, rows in ((provider, False), (provider, True), (fallback, False)):
        sink = _EncodingSink(delimiter)
        request = ExportRequest(
            sql=sql, params={}, delimiter=delimiter, batch_rows=batch_rows, rows=rows
        )
        await p.export("USER1", "demo", request, sink)
        datas.append(sink.data)
    assert datas[0] == datas[1] == datas[2]
    read = list(csv.reader(io.StringIO(datas[0].decode(), newline=""), delimiter=delimiter))
    assert [r[2] for r in read[1:]] == [v if v is not None else "" for _, _, v in _SAME]
    assert b"-0.0" in datas[0]


async def test_reals_in_other_notations_read_back_the_same_either_way(
    provider: SqliteProvider,
) -> None:
    values = ", ".join(f"({v!r})" for v in _REALS_DIFFER)
    sql = f"SELECT column1 AS r FROM (VALUES {values}, (9e999), (-9e999))"
    written = []
    for rows in (False, True):
        sink = _EncodingSink(",")
        await provider.export("USER1", "demo", ExportRequest(sql=sql, params={}, rows=rows), sink)
        written.append(sink.lines[1:])
    c_reader, rows_path = written
    assert c_reader != rows_path  # knowingly: SQLite's notation, Python's repr
    assert c_reader[:2] == ["1.0e+15", "1.0e+16"]
    assert rows_path[:2] == ["1000000000000000.0", "1e+16"]
    assert c_reader[-2:] == ["Inf", "-Inf"]
    assert rows_path[-2:] == ["inf", "-inf"]
    assert [float(v) for v in c_reader] == [float(v) for v in rows_path]
    assert [float(v) for v in c_reader[:-2]] == _REALS_DIFFER


async def test_blobs_are_the_same_hex_from_the_c_reader_and_the_rows_path(
    provider: SqliteProvider,
) -> None:
    # The C reader writes a BLOB in hex; a sink formatting rows gets bytes from the sqlite3
    # module, and CsvEncoder writes those in the same hex (not csv.writer's b'...').
    written = []
    for rows in (False, True):
        sink = _EncodingSink(",")
        request = ExportRequest(sql="SELECT x'414243' AS b", params={}, rows=rows)
        await provider.export("USER1", "demo", request, sink)
        written.append(sink.data)
    assert written == [b"b\n\\x414243\n"] * 2


@pytest.mark.parametrize("which", ["c", "fallback"])
async def test_a_parameter_that_is_not_valid_text_fails_clearly(
    provider: SqliteProvider, fallback: SqliteProvider, which: str
) -> None:
    p = provider if which == "c" else fallback
    request = ExportRequest(sql="SELECT :x AS x", params={"x": "bad \ud800"})
    with pytest.raises(QueryFailed) as caught:
        await p.export("USER1", "demo", request, CollectingSink())
    assert caught.value.detail == (
        "SQL error: a parameter is not valid text (an unpaired surrogate)"
    )


def test_reader_batches_are_bounded_by_rows_and_bytes(provider: SqliteProvider) -> None:
    reader_type = csv_reader()
    assert reader_type is not None
    reader = reader_type(provider.path.resolve().as_uri() + "?mode=ro", ",", 60)
    try:
        reader.execute(
            "WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < 100)"
            " SELECT v, 'xxxxxxxx' FROM n",
            [],
        )
        for bad in ((0, 100), (-1, 100), (10, 0)):
            with pytest.raises(ValueError, match="at least 1"):
                reader.read(*bad)
        chunk, rows = reader.read(1000, 30, b"head\n")  # "1,xxxxxxxx\n" is 11 bytes
        assert (chunk, rows) == (b"head\n1,xxxxxxxx\n2,xxxxxxxx\n3,xxxxxxxx\n", 3)
        chunk, rows = reader.read(2, 1 << 20)
        assert (chunk, rows) == (b"4,xxxxxxxx\n5,xxxxxxxx\n", 2)
        total = 5
        while rows:
            chunk, rows = reader.read(1000, 1 << 20, b"no header after the first\n")
            total += rows
        assert (total, chunk) == (100, b"")
    finally:
        reader.close()


_LOCALE_CHILD = """
import locale, sys
from exporter_api.providers.sqlite import csv_reader
locale.setlocale(locale.LC_ALL, "de_DE.UTF-8")
assert locale.localeconv()["decimal_point"] == ","
reader = csv_reader()(sys.argv[1], ",", 60)
reader.execute("SELECT 1234567890.1234567, 1e16, 1.5, -0.0", [])
sys.stdout.buffer.write(reader.read(10, 1000)[0])
"""


def test_reals_do_not_depend_on_the_numeric_locale(
    provider: SqliteProvider, tmp_path: Path
) -> None:
    # A German LC_NUMERIC (decimal comma) in the process: printf/strtod would read and write
    # "1234567890,1234567"; the reader formats and parses in the C locale.
    made = subprocess.run(
        ["localedef", "-i", "de_DE", "-f", "UTF-8", str(tmp_path / "de_DE.UTF-8")],
        capture_output=True,
        check=False,
    )
    if made.returncode not in (0, 1) or not (tmp_path / "de_DE.UTF-8").exists():
        pytest.skip("localedef cannot build de_DE.UTF-8 here")
    uri = provider.path.resolve().as_uri() + "?mode=ro"
    out = subprocess.run(
        [sys.executable, "-c", _LOCALE_CHILD, uri],
        env={**os.environ, "LOCPATH": str(tmp_path)},
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert out.stdout == b"1234567890.1234567,1.0e+16,1.5,-0.0\n"


def test_a_reader_refuses_other_calls_while_it_reads(provider: SqliteProvider) -> None:
    reader_type = csv_reader()
    assert reader_type is not None
    reader = reader_type(provider.path.resolve().as_uri() + "?mode=ro", ",", 60)
    reader.execute("SELECT a.entry_id FROM ledger a JOIN ledger b ON b.amount = a.amount + 1e9", [])
    failures: list[BaseException] = []

    def read() -> None:
        try:
            reader.read(10, 1000)
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:

        def refused() -> bool:
            try:
                _ = reader.columns
            except RuntimeError:
                return True
            return False

        wait_until(refused, 10, "the read to be running")
        for call in (
            reader.close,
            lambda: reader.read(1, 1),
            lambda: reader.execute("SELECT 1", []),
        ):
            with pytest.raises(RuntimeError, match="busy on another thread"):
                call()
    finally:
        reader.interrupt()
        thread.join(10)
    assert [type(e) for e in failures] == [sqlite3.OperationalError]
    assert reader.columns == ["entry_id"]
    with pytest.raises(sqlite3.ProgrammingError, match="earlier read"):
        reader.read(1, 1)  # not an empty batch, which would look like the end of the result
    reader.close()


@pytest.mark.parametrize("delimiter", [".", "-", "x", "5", "\\"])
async def test_a_delimiter_found_in_a_number_or_hex_is_quoted(
    provider: SqliteProvider, delimiter: str
) -> None:
    sql = "SELECT 1.5 AS a, x'ab' AS b, -3 AS c, 12345 AS d"
    sink = CollectingSink()
    request = ExportRequest(sql=sql, params={}, delimiter=delimiter)
    await provider.export("USER1", "demo", request, sink)
    rows = list(csv.reader(io.StringIO(sink.data.decode()), delimiter=delimiter))
    assert rows == [["a", "b", "c", "d"], ["1.5", "\\xab", "-3", "12345"]]
