"""The oracle provider without an Oracle server: configuration, parameters, error mapping, and
the row path after ``execute()`` with a stand-in cursor.

No Oracle database is available here, so queries are never run against one; a connection to a
closed port exercises the real driver's network error path.
"""

from __future__ import annotations

import errno
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import anyio
import oracledb
import pytest

from exporter_api.config import DatabaseConfig
from exporter_api.errors import DatabaseUnavailable, InvalidCredentials, QueryFailed
from exporter_api.providers import create_provider
from exporter_api.providers.base import (
    ExportColumn,
    ExportRequest,
    GuardedSink,
    translate_errors,
    wrap_columns,
)
from exporter_api.providers.oracle import (
    MIN_ARRAYSIZE,
    OracleProvider,
    _driver_error,
    close_connection,
    error_code,
    map_error,
)
from exporter_api.runs.writers import OutputSpec, VariantOutput
from exporter_api.sqlparams import to_oracle
from tests.exporter_api.providers.sinks import FailingSink
from tests.exporter_api.runs.xlsxread import read_xlsx
from tests.services import free_port


def _config(**changes: object) -> DatabaseConfig:
    base: dict[str, object] = {
        "id": "ora",
        "display_name": "Oracle",
        "provider": "oracle",
        "dsn": f"127.0.0.1:{free_port()}/FREEPDB1",
        "connect_timeout_s": 2,
    }
    return DatabaseConfig(**{**base, **changes})  # type: ignore[arg-type]


def test_factory_and_arraysize() -> None:
    provider = create_provider(_config(fetch_batch_rows=200), None, None)  # type: ignore[arg-type]
    assert isinstance(provider, OracleProvider)
    assert provider.arraysize == MIN_ARRAYSIZE
    assert OracleProvider(_config(fetch_batch_rows=20_000)).arraysize == 20_000
    assert oracledb.is_thin_mode()


def test_named_parameters_stay_oracle_style() -> None:
    sql = wrap_columns(
        "SELECT order_id, customer FROM orders WHERE mgr = :manager_id -- :login\n;",
        [ExportColumn("ORDER_ID", "OrderId")],
    )
    out, binds = to_oracle(sql, {"manager_id": "m1", "stream_id": "s1", "login": "u"})
    assert out.startswith('SELECT "ORDER_ID" AS "OrderId" FROM (\n')
    assert out.endswith("\n) q")
    assert ";" not in out
    assert binds == {"manager_id": "m1"}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("ORA-01017: invalid credential or not authorized; logon denied", InvalidCredentials),
        ("ORA-28000: The account is locked.", InvalidCredentials),
        ("ORA-12541: Cannot connect. No listener at host", DatabaseUnavailable),
        ("DPY-6005: cannot connect to database", DatabaseUnavailable),
        ("ORA-01013: user requested cancel of current operation", QueryFailed),
        ("DPY-4024: call timeout of 300 ms exceeded", QueryFailed),
        ("ORA-00942: table or view does not exist", QueryFailed),
    ],
)
def test_error_mapping(message: str, expected: type[Exception]) -> None:
    error = map_error(oracledb.DatabaseError(message), "ora", 0.3)
    assert isinstance(error, expected)
    assert error_code(oracledb.DatabaseError(message)) == message.split(":", 1)[0]


LOST = "the database connection was lost (database ora)"


@pytest.mark.parametrize(
    ("message", "connected", "detail"),
    [
        (
            "DPY-4024: call timeout of 2000 ms exceeded",
            True,
            "the query exceeded the statement timeout of 2 s",
        ),
        (
            "ORA-00942: table or view does not exist",
            True,
            "SQL error ORA-00942: table or view does not exist",
        ),
        (
            "ORA-01031: insufficient privileges",
            True,
            "permission denied: ORA-01031: insufficient privileges",
        ),
        (
            "ORA-00933: SQL command not properly ended",
            True,
            "SQL syntax error: ORA-00933: SQL command not properly ended",
        ),
        (
            "ORA-12541: Cannot connect. No listener at host",
            False,
            "database ora is unreachable (ORA-12541)",
        ),
        ("DPY-4011: the database or network closed the connection", True, LOST),
        ("ORA-03113: end-of-file on communication channel", True, LOST),
        ("ORA-00028: your session has been killed", True, LOST),
        (
            "ORA-01722: invalid number 'tiger-secret'",
            True,
            "SQL error ORA-01722: invalid number '***'",
        ),
    ],
)
def test_error_messages(message: str, connected: bool, detail: str) -> None:
    error = map_error(
        oracledb.DatabaseError(message), "ora", 2, connected=connected, password="tiger-secret"
    )
    assert error.detail == detail


def test_network_errors_depend_on_the_phase() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    assert map_error(refused, "ora").detail == "database ora is unreachable (network)"
    lost = map_error(ConnectionResetError(104, "reset"), "ora", 5, connected=True)
    assert lost.detail == "the database connection was lost (database ora)"
    assert isinstance(lost, DatabaseUnavailable)


