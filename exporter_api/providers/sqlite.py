"""The demo provider: a local SQLite file with the accounts listed in the configuration.

SQLite has no accounts, so `verify_login` checks the configured scrypt/PBKDF2 hash. Queries run
on a worker thread of their own over a read-only connection; batches come back to the event
loop through a bounded memory stream: rows as fetched (`ExportRequest.rows`: the sink formats
them, `_export_rows`), or plain CSV formatted in C, a batch at a time (`_export_csv`, the
`Reader` of ``_sqlitecsv.c``). Cancellation and the statement timeout stop the query through
SQLite's progress handler, so nothing keeps running after `export` returns.

The C reader is optional (``hatch_build.py`` builds without it when there is no C compiler or
no ``sqlite3.h``): without it ``server_csv`` is False, so runs ask for rows as they do from
Oracle, and `start` logs ``sqlite_csv_reader_unavailable`` once.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from exporter_api.sqlparams import to_qmark

if TYPE_CHECKING:
    from exporter_api.providers._sqlitecsv import Reader

_log = structlog.get_logger("exporter_api.providers.sqlite")

# A batch of C-formatted CSV ends with the row that takes it past this many bytes (or at
# ``batch_rows``): two batches in the hand-off stay a few MiB whatever the rows hold.
BATCH_BYTES = 4 << 20


def csv_reader() -> type[Reader] | None:
    """The C reader (``_sqlitecsv.c``), or None when it was not built (`hatch_build.py`)."""
    try:
        from exporter_api.providers._sqlitecsv import Reader
    except ImportError:
        return None
    return Reader


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
    def __init__(self, config: DatabaseConfig, data_dir: Path, config_dir: Path) -> None:
        super().__init__(config)
        self._reader = csv_reader()
        # Plain CSV comes formatted from C (`_export_csv`): bytes, not rows; without the C
        # reader, rows (the sink formats them, as Oracle's).
        self.server_csv = self._reader is not None
        dsn = Path(config.dsn)
        self.path = dsn if dsn.is_absolute() else data_dir / dsn
        self.init_sql = (config_dir / config.init_sql) if config.init_sql else None
        self._users = {u.login: u.password_hash for u in config.users}

    async def start(self) -> None:
        if self._reader is None:
            _log.warning(
                "sqlite_csv_reader_unavailable",
                database_id=self.config.id,
                detail="the C reader (_sqlitecsv) was not built: CSV rows are formatted in "
                "Python, several times slower (see hatch_build.py)",
            )
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
        stop = _Stop()
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
        stop: _Stop,
        send: anyio.abc.ObjectSendStream[_Batch],
    ) -> None:
        def emit(chunk: bytes | tuple[list[str], list[Any]], count: int) -> None:
            if stop.is_set():
                raise _Stopped
            try:
                anyio.from_thread.run(send.send, (chunk, count))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise _Stopped from None

        uri = self.path.resolve().as_uri() + "?mode=ro"  # percent-encodes odd file names
        if request.rows or self._reader is None:
            query = _export_rows(uri, request, stop)
        else:
            query = _export_csv(self._reader, uri, request, stop)
        try:
            with query as (run, timed_out):
                try:
                    run(sql, args, emit)
                except sqlite3.OperationalError as exc:
                    if timed_out():
                        raise statement_timeout(request.statement_timeout_s) from None
                    if stop.is_set():
                        return
                    raise _sql_error(exc) from None
                except sqlite3.Error as exc:
                    raise _sql_error(exc) from None
                except (MemoryError, UnicodeError, OverflowError) as exc:
                    raise _value_error(exc) from None
                except _Stopped:
                    return
        except _Unavailable:
            raise DatabaseUnavailable(f"database {self.config.id} is not available") from None


class _Stop:
    """An export's stop signal: set on the event loop (cancellation, a sink error, the end),
    seen by the query thread between batches and passed on to a running C read."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reader: Reader | None = None

    def set(self) -> None:
        with self._lock:
            self._event.set()
            if self._reader is not None:
                self._reader.interrupt()

    def is_set(self) -> bool:
        return self._event.is_set()

    def watch(self, reader: Reader) -> None:
        with self._lock:
            self._reader = reader
            if self._event.is_set():
                reader.interrupt()


class _Unavailable(Exception):
    """The database file could not be opened."""


_Emit = Callable[[bytes | tuple[list[str], list[Any]], int], None]
# An opened query: run(sql, args, emit), and whether the statement timeout stopped it.
_Query = tuple[Callable[[str, list[object], _Emit], None], Callable[[], bool]]


