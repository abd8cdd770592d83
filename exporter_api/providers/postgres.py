"""PostgreSQL provider (asyncpg): login = connecting as the user; export = COPY ... TO STDOUT.

The server formats the CSV (delimiter, header, encoding), so the service only moves bytes: chunks
from the COPY stream are gathered to about `_CHUNK_BYTES` and handed to the sink with their row
count (the server sends each row in a CopyData message of its own, so a chunk holds whole
records, counted by `csvcodec.record_count`). COPY takes no bind parameters, so the script's
`:name` values are turned into literals by the server itself (`quote_literal($n::type::text)`,
as asyncpg's `copy_from_query` does) and put back at the placeholder positions found by our
tokenizer, never by text search.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import anyio
import asyncpg
import structlog

from exporter_api.config import DatabaseConfig
from exporter_api.csvcodec import record_count
from exporter_api.errors import (
    DatabaseUnavailable,
    ExporterError,
    Forbidden,
    InvalidCredentials,
    QueryFailed,
)
from exporter_api.providers.base import (
    DatabaseProvider,
    ExportRequest,
    ExportResult,
    ExportSink,
    GuardedSink,
    connection_lost,
    permission_denied,
    scrub,
    statement_timeout,
    translate_errors,
    unreachable,
    wrap_columns,
)
from exporter_api.sqlparams import parse_named, quote_ident, strip_terminator

_log = structlog.get_logger("exporter_api.providers.postgres")

_CHUNK_BYTES = 256 * 1024
_PG_ENCODINGS = {"utf-8": "UTF8", "utf-8-sig": "UTF8", "cp1251": "WIN1251"}
_AUTH_SQLSTATES = {"28000", "28P01"}
# The server went away under a running query: shut down (57P01 also = pg_terminate_backend),
# crashed, or the connection broke (class 08; asyncpg raises 08003 for a closed socket).
_LOST_SQLSTATES = {"57P01", "57P02", "57P03"}
CLOSE_TIMEOUT_S = 2.0  # a graceful goodbye to an idle connection; terminated after that
STOP_TIMEOUT_S = 3.0  # at most this long to stop a query on the server after a cancellation
# PostgreSQL 14+ then notices within this interval that the client has gone, even while a query
# computes without sending anything (the fallback when the cancel connection cannot be made).
_CLIENT_CHECK_MS = 1000


class PostgresProvider(DatabaseProvider):
    """Exports run as `COPY (...) TO STDOUT` on a connection of their own (or through a
    cursor when rows are asked for: `ExportRequest.rows`).

    Theory of cancellation: asyncpg sends the protocol's cancel request from the done-callback
    of the future it waits on for the next COPY chunk. That callback runs one loop turn after
    the future was cancelled; when a chunk is dispatched in between, asyncpg's protocol has
    already let go of the future (`_dispatch_result`), the callback does nothing
    (`_on_waiter_completed`), and the COPY keeps streaming while a graceful `close()` waits
    behind it (about one cancel in three). So an export that ends any other way than cleanly
    (cancelled, or its sink failed) never relies on the driver: `_stop` cancels the backend
    with `pg_cancel_backend` over a second short connection under the same account (a role may
    cancel its own backends; not under `limiter`, it lives for milliseconds), drops the
    export's connection without a goodbye, and waits until the backend has left
    `pg_stat_activity`, all within `STOP_TIMEOUT_S`. If the second connection cannot be made,
    the dropped socket still ends the backend: a streaming COPY fails on its next write, and a
    computing query notices through
    `client_connection_check_interval` (PostgreSQL 14+).
    """

    server_csv = True
    server_style = True

    def __init__(self, config: DatabaseConfig) -> None:
        super().__init__(config)

    async def _connect(
        self, username: str, password: str, timeout_s: float | None, purpose: str = ""
    ) -> Any:
        settings = {"application_name": "exporter-api" + (f"-{purpose}" if purpose else "")}
        if timeout_s is not None:
            settings["statement_timeout"] = str(int(timeout_s * 1000))
        with translate_errors(lambda exc: self._connect_error(exc, password)):
            return await asyncpg.connect(
                self.config.dsn,
                user=username,
                password=password,
                timeout=self.config.connect_timeout_s,
                statement_cache_size=0,
                server_settings=settings,
            )

    def _connect_error(self, exc: Exception, password: str) -> ExporterError | None:
        db = self.config.id
        if isinstance(exc, asyncpg.PostgresError):
            state = exc.sqlstate or ""
            if state in _AUTH_SQLSTATES:
                return InvalidCredentials()
            if state == "42501":  # e.g. no CONNECT privilege on the database
                return Forbidden(f"{permission_denied(scrub(_message(exc), password))} ({state})")
            if state == "53300":
                return DatabaseUnavailable(f"database {db} has no free connections ({state})")
            if state == "57P03":
                return DatabaseUnavailable(
                    f"database {db} is starting up or shutting down ({state})"
                )
            if state == "3D000":
                return DatabaseUnavailable(
                    f"database {db} is misconfigured: the database it names does not exist"
                    f" on the server ({state})"
                )
            if state.startswith("08") or state in _LOST_SQLSTATES:
                return unreachable(db, state)
            return DatabaseUnavailable(f"database {db} refused the connection ({state})")
        if isinstance(exc, TimeoutError):
            return unreachable(db, f"no answer within {self.config.connect_timeout_s:g} s")
        if isinstance(exc, ConnectionRefusedError):
            return unreachable(db, "connection refused")
        if isinstance(exc, ssl.SSLError):
            return unreachable(db, "TLS handshake failed")
        if isinstance(exc, OSError):
            # strerror only: the full text of a multi-host failure names hosts and ports.
            return unreachable(db, exc.strerror or "")
        if isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
            return unreachable(db, "the server broke the protocol")
        return None

    async def verify_login(self, username: str, password: str) -> None:
        # Not under `limiter`: a login must not wait behind hours-long exports.
        conn = await self._connect(username, password, 30)
        with anyio.CancelScope(shield=True):
            await _close(conn)

    async def export(
        self, username: str, password: str, request: ExportRequest, sink: ExportSink
    ) -> ExportResult:
        guarded = GuardedSink(sink)
        async with self.limiter:
            conn = await self._connect(username, password, request.statement_timeout_s)
            stop = True
            try:
                result = await self._copy(conn, request, guarded, password)
                stop = False
                return result
            except ExporterError as exc:
                # The server ended the statement itself (SQL error, timeout, lost connection);
                # only an error of the sink leaves the COPY running.
                stop = guarded.raised(exc)
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    if stop:
                        await self._stop(conn, username, password)
                    else:
                        await _close(conn)

    async def _stop(self, conn: Any, username: str, password: str) -> None:
        """Stop the backend of `conn` on the server and drop `conn`, within `STOP_TIMEOUT_S`."""
        if conn.is_closed():  # the socket is gone already (asyncpg may drop it on its own)
            conn.terminate()
            return
        pid = conn.get_server_pid()
        started = time.monotonic()
        try:
            with anyio.fail_after(STOP_TIMEOUT_S):
                side = await self._connect(username, password, STOP_TIMEOUT_S, "cancel")
                try:
                    await side.fetchval("SELECT pg_cancel_backend($1)", pid)
                    # Cancelled: a graceful close would now wait for the server to flush what
                    # it already sent; dropping the socket ends the backend at once.
                    conn.terminate()
                    while await side.fetchval(  # noqa: ASYNC110 - polls the server
                        "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)", pid
                    ):
                        await anyio.sleep(0.01)  # the backend exits within milliseconds
                finally:
                    side.terminate()
        except Exception as exc:  # the cancel connection is best effort; see the class doc
            _log.warning(
                "postgres_query_stop_failed",
                database_id=self.config.id,
                backend_pid=pid,
                error=type(exc).__name__,
            )
        finally:
            conn.terminate()
        _log.info(
            "postgres_query_stopped",
            database_id=self.config.id,
            backend_pid=pid,
            seconds=round(time.monotonic() - started, 3),
        )

    async def _copy(
        self, conn: Any, request: ExportRequest, sink: GuardedSink, password: str
    ) -> ExportResult:
        started = time.monotonic()

        def translate(exc: Exception) -> ExporterError | None:
            return _query_error(
                exc,
                self.config.id,
                request.statement_timeout_s,
                elapsed_s=time.monotonic() - started,
                closed=conn.is_closed(),
                password=password,
            )

        with translate_errors(translate, sink):
            if conn.get_server_version().major >= 14:
                await conn.execute(f"SET client_connection_check_interval = {_CLIENT_CHECK_MS}")
            if request.rows:
                return await self._fetch_rows(conn, request, sink)
            return await self._copy_out(conn, request, sink)

    async def _fetch_rows(
        self, conn: Any, request: ExportRequest, sink: GuardedSink
    ) -> ExportResult:
        """Rows (typed values) through a server-side cursor, a batch per round trip: for
        outputs the server's CSV cannot give (XLSX; styles and split files stay COPY)."""
        script = strip_terminator(wrap_columns(request.sql, request.columns))
        sql = await self._inline_params(conn, script, request.params)
        rows = 0
        async with conn.transaction(readonly=True):
            statement = await conn.prepare(sql)
            header = [a.name for a in statement.get_attributes()]
            cursor = await statement.cursor()
            while batch := await cursor.fetch(request.batch_rows):
                await sink.write_rows(header, [tuple(r) for r in batch])
                rows += len(batch)
        return ExportResult(rows=rows, bytes=0)

    async def _copy_out(self, conn: Any, request: ExportRequest, sink: GuardedSink) -> ExportResult:
        # COPY (...) takes one statement: no terminator, and a line break so a trailing
        # `-- comment` cannot swallow the closing parenthesis.
        script = strip_terminator(wrap_columns(request.sql, request.columns)) + "\n"
        sql = await _styled(conn, await self._inline_params(conn, script, request.params), request)
        pending: list[bytes] = []
        pending_size = 0
        rows = size = 0
        header_left = request.header

        async def flush() -> None:
            nonlocal pending_size, rows, size, header_left
            data = b"".join(pending)
            pending.clear()
            pending_size = 0
            n = record_count(data)
            if header_left and n:
                n -= 1
                header_left = False
            await sink.write(data, n)
            rows += n
            size += len(data)

        async def on_data(chunk: bytes) -> None:
            nonlocal pending_size
            pending.append(bytes(chunk))
            pending_size += len(chunk)
            if pending_size >= _CHUNK_BYTES:
                await flush()

        await conn.copy_from_query(
            sql,
            output=on_data,
            format="csv",
            header=request.header,
            delimiter=request.delimiter,
            encoding=_PG_ENCODINGS.get(request.encoding, "UTF8"),
        )
        # A result without rows is only the header line: nothing is written (NoData).
        if pending and (size or record_count(b"".join(pending)) > (1 if header_left else 0)):
            await flush()
        return ExportResult(rows=rows, bytes=size)

    async def _inline_params(self, conn: Any, sql: str, params: dict[str, str]) -> str:
        parsed = parse_named(sql)
        if not parsed.names:
            return sql
        missing = sorted(set(parsed.names) - set(params))
        if missing:
            raise QueryFailed(f"no value for SQL parameter(s): {', '.join(missing)}")
        order = list(dict.fromkeys(parsed.names))
        numbered = parsed.render({name: f"${i}" for i, name in enumerate(order, start=1)})
        try:
            stmt = await conn.prepare(numbered)
            types = [
                f"{quote_ident(t.schema)}.{quote_ident(_type_name(t.name))}"
                for t in stmt.get_parameters()
            ]
            casts = ", ".join(
                f"quote_literal(${i}::{t}::text) || '::' || {_literal(t)}"
                for i, t in enumerate(types, start=1)
            )
            literals = await conn.fetchrow(f"SELECT {casts}", *[params[n] for n in order])
        except (ValueError, TypeError, asyncpg.DataError) as exc:
            raise QueryFailed(f"parameter does not fit the query: {exc}") from None
        return parsed.render({name: literals[order.index(name)] for name in order})


