"""PostgreSQL provider (asyncpg): login = connecting as the user; export = COPY ... TO STDOUT.

The server formats the CSV (delimiter, header, encoding), so the service only moves bytes: chunks
from the COPY stream are gathered to about `_CHUNK_BYTES` and handed to the sink with their row
count. COPY takes no bind parameters, so the script's `:name` values are turned into literals by
the server itself (`quote_literal($n::type::text)`, as asyncpg's `copy_from_query` does) and put
back at the placeholder positions found by our tokenizer, never by text search.
"""

from __future__ import annotations

import ssl
from typing import Any

import anyio
import asyncpg
import structlog

from exporter_api.config import DatabaseConfig
from exporter_api.errors import DatabaseUnavailable, InvalidCredentials, QueryFailed
from exporter_api.providers.base import (
    DatabaseProvider,
    ExportRequest,
    ExportResult,
    ExportSink,
    wrap_columns,
)
from exporter_api.sqlparams import parse_named, quote_ident, strip_terminator

_log = structlog.get_logger("exporter_api.providers.postgres")

_CHUNK_BYTES = 256 * 1024
_PG_ENCODINGS = {"utf-8": "UTF8", "utf-8-sig": "UTF8", "cp1251": "WIN1251"}
_AUTH_SQLSTATES = {"28000", "28P01"}
_UNAVAILABLE_SQLSTATES = {
    "3D000",
    "53300",
    "57P01",
    "57P02",
    "57P03",
    "08000",
    "08001",
    "08004",
    "08006",
}


class CsvRowCounter:
    """Counts CSV records (line ends outside double quotes) across arbitrary chunk borders."""

    def __init__(self) -> None:
        self.in_quotes = False

    def count(self, chunk: bytes) -> int:
        if not self.in_quotes and b'"' not in chunk:
            return chunk.count(b"\n")
        rows = 0
        for i, piece in enumerate(chunk.split(b'"')):
            if i:
                self.in_quotes = not self.in_quotes
            if not self.in_quotes:
                rows += piece.count(b"\n")
        return rows


class PostgresProvider(DatabaseProvider):
    def __init__(self, config: DatabaseConfig) -> None:
        super().__init__(config)

    async def _connect(self, username: str, password: str, timeout_s: float) -> Any:
        try:
            return await asyncpg.connect(
                self.config.dsn,
                user=username,
                password=password,
                timeout=self.config.connect_timeout_s,
                statement_cache_size=0,
                server_settings={
                    "application_name": "exporter-api",
                    "statement_timeout": str(int(timeout_s * 1000)),
                },
            )
        except asyncpg.PostgresError as exc:
            if exc.sqlstate in _AUTH_SQLSTATES:
                raise InvalidCredentials() from None
            if exc.sqlstate in _UNAVAILABLE_SQLSTATES:
                raise DatabaseUnavailable(f"database {self.config.id} is not available") from None
            raise DatabaseUnavailable(
                f"database {self.config.id} refused the connection ({exc.sqlstate})"
            ) from None
        except (OSError, TimeoutError, ssl.SSLError, asyncpg.InterfaceError):
            raise DatabaseUnavailable(f"database {self.config.id} is not reachable") from None

    async def verify_login(self, username: str, password: str) -> None:
        # Not under `limiter`: a login must not wait behind hours-long exports.
        conn = await self._connect(username, password, 30)
        with anyio.CancelScope(shield=True):
            await conn.close(timeout=5)

    async def export(
        self, username: str, password: str, request: ExportRequest, sink: ExportSink
    ) -> ExportResult:
        async with self.limiter:
            conn = await self._connect(username, password, request.statement_timeout_s)
            try:
                return await self._copy(conn, request, sink)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._close(conn)

    async def _close(self, conn: Any) -> None:
        # After a cancelled COPY asyncpg has sent a cancel request to the server; close() waits
        # for the server to acknowledge it, so the query is gone when export() returns.
        try:
            with anyio.fail_after(5):
                await conn.close()
        except Exception:
            conn.terminate()

    async def _copy(self, conn: Any, request: ExportRequest, sink: ExportSink) -> ExportResult:
        # COPY (...) takes one statement: no terminator, and a line break so a trailing
        # `-- comment` cannot swallow the closing parenthesis.
        script = strip_terminator(wrap_columns(request.sql, request.columns)) + "\n"
        sql = await self._inline_params(conn, script, request.params)
        counter = CsvRowCounter()
        pending: list[bytes] = []
        pending_size = 0
        rows = size = 0
        header_left = request.header

        async def flush() -> None:
            nonlocal pending_size, rows, size, header_left
            data = b"".join(pending)
            pending.clear()
            pending_size = 0
            n = counter.count(data)
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

        try:
            await conn.copy_from_query(
                sql,
                output=on_data,
                format="csv",
                header=request.header,
                delimiter=request.delimiter,
                encoding=_PG_ENCODINGS.get(request.encoding, "UTF8"),
            )
        except asyncpg.QueryCanceledError:
            raise QueryFailed(
                f"statement timeout after {request.statement_timeout_s:g} s"
            ) from None
        except asyncpg.PostgresError as exc:
            raise QueryFailed(f"SQL error {exc.sqlstate}: {_message(exc)}") from None
        except (OSError, asyncpg.InterfaceError):
            raise DatabaseUnavailable(f"lost the connection to {self.config.id}") from None
        if pending:
            # A result without rows is only the header line: nothing is written (NoData). Until
            # the first flush the counter is at its initial state, so a fresh one can probe.
            records = CsvRowCounter().count(b"".join(pending))
            if size or records - (1 if header_left else 0) > 0:
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
        except asyncpg.PostgresError as exc:
            raise QueryFailed(f"SQL error {exc.sqlstate}: {_message(exc)}") from None
        except (ValueError, TypeError, asyncpg.DataError) as exc:
            raise QueryFailed(f"parameter does not fit the query: {exc}") from None
        return parsed.render({name: literals[order.index(name)] for name in order})


def _type_name(name: str) -> str:
    return "_" + name[:-2] if name.endswith("[]") else name


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _message(exc: asyncpg.PostgresError) -> str:
    return str(getattr(exc, "message", "") or type(exc).__name__)


__all__ = ["CsvRowCounter", "PostgresProvider"]