@contextlib.contextmanager
def _export_csv(
    reader_type: type[Reader], uri: str, request: ExportRequest, stop: _Stop
) -> Iterator[_Query]:
    """Plain CSV, formatted in C by `Reader` (``_sqlitecsv.c``) a batch at a time with the GIL
    released: the rows never become Python objects, and their text is checked to be UTF-8
    there. For cp1251 each batch is transcoded here."""
    try:
        reader = reader_type(uri, request.delimiter, request.statement_timeout_s)
    except sqlite3.Error:
        raise _Unavailable from None

    def run(sql: str, args: list[object], emit: _Emit) -> None:
        reader.execute(sql, args)
        names = reader.columns
        encoder = CsvEncoder(request.delimiter, request.encoding, names)
        utf8 = encoder.codec == "utf-8"
        header = encoder.header() if request.header and utf8 else b""
        done = 0
        while True:
            # The header line (UTF-8) comes in the first batch's buffer: no copy to join them.
            chunk, count = reader.read(request.batch_rows, BATCH_BYTES, b"" if done else header)
            if not count:
                return
            if not utf8:
                chunk = _transcode(chunk, encoder, request, first_row=done + 1)
            emit(chunk, count)
            done += count

    try:
        stop.watch(reader)
        yield run, lambda: reader.timed_out
    finally:
        reader.close()


def _transcode(chunk: bytes, encoder: CsvEncoder, request: ExportRequest, first_row: int) -> bytes:
    """A batch of `Reader` CSV (UTF-8) in the output's encoding, its header first in the first
    one; the rows' values (parsed back) name a character the encoding cannot hold."""
    text = chunk.decode()

    def rows() -> list[Sequence[object]]:
        return list(csv.reader(io.StringIO(text, newline=""), delimiter=request.delimiter))

    head = encoder.header() if (first_row == 1 and request.header) else b""
    return head + encoder.encode_text(text, rows, first_row)


@contextlib.contextmanager
def _export_rows(uri: str, request: ExportRequest, stop: _Stop) -> Iterator[_Query]:
    """Rows as fetched (`ExportRequest.rows`: the sink formats them), over the sqlite3 module,
    or, without the C reader, CSV of them formatted by `CsvEncoder`; the progress handler stops
    the query on cancellation or at the statement timeout."""
    deadline = time.monotonic() + request.statement_timeout_s
    timed_out = False

    def progress() -> int:
        nonlocal timed_out
        if time.monotonic() > deadline:
            timed_out = True
        return 1 if (timed_out or stop.is_set()) else 0

    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.Error:
        raise _Unavailable from None

    def run(sql: str, args: list[object], emit: _Emit) -> None:
        cursor = conn.execute(sql, args)
        header = [d[0] for d in cursor.description or ()]
        encoder = CsvEncoder(request.delimiter, request.encoding, header)
        done = 0
        while batch := cursor.fetchmany(request.batch_rows):
            if request.rows:  # the sink formats them (on a thread of its own)
                emit((header, batch), len(batch))
            else:  # CSV without the C reader: what a sink would make of the rows
                head = encoder.header() if (not done and request.header) else b""
                emit(head + encoder.encode(batch, done + 1), len(batch))
            done += len(batch)

    try:
        conn.set_progress_handler(progress, 10_000)
        yield run, lambda: timed_out
    finally:
        conn.close()


_NOT_UTF8 = "SQL error: a text value is not UTF-8 (text stored in another encoding)"


def _value_error(exc: MemoryError | UnicodeError | OverflowError) -> QueryFailed:
    """A parameter SQLite cannot take (a number out of range, text that is not valid Unicode),
    a column name or value that is not UTF-8, or a result too big for memory."""
    if isinstance(exc, MemoryError):
        return QueryFailed("the query's result does not fit in memory (a value too large?)")
    if isinstance(exc, UnicodeDecodeError):
        return QueryFailed(_NOT_UTF8)
    if isinstance(exc, UnicodeEncodeError):
        return QueryFailed("SQL error: a parameter is not valid text (an unpaired surrogate)")
    return QueryFailed(f"SQL error: a parameter is out of range ({exc})")


def _sql_error(exc: sqlite3.Error) -> QueryFailed:
    message = str(exc)
    if message.startswith("Could not decode to UTF-8"):
        return QueryFailed(_NOT_UTF8)  # the driver's message quotes the value
    if "readonly" in message or "read-only" in message:
        # Exports open the file read-only: a script that writes is refused.
        return QueryFailed(permission_denied(f"exports may only read ({message})"))
    if "syntax error" in message or "incomplete input" in message:
        return QueryFailed(f"SQL syntax error: {message}")
    return QueryFailed(f"SQL error: {message}")


__all__ = ["SqliteProvider"]
