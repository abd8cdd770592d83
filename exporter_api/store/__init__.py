"""State store: SQLite under the data directory by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path

from exporter_api.store.base import Store, load_migrations, utcnow_iso


async def open_store(data_dir: Path, url: str | None = None) -> Store:
    """Open the store (PostgreSQL when `url` is given) and apply pending migrations."""
    store: Store
    if url:
        from exporter_api.store.postgres import PostgresStore

        store = await PostgresStore.open(url)
    else:
        from exporter_api.store.sqlite import SqliteStore

        store = await SqliteStore.open(data_dir / "state.sqlite3")
    try:
        await store.migrate()
    except BaseException:
        await store.aclose()
        raise
    return store


__all__ = ["Store", "load_migrations", "open_store", "utcnow_iso"]
