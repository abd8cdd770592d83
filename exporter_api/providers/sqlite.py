"""The demo provider: a local SQLite file with the accounts listed in the configuration.

SQLite has no accounts, so `verify_login` checks the configured scrypt/PBKDF2 hash. Queries run
on a worker thread of their own over a read-only connection; batches come back to the event
loop through a bounded memory stream: rows as fetched (`ExportRequest.rows`: the sink formats
them), or plain CSV whose lines SQLite itself builds, one text value per row (`_export_lines`).
Cancellation and the statement timeout stop the query through SQLite's progress handler, so
nothing keeps running after `export` returns.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread
import structlog

from exporter_api.config import DatabaseConfig
from exporter_api.csvcodec import CsvEncoder
from exporter_api.errors import DatabaseUnavailable, InvalidCredentials, QueryFailed
from exporter_api.providers.base import (
    DatabaseProvider,
    ExportRequest,
    ExportResult,
    ExportSink,
    permission_denied,
    row_sink,
    statement_timeout,
    wrap_columns,
)
from exporter_api.security.passwords import hash_password, verify_password
from exporter_api.sqlparams import quote_ident, strip_terminator, to_qmark

_log = structlog.get_logger("exporter_api.providers.sqlite")


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the login is unknown, so both paths cost one hash computation.
    Computed on first use, on the worker thread of a login (never at import, on the loop)."""
    return hash_password("dummy-password", salt=b"exporter-api-dum")


def _check_password(password: str, encoded: str | None) -> bool:
    return verify_password(password, encoded or _dummy_hash())


class _Stopped(Exception):
    pass


# CSV bytes, or the labels with a batch of rows (`ExportRequest.rows`); and the row count.
_Batch = tuple[bytes | tuple[list[str], list[Any]], int]


async def _produce(
    query: Callable[[], None],
    send: anyio.abc.ObjectSendStream[_Batch],
    failures: list[Exception],
) -> None:
    """Runs ``query`` (which sends its batches to ``send``) in a thread of its own for the whole
    query (not the shared pool's); closes ``send`` when it ends."""
    async with send:
        try:
            await anyio.to_thread.run_sync(query, limiter=anyio.CapacityLimiter(1))
        except (QueryFailed, DatabaseUnavailable) as exc:
            failures.append(exc)  # raised by export() itself, not as an exception group


