"""The database provider interface: prove a login, stream one query's result as CSV.

Each provider opens connections under the user's own credentials (there is no shared pool: the
password is the user's), caps concurrent connections per database with a capacity limiter, and
translates its driver's errors into `InvalidCredentials`, `DatabaseUnavailable` and `QueryFailed`
here, at the boundary (`translate_errors`, in the style of httpcore's `map_exceptions`), with
messages a user can act on (the wording is built by the helpers below, shared by the providers).

Errors raised by the sink are not the database's: the sink runs inside the driver's call (asyncpg
calls it from `copy_out`), so its errors come out of the driver call, and a full disk must not
read as a lost database. `GuardedSink` remembers what the sink raised, and `translate_errors`
lets exactly that exception through unchanged.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import anyio
import msgspec

from exporter_api.config import DatabaseConfig
from exporter_api.errors import DatabaseUnavailable, ExporterError, QueryFailed
from exporter_api.sqlparams import quote_ident, strip_terminator


class ExportColumn(msgspec.Struct, frozen=True):
    source: str  # column of the script's result (from the catalog only)
    label: str  # CSV header name


class ExportRequest(msgspec.Struct, kw_only=True):
    sql: str  # with :name placeholders
    params: dict[str, str]
    columns: list[ExportColumn] | None = None  # None: every column of the script, as named
    delimiter: str = ","
    encoding: str = "utf-8"  # "utf-8" | "cp1251"; a BOM for utf-8-sig is the sink's job
    header: bool = True
    statement_timeout_s: float = 3600
    batch_rows: int = 5000
    # Deliver rows (`RowSink.write_rows`, formatted by the sink) instead of CSV bytes.
    rows: bool = False
    # How CSV bytes a provider formats itself (PostgreSQL COPY) write numbers ("." or ",")
    # and dates ("iso": as the server prints them, or "dd.mm.yyyy"); rows are the sink's.
    decimal_separator: str = "."
    date_format: str = "iso"


class ExportResult(msgspec.Struct):
    rows: int
    bytes: int


class ExportSink(Protocol):
    async def write(self, chunk: bytes, rows: int) -> None:
        """One call per batch of already CSV-encoded bytes holding `rows` data rows.

        The first chunk carries the header line (when asked for); a result without rows makes
        no call at all.
        """


@runtime_checkable
class RowSink(ExportSink, Protocol):
    async def write_rows(self, header: Sequence[str], batch: Sequence[Sequence[object]]) -> None:
        """One call per batch of rows as the DB-API cursor gives them (``fetchmany``), with the
        result's column labels; a result without rows makes no call at all."""


def row_sink(sink: ExportSink) -> RowSink:
    """``sink`` as a `RowSink` (an `ExportRequest` with ``rows`` needs one)."""
    if not isinstance(sink, RowSink):
        raise TypeError("ExportRequest.rows needs a sink with write_rows()")
    return sink


class DatabaseProvider(ABC):
    """One configured database."""

    # The server formats CSV itself (PostgreSQL COPY): bytes are cheaper than rows there.
    server_csv = False
    # ...and applies `ExportRequest.decimal_separator` / `date_format` to it (PostgreSQL).
    server_style = False

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.limiter = anyio.CapacityLimiter(config.max_connections)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare the provider when the service starts (the demo sqlite builds its database)."""

    @abstractmethod
    async def verify_login(self, username: str, password: str) -> None:
        """Prove the credentials by connecting; raises InvalidCredentials | DatabaseUnavailable."""

    @abstractmethod
    async def export(
        self, username: str, password: str, request: ExportRequest, sink: ExportSink
    ) -> ExportResult:
        """Run the query under the user's account and stream its rows to `sink` in batches.

        On cancellation the query is stopped on the database server before the cancellation
        propagates. SQL errors and timeouts raise `QueryFailed`, an unreachable server or a lost
        connection `DatabaseUnavailable`, all with credential-free messages; whatever `sink`
        raises propagates unchanged (after the query was stopped).
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what `start` acquired."""


def wrap_columns(sql: str, columns: Sequence[ExportColumn] | None) -> str:
    """`SELECT "src" AS "label", ... FROM (<script>) q`; identifiers come from the catalog only."""
    if columns is None:
        return sql
    if not columns:
        raise QueryFailed("no columns selected")
    select = ", ".join(f"{quote_ident(c.source)} AS {quote_ident(c.label)}" for c in columns)
    # Identifiers are quoted catalog names; the script is the operator's own SQL.
    return f"SELECT {select} FROM (\n{strip_terminator(sql)}\n) q"  # noqa: S608


class GuardedSink:
    """Passes writes to `sink` and remembers the exception a write raised (if any)."""

    def __init__(self, sink: ExportSink) -> None:
        self._sink = sink
        self._failure: BaseException | None = None

    async def write(self, chunk: bytes, rows: int) -> None:
        try:
            await self._sink.write(chunk, rows)
        except BaseException as exc:
            self._failure = exc
            raise

    async def write_rows(self, header: Sequence[str], batch: Sequence[Sequence[object]]) -> None:
        try:
            await row_sink(self._sink).write_rows(header, batch)
        except BaseException as exc:
            self._failure = exc
            raise

    def raised(self, exc: BaseException) -> bool:
        """Whether `exc` is the very exception the sink raised."""
        return self._failure is not None and exc is self._failure


@contextlib.contextmanager
def translate_errors(
    translate: Callable[[Exception], ExporterError | None], sink: GuardedSink | None = None
) -> Iterator[None]:
    """Raise `translate(exc)` instead of a driver error `exc` (without its credential-bearing
    context); our own errors, the sink's errors and what `translate` returns None for pass
    through unchanged."""
    try:
        yield
    except ExporterError:
        raise
    except Exception as exc:
        if sink is not None and sink.raised(exc):
            raise
        error = translate(exc)
        if error is None:
            raise
        raise error from None


def statement_timeout(limit_s: float) -> QueryFailed:
    return QueryFailed(f"the query exceeded the statement timeout of {limit_s:g} s")


def connection_lost(database_id: str) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"the database connection was lost (database {database_id})")


def unreachable(database_id: str, reason: str = "") -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"database {database_id} is unreachable" + (f" ({reason})" if reason else "")
    )


def permission_denied(server_message: str) -> str:
    """`permission denied: ...` (the server's own message when it already starts that way)."""
    if server_message.lower().startswith("permission denied"):
        return server_message
    return f"permission denied: {server_message}"


def scrub(text: str, *secrets: str) -> str:
    """`text` with every non-empty secret (a password echoed by a driver) masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


__all__ = [
    "DatabaseProvider",
    "ExportColumn",
    "ExportRequest",
    "ExportResult",
    "ExportSink",
    "GuardedSink",
    "RowSink",
    "connection_lost",
    "permission_denied",
    "row_sink",
    "scrub",
    "statement_timeout",
    "translate_errors",
    "unreachable",
    "wrap_columns",
]
