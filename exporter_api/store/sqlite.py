"""SQLite state store: one connection used from worker threads, one statement at a time."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from exporter_api.store.base import Store

# Primary result codes meaning "cannot use the store now": BUSY, LOCKED, NOMEM, READONLY, IOERR,
# CORRUPT, FULL, CANTOPEN, PROTOCOL, NOLFS, NOTADB.
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 22, 26})


class SqliteStore(Store):
    backend = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = anyio.Lock()
        self._in_tx: ContextVar[bool] = ContextVar(f"sqlite_store_tx_{id(self)}", default=False)

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 5000")
            path.chmod(0o600)
            return conn

        conn = await anyio.to_thread.run_sync(connect)
        return cls(conn)

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
        async with self._lock:
            await anyio.to_thread.run_sync(self._conn.close)


__all__ = ["SqliteStore"]