class SqliteProvider(DatabaseProvider):
    # Plain CSV: SQLite turns each row into one line of text itself (`_export_lines`).
    server_csv = True

    def __init__(self, config: DatabaseConfig, data_dir: Path, config_dir: Path) -> None:
        super().__init__(config)
        dsn = Path(config.dsn)
        self.path = dsn if dsn.is_absolute() else data_dir / dsn
        self.init_sql = (config_dir / config.init_sql) if config.init_sql else None
        self._users = {u.login: u.password_hash for u in config.users}

    async def start(self) -> None:
        if self.init_sql is None or await anyio.Path(self.path).exists():
            return
        started = time.monotonic()
        await anyio.to_thread.run_sync(self._generate)
        _log.info(
            "sqlite_database_generated",
            database_id=self.config.id,
            path=str(self.path),
            seconds=round(time.monotonic() - started, 2),
        )

    def _generate(self) -> None:
        assert self.init_sql is not None
        script = self.init_sql.read_text(encoding="utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Built under a temporary name and renamed: a crash never leaves half a database.
        tmp = self.path.with_name(self.path.name + ".building")
        tmp.unlink(missing_ok=True)
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(script)
            conn.commit()
        finally:
            conn.close()
        tmp.replace(self.path)

    async def verify_login(self, username: str, password: str) -> None:
        encoded = self._users.get(username)
        ok = await anyio.to_thread.run_sync(_check_password, password, encoded)
        if encoded is None or not ok:
            raise InvalidCredentials()
        if not await anyio.Path(self.path).is_file():
            raise DatabaseUnavailable(f"database {self.config.id} is not available")

    async def export(
        self, username: str, password: str, request: ExportRequest, sink: ExportSink
    ) -> ExportResult:
        await self.verify_login(username, password)
        sql, args = to_qmark(wrap_columns(request.sql, request.columns), request.params)
        stop = threading.Event()
        rows = size = 0
        failures: list[Exception] = []
        sink_failure: Exception | None = None
        rows_out = row_sink(sink) if request.rows else None
        send, receive = anyio.create_memory_object_stream[_Batch](2)
        # Closed here too: a cancellation may come before the producer task ever starts.
        with send, receive:
            async with self.limiter, anyio.create_task_group() as tg:
                query = functools.partial(self._run_query, sql, args, request, stop, send)
                tg.start_soon(_produce, query, send, failures)
                try:
                    async for chunk, count in receive:
                        try:
                            if isinstance(chunk, bytes):
                                await sink.write(chunk, count)
                                size += len(chunk)
                            else:
                                assert rows_out is not None
                                await rows_out.write_rows(*chunk)
                        except Exception as exc:
                            # Raised below, after the task group, as it is: not wrapped in an
                            # exception group, and never taken for a database error.
                            sink_failure = exc
                            break
                        rows += count
                finally:
                    # Cancellation, a sink error or the end: the worker thread stops at its
                    # next progress-handler tick (or its blocked send fails) and the task
                    # group waits for it.
                    stop.set()
                    receive.close()
        if sink_failure is not None:
            raise sink_failure
        if failures:
            raise failures[0]
        return ExportResult(rows=rows, bytes=size)

    def _run_query(
        self,
        sql: str,
        args: list[object],
        request: ExportRequest,
        stop: threading.Event,
        send: anyio.abc.ObjectSendStream[_Batch],
    ) -> None:
        deadline = time.monotonic() + request.statement_timeout_s
        timed_out = False

        def progress() -> int:
            nonlocal timed_out
            if time.monotonic() > deadline:
                timed_out = True
            return 1 if (timed_out or stop.is_set()) else 0

        def emit(chunk: bytes | tuple[list[str], list[Any]], count: int) -> None:
            if stop.is_set():
                raise _Stopped
            try:
                anyio.from_thread.run(send.send, (chunk, count))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise _Stopped from None

        try:
            uri = self.path.resolve().as_uri() + "?mode=ro"  # percent-encodes odd file names
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error:
            raise DatabaseUnavailable(f"database {self.config.id} is not available") from None
        try:
            conn.set_progress_handler(progress, 10_000)
            try:
                names = None if request.rows else _line_names(conn, sql, args, request)
                if names is None:
                    _export_rows(conn, sql, args, request, emit)
                else:
                    _export_lines(conn, sql, args, names, request, emit)
            except sqlite3.OperationalError as exc:
                if timed_out:
                    raise statement_timeout(request.statement_timeout_s) from None
                if stop.is_set():
                    return
                raise _sql_error(exc) from None
            except sqlite3.Error as exc:
                raise _sql_error(exc) from None
            except _Stopped:
                return
        finally:
            conn.close()


_Emit = Callable[[bytes | tuple[list[str], list[Any]], int], None]

# Between the fields of a line SQLite builds (see `_export_lines`): a control character that
# text values practically never hold. A batch where one does is read again field by field.
_US = "\x1f"


def _labels(
    conn: sqlite3.Connection, sql: str, args: list[object], request: ExportRequest
) -> list[str]:
    """The result's column names: the profile's labels, else what SQLite says (no rows read)."""
    if request.columns:
        return [c.label for c in request.columns]
    cursor = conn.execute(f"SELECT * FROM (\n{strip_terminator(sql)}\n) LIMIT 0", args)  # noqa: S608
    names = [d[0] for d in cursor.description or ()]
    cursor.close()
    return names


def _line_names(
    conn: sqlite3.Connection, sql: str, args: list[object], request: ExportRequest
) -> list[str] | None:
    """The names `_export_lines` refers to the result's columns by; None when they cannot be
    referred to one by one (two columns of the same name, or not a query)."""
    try:
        names = _labels(conn, sql, args, request)
    except sqlite3.Error:  # not a query that can be a subquery: run as it is (and fail there)
        return None
    if not names or len(set(names)) != len(names):
        return None
    return names


def _export_rows(
    conn: sqlite3.Connection,
    sql: str,
    args: list[object],
    request: ExportRequest,
    emit: _Emit,
) -> None:
    """Rows as fetched (`ExportRequest.rows`), or CSV formatted here by ``csv.writer``."""
    cursor = conn.execute(sql, args)
    header = [d[0] for d in cursor.description or ()]
    encoder = CsvEncoder(request.delimiter, request.encoding, header)
    done = 0
    while batch := cursor.fetchmany(request.batch_rows):
        if request.rows:  # the sink formats (on a thread of its own)
            emit((header, batch), len(batch))
        else:
            head = encoder.header() if (not done and request.header) else b""
            emit(head + encoder.encode(batch, done + 1), len(batch))
        done += len(batch)


def _export_lines(
    conn: sqlite3.Connection,
    sql: str,
    args: list[object],
    names: list[str],
    request: ExportRequest,
    emit: _Emit,
) -> None:
    """Plain CSV from one text value per row that SQLite builds with ``printf`` (its fields
    joined by ``_US``; NULL as empty, numbers as SQLite writes them): SQLite turns values into
    text in C, which is the costly part of CSV in Python, and a batch needs a few scans and one
    ``replace`` here (`_encode_lines`).

    A batch whose lines hold more separators than fields (a value with U+001F) cannot be split
    back; the rest of the result is then read again as one text value per field (slower, but
    exact), after checking that the rows already written come back the same (a CRC of their
    bytes): both reads run in one read transaction, so only an ambiguous row order could make
    them differ, and that fails the export instead of writing a wrong file."""
    encoder = CsvEncoder(request.delimiter, request.encoding, names)
    conn.execute("BEGIN")  # one snapshot for both reads
    cursor = conn.execute(_line_query(sql, names), args)
    done = crc = 0
    while batch := cursor.fetchmany(request.batch_rows):
        lines = list(map(itemgetter(0), batch))
        body = _encode_lines(lines, len(names), request, encoder, done + 1)
        if body is None:
            break
        head = encoder.header() if (not done and request.header) else b""
        emit(head + body, len(batch))
        crc = zlib.crc32(body, crc)
        done += len(batch)
    else:
        return
    cursor.close()
    cursor = conn.execute(_field_query(sql, names), args)
    again = again_crc = 0
    while again < done:
        batch = cursor.fetchmany(min(request.batch_rows, done - again))
        lines = [_US.join(row) for row in batch]
        body = _encode_lines(lines, len(names), request, encoder, again + 1) if batch else None
        if body is None:
            break
        again_crc = zlib.crc32(body, again_crc)
        again += len(batch)
    if again != done or again_crc != crc:
        raise QueryFailed(
            "a value holds the control character U+001F, and the rows came back in another "
            "order when read again for it; give the script an ORDER BY that fixes the order"
        )
    while batch := cursor.fetchmany(request.batch_rows):
        head = encoder.header() if (not done and request.header) else b""
        emit(head + encoder.encode(batch, done + 1), len(batch))
        done += len(batch)


def _line_query(sql: str, names: list[str]) -> str:
    """The script as one text value per row, its fields joined by ``_US`` (see `_export_lines`)."""
    fields = _US.join(["%s"] * len(names))
    values = ", ".join(_exact(quote_ident(n)) for n in names)
    return f"SELECT printf('{fields}', {values}) FROM (\n{strip_terminator(sql)}\n)"  # noqa: S608


def _field_query(sql: str, names: list[str]) -> str:
    """The script with every value as the text `_line_query` puts in its line."""
    values = ", ".join(f"printf('%s', {_exact(quote_ident(n))})" for n in names)
    return f"SELECT {values} FROM (\n{strip_terminator(sql)}\n)"  # noqa: S608 - quoted names


def _exact(column: str) -> str:
    """``column`` for ``printf('%s')``: a REAL as the fewest of 15, 16 or 17 significant digits
    that read back as the same double (SQLite's own text of a REAL has 15, which loses the
    rest: 1234567890.1234567 would be written 1234567890.12346); any other value as it is.
    SQLite's own text is kept whenever it reads back exactly, so all it wrote exactly stays
    byte for byte the same; a value of another type costs one ``typeof``, a REAL one more
    formatting and parsing."""
    more = [f"printf('%!.{n}g', {column})" for n in (16, 17)]
    return (
        f"CASE WHEN typeof({column}) <> 'real'"
        f" OR CAST(CAST({column} AS TEXT) AS REAL) = {column} THEN {column}"
        f" WHEN CAST({more[0]} AS REAL) = {column} THEN {more[0]} ELSE {more[1]} END"
    )


def _encode_lines(
    lines: list[str], width: int, request: ExportRequest, encoder: CsvEncoder, first_row: int
) -> bytes | None:
    """CSV of a batch of `_line_query` lines; None when a value holds ``_US`` (the lines cannot
    be split back). A batch with nothing to quote (no quote, delimiter or line break in any
    value: the common case) only needs its separators replaced; others are split into fields
    and quoted by ``csv.writer``."""
    text = "\n".join(lines)
    if text.count(_US) != (width - 1) * len(lines):
        return None
    clean = (
        text.count("\n") == len(lines) - 1
        and '"' not in text
        and "\r" not in text
        and request.delimiter not in text
    )

    def fields() -> list[Sequence[object]]:
        return [line.split(_US) for line in lines]

    if clean:
        return encoder.encode_text(text.replace(_US, request.delimiter) + "\n", fields, first_row)
    return encoder.encode(fields(), first_row)


def _sql_error(exc: sqlite3.Error) -> QueryFailed:
    message = str(exc)
    if message.startswith("Could not decode to UTF-8"):
        # The driver's message quotes the expression it read (ours, for CSV) and the value.
        return QueryFailed(
            "SQL error: a value is not UTF-8 text (a BLOB, or text stored in another encoding)"
        )
    if "readonly" in message or "read-only" in message:
        # Exports open the file read-only: a script that writes is refused.
        return QueryFailed(permission_denied(f"exports may only read ({message})"))
    if "syntax error" in message or "incomplete input" in message:
        return QueryFailed(f"SQL syntax error: {message}")
    return QueryFailed(f"SQL error: {message}")


__all__ = ["SqliteProvider"]
