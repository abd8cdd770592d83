"""SQLite state store: one connection used from worker threads, one statement at a time.

One process uses a SQLite store: the run engine takes every active run in it as left by a
previous process (it resumes them at once, frees their slot leases and removes their partial
files). So while the store is open the process holds an exclusive ``flock`` on
``<data dir>/state.lock``, and a second process on the same data directory (an overlapping
restart, an operator's mistake) refuses to start with ``DataDirInUse`` instead of taking over the
first one's live runs. The kernel releases the lock when the process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from exporter_api.errors import ExporterError
from exporter_api.store.base import Store

LOCK_FILE_NAME = "state.lock"

# Primary result codes meaning "cannot use the store now": BUSY, LOCKED, NOMEM, READONLY, IOERR,
# CORRUPT, FULL, CANTOPEN, PROTOCOL, NOLFS, NOTADB.
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 22, 26})


class DataDirInUse(ExporterError):
    """Another process holds the data directory's SQLite state store."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(
            f"another exporter-api process is using the data directory {data_dir}; stop it, or "
            "use a PostgreSQL state store to run several instances"
        )
        self.data_dir = data_dir


def _lock_data_dir(data_dir: Path) -> int:
    """Take the data directory's exclusive lock (blocking call, but it never waits: LOCK_NB);
    the descriptor holds it until closed."""
    fd = os.open(data_dir / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirInUse(data_dir) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


class SqliteStore(Store):
    backend = "sqlite"

    def __init__(self, conn: sqlite3.Connection, lock_fd: int | None = None) -> None:
        self._conn = conn
        self._lock_fd = lock_fd  # the data directory's lock, released by aclose()
        self._lock = anyio.Lock()
        self._in_tx: ContextVar[bool] = ContextVar(f"sqlite_store_tx_{id(self)}", default=False)

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        """Open the store at ``path`` and lock its directory.

        Raises:
            DataDirInUse: another process has the store in ``path``'s directory open.
        """

        def connect() -> tuple[sqlite3.Connection, int]:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = _lock_data_dir(path.parent)
            try:
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("PRAGMA synchronous = NORMAL")
                    conn.execute("PRAGMA foreign_keys = ON")
                    conn.execute("PRAGMA busy_timeout = 5000")
                    path.chmod(0o600)
                except BaseException:
                    conn.close()
                    raise
            except BaseException:
                os.close(lock_fd)
                raise
            return conn, lock_fd

        conn, lock_fd = await anyio.to_thread.run_sync(connect)
        return cls(conn, lock_fd)

    @classmethod
    async def open_readonly(cls, path: Path) -> SqliteStore:
        """Open the store at ``path`` for reading only, without the data directory's lock: a
        tool reading it beside the running service (``exporter-api audit``)."""

        def connect() -> sqlite3.Connection:
            if not path.is_file():
                raise FileNotFoundError(path)
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 5000")
            return conn

        return cls(await anyio.to_thread.run_sync(connect))

    def _is_unavailable(self, exc: Exception) -> bool:
        if isinstance(exc, sqlite3.ProgrammingError):
            # Misuse is a bug, except using the store after it was closed (shutdown).
            return "closed" in str(exc)
        if isinstance(exc, sqlite3.Error):
            # By result code: SQLITE_ERROR (a SQL mistake) or a constraint is a bug, not an outage.
            code = getattr(exc, "sqlite_errorcode", None)
            return code is not None and code & 0xFF in _UNAVAILABLE_CODES
        return isinstance(exc, OSError)

    async def _run(self, fn: Any, *args: Any) -> Any:
        with self._translate_errors():
            if self._in_tx.get():
                return await anyio.to_thread.run_sync(fn, *args)
            async with self._lock:
                return await anyio.to_thread.run_sync(fn, *args)

    def _rollback(self) -> None:
        # SQLITE_FULL / SQLITE_IOERR may already have rolled the transaction back; a failing
        # ROLLBACK must not replace the error that caused it.
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def _commit(self) -> None:
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full) leaves the transaction open: end it, or every later
            # BEGIN on this shared connection would fail.
            self._rollback()
            raise

    def _statements(self, sql: str) -> list[str]:
        # A trigger body holds `;`s: pieces are joined until SQLite calls the statement complete.
        statements: list[str] = []
        pending = ""
        for piece in super()._statements(sql):
            pending = f"{pending}\n{piece};" if pending else f"{piece};"
            if sqlite3.complete_statement(pending):
                statements.append(pending)
                pending = ""
        if pending:
            statements.append(pending)
        return statements

    async def execute(self, sql: str, params: Mapping[str, object] | None = None) -> int:
        def run() -> int:
            return self._conn.execute(sql, dict(params or {})).rowcount

        result: int = await self._run(run)
        return result

    async def fetch_all(
        self, sql: str, params: Mapping[str, object] | None = None
    ) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            return [tuple(r) for r in self._conn.execute(sql, dict(params or {})).fetchall()]

        result: list[tuple[Any, ...]] = await self._run(run)
        return result

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self._in_tx.get():
            yield  # nested: part of the outer transaction
            return
        async with self._lock:
            token = self._in_tx.set(True)
            try:
                with self._translate_errors():
                    await anyio.to_thread.run_sync(self._conn.execute, "BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(self._rollback)
                    raise
                with anyio.CancelScope(shield=True), self._translate_errors():
                    await anyio.to_thread.run_sync(self._commit)
            finally:
                self._in_tx.reset(token)

    async def lock(self, key: str) -> None:
        if not self._in_tx.get():
            raise RuntimeError("Store.lock() needs a transaction")
        # BEGIN IMMEDIATE already holds the database's write lock: transactions are serial.

    @asynccontextmanager
    async def _migration_lock(self) -> AsyncIterator[None]:
        yield  # one process owns a SQLite store

    async def aclose(self) -> None:
        lock_fd, self._lock_fd = self._lock_fd, None

        def close() -> None:
            try:
                self._conn.close()
            finally:  # only once the connection is closed may another process take the store
                if lock_fd is not None:
                    os.close(lock_fd)

        async with self._lock:
            await anyio.to_thread.run_sync(close)


__all__ = ["LOCK_FILE_NAME", "DataDirInUse", "SqliteStore"]