# What a CSV style changes, by the type of a result column: (decimal comma, dd.mm.yyyy).
_NUMBERS = {"numeric", "float4", "float8"}
_DATES = {"date": "DD.MM.YYYY", "timestamp": "DD.MM.YYYY HH24:MI:SS"}
_DATES["timestamptz"] = _DATES["timestamp"]


async def _styled(conn: Any, sql: str, request: ExportRequest) -> str:
    """``sql`` (one SELECT, ending in a line break) with its numbers written with
    ``request.decimal_separator`` and its dates in ``request.date_format``, by the server, so
    that every other value stays exactly as COPY prints it (``t``, ``{1,2}``, ``\\x00ff``,
    ``""`` versus NULL); the columns to change are known from the result's types."""
    comma = request.decimal_separator != "."
    ru = request.date_format == "dd.mm.yyyy"
    if not (comma or ru):
        return sql
    attributes = (await conn.prepare(sql)).get_attributes()
    kinds = [
        a.type.name if a.type.schema == "pg_catalog" else "" for a in attributes
    ]  # a column's own type, never a user type that happens to share a name
    if not any((comma and k in _NUMBERS) or (ru and k in _DATES) for k in kinds):
        return sql
    values = []
    for i, (attribute, kind) in enumerate(zip(attributes, kinds, strict=True)):
        column = f"q.c{i}"
        if comma and kind in _NUMBERS:
            value = f"replace({column}::text, '.', {_literal(request.decimal_separator)})"
        elif ru and kind in _DATES:
            value = (
                f"CASE WHEN isfinite({column}) THEN to_char({column}, '{_DATES[kind]}')"
                f" ELSE {column}::text END"
            )
        else:
            value = column
        values.append(f"{value} AS {quote_ident(attribute.name)}")
    names = ", ".join(f"c{i}" for i in range(len(attributes)))
    # Positional names (q.c0...): the script's own may repeat or be empty.
    return f"SELECT {', '.join(values)} FROM (\n{sql}) AS q({names})\n"  # noqa: S608


