"""Oracle provider: python-oracledb in thin mode (pure Python, no client libraries), async API.

Login = connecting as the user. Export = one cursor with `arraysize` in the thousands, rows
formatted as CSV by the service (Oracle has no server-side CSV COPY). The statement timeout is
the connection's `call_timeout`; on cancellation `connection.cancel()` interrupts the running
call on the server before the connection is closed (shielded).

NOTE: this provider was NOT run against a real Oracle database while it was built (none is
available here). Its configuration, `:name` parameter handling and error mapping are tested;
the network paths are covered only by a connection to a closed port.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import anyio
import oracledb
import structlog

from exporter_api.config import DatabaseConfig
from exporter_api.errors import ExporterError, InvalidCredentials, QueryFailed
from exporter_api.providers.base import (
    DatabaseProvider,
    ExportRequest,
    ExportResult,
    ExportSink,
    GuardedSink,
    connection_lost,
    permission_denied,
    row_sink,
    scrub,
    statement_timeout,
    translate_errors,
    unreachable,
    wrap_columns,
)
from exporter_api.sqlparams import to_oracle

_log = structlog.get_logger("exporter_api.providers.oracle")

CLOSE_TIMEOUT_S = 5.0  # at most this long for a goodbye to an unresponsive server
MIN_ARRAYSIZE = 1000

# ORA-01017 invalid username/password; ORA-28000 account locked; ORA-28001 password expired;
# ORA-01005 null password; ORA-01045 lacks CREATE SESSION.
_AUTH_CODES = {"ORA-01017", "ORA-28000", "ORA-28001", "ORA-01005", "ORA-01045", "ORA-01004"}
# Listener / network / instance problems and the thin driver's connection errors.
_UNAVAILABLE_CODES = {
    "ORA-12154", "ORA-12170", "ORA-12505", "ORA-12514", "ORA-12516", "ORA-12518", "ORA-12519",
    "ORA-12520", "ORA-12521", "ORA-12528", "ORA-12537", "ORA-12541", "ORA-12543", "ORA-01033",
    "ORA-01034", "ORA-01089", "ORA-03113", "ORA-03114", "ORA-03135",
    "DPY-6000", "DPY-6001", "DPY-6002", "DPY-6003", "DPY-6005", "DPY-4011", "DPY-4027",
}  # fmt: skip
# An established session ended under a running query: the network or instance went away
# (the codes above), the session was killed (ORA-00028) or logged off (ORA-01012, DPY-1001).
_LOST_CODES = _UNAVAILABLE_CODES | {"ORA-00028", "ORA-01012", "ORA-02396", "DPY-1001"}
# ORA-01013 user requested cancel (the call timeout); DPY-4024 call timeout exceeded.
_TIMEOUT_CODES = {"ORA-01013", "DPY-4024"}
_PERMISSION_CODES = {"ORA-01031", "ORA-01749", "ORA-29532"}
# The parser's own complaints (invalid statement, missing keyword/parenthesis/expression, ...).
_SYNTAX_CODES = {
    "ORA-00900", "ORA-00905", "ORA-00906", "ORA-00907", "ORA-00911", "ORA-00917", "ORA-00920",
    "ORA-00921", "ORA-00923", "ORA-00924", "ORA-00933", "ORA-00936", "ORA-00969",
}  # fmt: skip


def error_code(exc: BaseException) -> str:
    """`ORA-01017` / `DPY-6005` of a python-oracledb error ('' if there is none)."""
    args = getattr(exc, "args", ())
    err = args[0] if args else None
    code = getattr(err, "full_code", None)
    if isinstance(code, str) and code:
        return code
    text = str(exc)
    head = text.split(":", 1)[0].strip()
    return head if head.startswith(("ORA-", "DPY-", "DPI-")) else ""


def map_error(
    exc: BaseException,
    database_id: str,
    timeout_s: float | None = None,
    *,
    connected: bool = False,
    password: str = "",
) -> ExporterError:
    """Translate a driver error into ours; messages never include the DSN or credentials.

    `connected`: the error came from a running query (a network error then means the
    connection was lost), not from connecting (where it means the server is unreachable).
    """
    code = error_code(exc)
    if code in _AUTH_CODES:
        return InvalidCredentials()
    network = isinstance(exc, OSError | TimeoutError)
    if connected and (code in _LOST_CODES or network):
        return connection_lost(database_id)
    if code in _UNAVAILABLE_CODES or network:
        return unreachable(database_id, code or "network")
    if code in _TIMEOUT_CODES:
        if timeout_s is None:
            return QueryFailed("the query exceeded the statement timeout")
        return statement_timeout(timeout_s)
    first_line = scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, password)
    if code in _PERMISSION_CODES:
        return QueryFailed(permission_denied(first_line))
    if code in _SYNTAX_CODES:
        return QueryFailed(f"SQL syntax error: {first_line}")
    if code.startswith("ORA-"):
        return QueryFailed(f"SQL error {first_line}")
    return QueryFailed(f"database error {code or type(exc).__name__}")


def _driver_error(
    database_id: str, timeout_s: float | None, *, connected: bool, password: str
) -> Callable[[Exception], ExporterError | None]:
    def translate(exc: Exception) -> ExporterError | None:
        if not isinstance(exc, oracledb.Error | OSError | TimeoutError):
            return None
        return map_error(exc, database_id, timeout_s, connected=connected, password=password)

    return translate


class OracleProvider(DatabaseProvider):
    def __init__(self, config: DatabaseConfig) -> None:
        super().__init__(config)
        self.arraysize = max(MIN_ARRAYSIZE, config.fetch_batch_rows)

    async def _connect(self, username: str, password: str) -> Any:
        try:
            return await oracledb.connect_async(
                user=username,
                password=password,
                dsn=self.config.dsn,
                tcp_connect_timeout=self.config.connect_timeout_s,
                retry_count=0,
                program="exporter-api",
            )
        except (oracledb.Error, OSError, TimeoutError) as exc:
            raise map_error(exc, self.config.id, password=password) from None

    async def verify_login(self, username: str, password: str) -> None:
        # Not under `limiter`: a login must not wait behind hours-long exports.
        conn = await self._connect(username, password)
        await close_connection(conn)

    async def export(
        self, username: str, password: str, request: ExportRequest, sink: ExportSink
    ) -> ExportResult:
        sql, binds = to_oracle(wrap_columns(request.sql, request.columns), request.params)
        guarded = GuardedSink(sink)
        translate = _driver_error(
            self.config.id, request.statement_timeout_s, connected=True, password=password
        )
        async with self.limiter:
            conn = await self._connect(username, password)
            try:
                conn.call_timeout = int(request.statement_timeout_s * 1000)
                # The sink's own errors (a full disk) pass through untranslated.
                with translate_errors(translate, guarded):
                    return await self._fetch(conn, sql, binds, request, guarded)
            except BaseException:
                # Cancellation or failure: interrupt the call on the server first (a plain,
                # non-blocking send of the break), then close below.
                with contextlib.suppress(oracledb.Error):
                    conn.cancel()
                raise
            finally:
                await close_connection(conn)

    async def _fetch(
        self,
        conn: Any,
        sql: str,
        binds: dict[str, object],
        request: ExportRequest,
        sink: ExportSink,
    ) -> ExportResult:
        # Rows as fetched, one array per call (``server_csv`` is False: the executor always
        # asks for rows); the sink formats them on its own thread while the next array is
        # fetched.
        rows_out = row_sink(sink)
        rows = 0
        cursor = conn.cursor()
        cursor.arraysize = self.arraysize
        cursor.prefetchrows = self.arraysize
        await cursor.execute(sql, binds)
        header = [d[0] for d in cursor.description or ()]
        while batch := await cursor.fetchmany(self.arraysize):
            await rows_out.write_rows(header, batch)
            rows += len(batch)
        return ExportResult(rows=rows, bytes=0)


async def close_connection(conn: Any, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close ``conn`` even when the caller is cancelled, but never wait more than ``timeout_s``
    for an unresponsive server (the socket is dropped with the connection object then)."""
    with (
        anyio.CancelScope(shield=True),
        anyio.move_on_after(timeout_s),
        contextlib.suppress(oracledb.Error),
    ):
        await conn.close()


__all__ = [
    "CLOSE_TIMEOUT_S",
    "MIN_ARRAYSIZE",
    "OracleProvider",
    "close_connection",
    "error_code",
    "map_error",
]
