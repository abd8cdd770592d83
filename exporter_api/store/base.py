"""The state store interface and the migration runner shared by both backends.

SQL written for the store uses `:name` parameters and a portable subset of types: TEXT, INTEGER,
BIGINT, DOUBLE PRECISION; timestamps are ISO-8601 UTC TEXT; booleans INTEGER 0/1.

Driver errors that mean "the store cannot be used right now" (disk full, I/O error, connection
lost, server shutting down, store closed) are translated at this boundary into one domain error,
`StoreUnavailable` (503), so no endpoint answers 500 for them. Errors that point at a bug (SQL
syntax, constraint violations) pass through unchanged.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    contextmanager,
    nullcontext,
)
from importlib import resources
from typing import Any

import structlog

from exporter_api.errors import StoreUnavailable
from exporter_api.sqlparams import split_statements
from exporter_api.timestamps import utc_now

_log = structlog.get_logger("exporter_api.store")
# `NNNN_name.sql` runs on both backends; `NNNN_name.sqlite.sql` / `NNNN_name.postgres.sql` only
# on that one (after the portable file of the same version, in the same transaction): triggers
# and functions are not portable.
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)(?:\.(sqlite|postgres))?\.sql$")


def utcnow_iso() -> str:
    """Timestamps in the store: `2026-01-23T12:34:56.789Z` (sortable as text)."""
    return utc_now()


class Store(ABC):
    """Async access to the state store with `:name` parameters."""

    backend: str  # "sqlite" | "postgres"

    @abstractmethod
    async def execute(self, sql: str, params: Mapping[str, object] | None = None) -> int:
        """Run one statement; returns the number of rows it changed."""

    @abstractmethod
    async def fetch_all(
        self, sql: str, params: Mapping[str, object] | None = None
    ) -> list[tuple[Any, ...]]: ...

    async def fetch_one(
        self, sql: str, params: Mapping[str, object] | None = None
    ) -> tuple[Any, ...] | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    def maintenance(self) -> AbstractContextManager[None]:
        """Statements of this task inside the block are background maintenance (a purge of a
        large backlog): allowed to run longer than a request's (where a backend bounds them)."""
        return nullcontext()

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[None]:
        """Statements of this task inside the block run in one transaction."""

    @abstractmethod
    async def lock(self, key: str) -> None:
        """Inside ``transaction()``: serialise it with every other transaction taking the same
        ``key`` (on every instance sharing the store) until it ends."""

    @abstractmethod
    async def aclose(self) -> None: ...

    def _is_unavailable(self, exc: Exception) -> bool:
        """Whether the driver error `exc` means the store cannot be used right now."""
        return isinstance(exc, OSError)

    @contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """Around every driver call: unavailability errors become `StoreUnavailable`."""
        try:
            yield
        except StoreUnavailable:
            raise
        except Exception as exc:
            if not self._is_unavailable(exc):
                raise
            # The driver's text is not logged: only its code (it never names a credential).
            code = (
                getattr(exc, "sqlite_errorname", None)
                or getattr(exc, "sqlstate", None)
                or getattr(exc, "errno", None)
            )
            _log.warning(
                "store_unavailable",
                backend=self.backend,
                error_type=type(exc).__name__,
                code=code,
            )
            raise StoreUnavailable() from exc

    @abstractmethod
    def _migration_lock(self) -> AbstractAsyncContextManager[None]:
        """Held while migrating (several instances may start at once)."""

    def _statements(self, sql: str) -> list[str]:
        """The statements of a migration script."""
        return split_statements(sql)

    async def migrate(self) -> list[str]:
        """Apply pending migrations in order; returns the names applied."""
        applied: list[str] = []
        async with self._migration_lock():
            await self.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {
                int(r[0]) for r in await self.fetch_all("SELECT version FROM schema_migrations")
            }
            for version, name, sql in load_migrations(self.backend):
                if version in done:
                    continue
                async with self.transaction():
                    for statement in self._statements(sql):
                        await self.execute(statement)
                    await self.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at)"
                        " VALUES (:version, :name, :at)",
                        {"version": version, "name": name, "at": utcnow_iso()},
                    )
                _log.info("store_migration_applied", backend=self.backend, migration=name)
                applied.append(name)
        return applied


def load_migrations(backend: str | None = None) -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration in store/migrations, in order.

    A version's SQL is its portable file followed, with ``backend``, by that backend's own file;
    its name is the portable file's (``NNNN_name.sql``) whichever backend runs it.
    """
    portable: dict[int, tuple[str, str]] = {}
    specific: dict[tuple[int, str], str] = {}
    names: dict[int, str] = {}
    for entry in resources.files("exporter_api.store").joinpath("migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if not m:
            continue
        version, base, only = int(m.group(1)), m.group(2), m.group(3)
        if names.setdefault(version, base) != base:
            raise RuntimeError("two migrations share a version number")
        text = entry.read_text(encoding="utf-8")
        if only is None:
            portable[version] = (entry.name, text)
        else:
            specific[(version, only)] = text
    found: list[tuple[int, str, str]] = []
    for version in sorted(names):
        name, sql = portable.get(version, (f"{version:04d}_{names[version]}.sql", ""))
        if backend is not None and (version, backend) in specific:
            sql = f"{sql}\n;\n{specific[(version, backend)]}"
        found.append((version, name, sql))
    return found


__all__ = ["Store", "load_migrations", "utcnow_iso"]