async def _close(conn: Any) -> None:
    """Close an idle connection gracefully, but never wait more than `CLOSE_TIMEOUT_S`."""
    try:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await conn.close()
    except Exception:  # an unresponsive or broken peer: drop the socket
        conn.terminate()


def _query_error(
    exc: Exception,
    database_id: str,
    timeout_s: float,
    *,
    elapsed_s: float,
    closed: bool,
    password: str,
) -> ExporterError | None:
    """Translate an error of a running query (None: not a driver error, let it through)."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        # 57014 is the statement timeout or a cancel by someone else (a DBA); the server's text
        # may be translated (lc_messages), so the elapsed time decides too.
        if "statement timeout" in _message(exc) or elapsed_s >= timeout_s * 0.99:
            return statement_timeout(timeout_s)
        return QueryFailed("the query was cancelled on the database server (57014)")
    if isinstance(exc, asyncpg.PostgresConnectionError) or (
        isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _LOST_SQLSTATES
    ):
        return connection_lost(database_id)
    if isinstance(exc, OSError) or (isinstance(exc, asyncpg.InterfaceError) and closed):
        return connection_lost(database_id)
    if isinstance(exc, asyncpg.PostgresError):
        message = scrub(_message(exc), password)
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return QueryFailed(f"{permission_denied(message)} ({exc.sqlstate})")
        if isinstance(exc, asyncpg.PostgresSyntaxError):
            return QueryFailed(f"SQL syntax error: {message} ({exc.sqlstate})")
        return QueryFailed(f"SQL error {exc.sqlstate}: {message}")
    return None


def _type_name(name: str) -> str:
    return "_" + name[:-2] if name.endswith("[]") else name


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _message(exc: asyncpg.PostgresError) -> str:
    return str(getattr(exc, "message", "") or type(exc).__name__)


__all__ = ["CLOSE_TIMEOUT_S", "STOP_TIMEOUT_S", "PostgresProvider"]
