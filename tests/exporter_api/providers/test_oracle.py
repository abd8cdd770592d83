"""The oracle provider without an Oracle server: configuration, parameters, error mapping.

No Oracle database is available here, so queries are never run against one; a connection to a
closed port exercises the real driver's network error path.
"""

from __future__ import annotations

import oracledb
import pytest

from exporter_api.config import DatabaseConfig
from exporter_api.errors import DatabaseUnavailable, InvalidCredentials, QueryFailed
from exporter_api.providers import create_provider
from exporter_api.providers.base import ExportColumn, wrap_columns
from exporter_api.providers.oracle import MIN_ARRAYSIZE, OracleProvider, error_code, map_error
from exporter_api.sqlparams import to_oracle
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


def test_timeout_and_sql_error_messages() -> None:
    timeout = map_error(oracledb.DatabaseError("DPY-4024: call timeout exceeded"), "ora", 2)
    assert timeout.detail == "statement timeout after 2 s"
    sql_error = map_error(oracledb.DatabaseError("ORA-00942: table or view does not exist"), "ora")
    assert sql_error.detail == "SQL error ORA-00942: table or view does not exist"


async def test_unreachable_listener_is_503_class() -> None:
    provider = OracleProvider(_config())
    with pytest.raises(DatabaseUnavailable) as info:
        await provider.verify_login("scott", "tiger-secret")
    assert "tiger-secret" not in str(info.value)
