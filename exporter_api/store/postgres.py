"""PostgreSQL state store (asyncpg pool) for deployments with several instances."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import anyio
import asyncpg
import structlog

from exporter_api.errors import StoreUnavailable
from exporter_api.sqlparams import to_numbered
from exporter_api.store.base import Store

_MIGRATION_LOCK_KEY = 0x45585054  # "EXPT": one migrating instance at a time
_CONNECT_TIMEOUT_S = 10.0  # opening a connection to the server
# One statement, or the wait for a pooled connection: a server that stops answering (frozen,
# or the network dropping the pool's connections silently) is a 503 after this, never a hang.
STATEMENT_TIMEOUT_S = 15.0
MAINTENANCE_TIMEOUT_S = 600.0  # a background purge of a large backlog (``maintenance()``)
_END_TIMEOUT_S = 10.0  # COMMIT / ROLLBACK / release of a transaction's connection

_log = structlog.get_logger("exporter_api.store")


class PostgresStore(Store):
    backend = "postgres"

    def __init__(self, pool: Any, *, statement_timeout_s: float = STATEMENT_TIMEOUT_S) -> None:
        self._pool = pool
        self.statement_timeout_s = statement_timeout_s
        self._conn: ContextVar[Any] = ContextVar(f"pg_store_conn_{id(self)}", default=None)
        # Set by _bounded when a call of the connection in use was cut short.
        self._broken: ContextVar[bool] = ContextVar(f"pg_store_broken_{id(self)}", default=False)
        # Lifted while migrating (a migration may rightly run for minutes: a new index) and
        # raised for maintenance; ``None``: no limit.
        self._limit: ContextVar[float | None] = ContextVar(
            f"pg_store_limit_{id(self)}", default=statement_timeout_s
        )

    @classmethod
    async def open(
        cls, url: str, max_size: int = 10, *, statement_timeout_s: float = STATEMENT_TIMEOUT_S
    ) -> PostgresStore:
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=max_size, timeout=_CONNECT_TIMEOUT_S
        )
        return cls(pool, statement_timeout_s=statement_timeout_s)

    def _is_unavailable(self, exc: Exception) -> bool:
        if isinstance(exc, ValueError):
            return False  # asyncpg's DataError (a bad query argument): a bug, not an outage
        return isinstance(
            exc,
            (
                OSError,
                TimeoutError,
                asyncpg.InterfaceError,  # connection lost / pool closed
                # The server ended the session (pg_terminate_backend, failover) while the
                # connection sat idle: asyncpg's protocol state is broken until reconnected.
                asyncpg.InternalClientError,
                asyncpg.PostgresConnectionError,  # class 08
                asyncpg.InsufficientResourcesError,  # class 53: disk full, too many connections
                asyncpg.OperatorInterventionError,  # class 57: shutdown, cannot connect now
                asyncpg.ReadOnlySQLTransactionError,  # a standby after a failover
            ),
        )

    @contextmanager
    def _bounded(self, *, ending: bool = False) -> Iterator[None]:
        """Around a driver call: its errors translated, its time bounded (the store's limit,
        lifted while migrating; ``ending``: a COMMIT, shielded and bounded apart). A call cut
        short (the store unavailable, a timeout, a cancellation) leaves the connection
        unusable: marked broken for ``_connection``."""
        limit = _END_TIMEOUT_S if ending else self._limit.get()
        try:
            with self._translate_errors(), anyio.fail_after(limit, shield=ending):
                yield
        except StoreUnavailable:
            self._broken.set(True)
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception):  # cancelled in the middle of the call
                self._broken.set(True)
            raise

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """This task's transaction's connection, or one from the pool for the block."""
        conn = self._conn.get()
        if conn is not None:
            yield conn
            return
        with self._translate_errors(), anyio.fail_after(self._limit.get()):
            conn = await self._pool.acquire()
        token = self._broken.set(False)
        try:
            yield conn
        except BaseException:
            if self._broken.get():
                # Lost, or cut short in a call (a timeout, a cancellation): closed at once (the
                # server rolls back what it was doing) instead of waiting on it, and the pool
                # opens a new one when it is next needed.
                with contextlib.suppress(asyncpg.InterfaceError):  # closed and detached already
                    conn.terminate()
            raise
        finally:
            self._broken.reset(token)
            with anyio.CancelScope(shield=True):
                try:
                    await self._pool.release(conn, timeout=_END_TIMEOUT_S)
                except Exception as exc:  # asyncpg terminated it; what the block did stands
                    _log.warning(
                        "store_connection_dropped",
                        backend=self.backend,
                        error_type=type(exc).__name__,
                    )

    async def execute(self, sql: str, params: Mapping[str, object] | None = None) -> int:
        query, args = to_numbered(sql, params or {})
        async with self._connection() as conn:
            with self._bounded():
                status: str = await conn.execute(query, *args)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetch_all(
        self, sql: str, params: Mapping[str, object] | None = None
    ) -> list[tuple[Any, ...]]:
        query, args = to_numbered(sql, params or {})
        async with self._connection() as conn:
            with self._bounded():
                rows = await conn.fetch(query, *args)
        return [tuple(r) for r in rows]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self._conn.get() is not None:
            yield
            return
        async with self._connection() as conn:
            tx = conn.transaction()
            with self._bounded():
                await tx.start()
            token = self._conn.set(conn)
            try:
                yield
            except BaseException:
                if not self._broken.get():  # else the connection is terminated
                    with anyio.move_on_after(_END_TIMEOUT_S, shield=True):
                        await self._rollback(tx)
                raise
            finally:
                self._conn.reset(token)
            # Shielded (a cancelled request still commits what it did) but bounded: a server
            # that stopped answering must not hang the request or the shutdown.
            with self._bounded(ending=True):
                await tx.commit()

    async def migrate(self) -> list[str]:
        token = self._limit.set(None)
        try:
            return await super().migrate()
        finally:
            self._limit.reset(token)

    @contextmanager
    def maintenance(self) -> Iterator[None]:
        token = self._limit.set(MAINTENANCE_TIMEOUT_S)
        try:
            yield
        finally:
            self._limit.reset(token)

    async def _rollback(self, tx: Any) -> None:
        # On a lost connection ROLLBACK fails too; the error that caused it is the one to raise.
        try:
            await tx.rollback()
        except Exception as exc:
            if not self._is_unavailable(exc):
                raise

    async def lock(self, key: str) -> None:
        conn = self._conn.get()
        if conn is None:
            raise RuntimeError("Store.lock() needs a transaction")
        # A transaction-scoped advisory lock: released by COMMIT / ROLLBACK.
        with self._bounded():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)

    @asynccontextmanager
    async def _migration_lock(self) -> AsyncIterator[None]:
        async with self._pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)

    async def aclose(self) -> None:
        await self._pool.close()


__all__ = ["PostgresStore"]
