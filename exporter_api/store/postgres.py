"""PostgreSQL state store (asyncpg pool) for deployments with several instances."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import anyio
import asyncpg

from exporter_api.sqlparams import to_numbered
from exporter_api.store.base import Store

_MIGRATION_LOCK_KEY = 0x45585054  # "EXPT": one migrating instance at a time
_END_TIMEOUT_S = 10.0  # COMMIT / ROLLBACK / release of a transaction's connection


class PostgresStore(Store):
    backend = "postgres"

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._conn: ContextVar[Any] = ContextVar(f"pg_store_conn_{id(self)}", default=None)

    @classmethod
    async def open(cls, url: str, max_size: int = 10) -> PostgresStore:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size)
        return cls(pool)

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

    async def execute(self, sql: str, params: Mapping[str, object] | None = None) -> int:
        query, args = to_numbered(sql, params or {})
        conn = self._conn.get()
        with self._translate_errors():
            status: str = await (conn or self._pool).execute(query, *args)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetch_all(
        self, sql: str, params: Mapping[str, object] | None = None
    ) -> list[tuple[Any, ...]]:
        query, args = to_numbered(sql, params or {})
        conn = self._conn.get()
        with self._translate_errors():
            rows = await (conn or self._pool).fetch(query, *args)
        return [tuple(r) for r in rows]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self._conn.get() is not None:
            yield
            return
        with self._translate_errors():
            conn = await self._pool.acquire()
        try:
            tx = conn.transaction()
            with self._translate_errors():
                await tx.start()
            token = self._conn.set(conn)
            try:
                yield
            except BaseException:
                with anyio.move_on_after(_END_TIMEOUT_S, shield=True):
                    await self._rollback(tx)
                raise
            finally:
                self._conn.reset(token)
            # Shielded (a cancelled request still commits what it did) but bounded: a server
            # that stopped answering must not hang the request or the shutdown.
            with self._translate_errors(), anyio.fail_after(_END_TIMEOUT_S, shield=True):
                await tx.commit()
        finally:
            with anyio.CancelScope(shield=True):
                # A broken (or timed-out) connection is terminated by the pool, never reused.
                await self._pool.release(conn, timeout=_END_TIMEOUT_S)

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
        with self._translate_errors():
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