async def test_sink_errors_are_not_translated() -> None:
    # The export's translation wraps the fetch loop, which calls the sink: a full disk raised by
    # the sink passes through as it is, while the same error type from the driver is translated.
    translate = _driver_error("ora", 5, connected=True, password="")
    full = OSError(errno.ENOSPC, "No space left on device")
    sink = GuardedSink(FailingSink(full))
    with pytest.raises(OSError, match="No space left") as info, translate_errors(translate, sink):
        await sink.write(b"a\n", 1)
    assert info.value is full
    with (
        pytest.raises(DatabaseUnavailable, match="connection was lost"),
        translate_errors(translate, sink),
    ):
        raise ConnectionResetError(104, "Connection reset by peer")


async def test_unreachable_listener_is_503_class() -> None:
    provider = OracleProvider(_config())
    with pytest.raises(DatabaseUnavailable) as info:
        await provider.verify_login("scott", "tiger-secret")
    assert "tiger-secret" not in str(info.value)


class _Connection:
    """Stands in for the driver's connection object only (no server): its ``close()`` either
    hangs like a peer that never answers, or fails like a connection already broken."""

    def __init__(self, *, hang: bool = False, fail: bool = False) -> None:
        self.hang, self.fail, self.closed = hang, fail, False

    async def close(self) -> None:
        self.closed = True
        if self.fail:
            raise oracledb.InterfaceError("DPY-1001: not connected to database")
        if self.hang:
            await anyio.sleep_forever()


async def test_close_is_bounded_shielded_and_quiet() -> None:
    hanging = _Connection(hang=True)
    started = anyio.current_time()
    with anyio.fail_after(2):
        await close_connection(hanging, timeout_s=0.2)  # would hang forever without the bound
    assert hanging.closed
    assert anyio.current_time() - started < 1
    await close_connection(_Connection(fail=True))  # a broken connection's error is swallowed
    # a cancelled caller still closes (shielded), within the bound
    shielded = _Connection(hang=True)
    with anyio.fail_after(2), anyio.CancelScope() as scope:
        scope.cancel()
        await close_connection(shielded, timeout_s=0.2)
    assert shielded.closed


class _Cursor:
    """Stands in for the driver's async cursor: a result served ``arraysize`` rows a call."""

    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.rows = rows
        self.arraysize = 0
        self.prefetchrows = 0
        self.description: list[tuple[str, ...]] = []
        self.fetch_sizes: list[int] = []
        self.executed: tuple[str, dict[str, object]] | None = None

    async def execute(self, sql: str, binds: dict[str, object]) -> None:
        self.executed = (sql, binds)
        self.description = [("ID",), ("NAME",), ("AMOUNT",), ("BOOKED",)]

    async def fetchmany(self, size: int) -> list[tuple[object, ...]]:
        self.fetch_sizes.append(size)
        batch, self.rows = self.rows[:size], self.rows[size:]
        return batch


class _FetchConnection:
    def __init__(self, cursor: _Cursor) -> None:
        self._cursor = cursor

    def cursor(self) -> _Cursor:
        return self._cursor


async def test_rows_go_to_the_sink_one_fetch_array_at_a_time(tmp_path: Path) -> None:
    # The same code path as a live server after execute(): arrays of `arraysize` rows straight
    # to the output, which formats and writes them on its own thread (here to XLSX and CSV).
    day = datetime(2025, 3, 7, 10, 20, 30)
    rows: list[tuple[object, ...]] = [(i, f"n{i}", Decimal(i) / 4, day) for i in range(2500)]
    provider = OracleProvider(_config(fetch_batch_rows=1000))
    request = ExportRequest(sql="SELECT 1 FROM dual", params={}, rows=True)
    for fmt in ("csv", "xlsx"):
        cursor = _Cursor(list(rows))
        spec = OutputSpec(format=fmt)
        async with VariantOutput(spec, tmp_path / fmt, f"out.{fmt}") as out:
            result = await provider._fetch(
                _FetchConnection(cursor), "SELECT 1 FROM dual", {}, request, out
            )
            assert await out.finish() == 2500
            written = await out.parts[0].commit()
        assert result.rows == 2500
        assert (cursor.arraysize, cursor.prefetchrows) == (1000, 1000)
        assert cursor.fetch_sizes == [1000, 1000, 1000, 1000]  # the last one finds nothing
        if fmt == "csv":
            lines = written.path.read_text("utf-8").splitlines()
            assert lines[0] == "ID,NAME,AMOUNT,BOOKED"
            assert lines[2] == "1,n1,0.25,2025-03-07 10:20:30"
            assert len(lines) == 2501
        else:
            [sheet], _ = read_xlsx(written.path)
            assert sheet.cell(2, 2) == ("n", "0.25")
            assert sheet.cell(2, 3) is not None
            assert len(sheet.rows) == 2501
