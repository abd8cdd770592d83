from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from exporter_api.store import Store, load_migrations, open_store


def test_migrations_are_numbered_in_order() -> None:
    migrations = load_migrations()
    assert migrations[0][1] == "0001_auth.sql"
    assert [v for v, _, _ in migrations] == sorted({v for v, _, _ in migrations})


async def test_migrations_applied_once(store: Store) -> None:
    rows = await store.fetch_all("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [r[1] for r in rows] == [name for _, name, _ in load_migrations()]
    assert await store.migrate() == []  # idempotent


async def test_named_parameters_round_trip(store: Store) -> None:
    await store.execute(
        "INSERT INTO login_throttle (throttle_key, failures, window_start, locked_until)"
        " VALUES (:k, :f, :w, :l)",
        {"k": "a:b", "f": 3, "w": "2026-01-01T00:00:00.000Z", "l": None},
    )
    row = await store.fetch_one(
        "SELECT failures, locked_until FROM login_throttle WHERE throttle_key = :k", {"k": "a:b"}
    )
    assert row == (3, None)
    assert (
        await store.fetch_one("SELECT failures FROM login_throttle WHERE throttle_key = ':k'")
        is None
    )
    changed = await store.execute(
        "UPDATE login_throttle SET failures = failures + 1 WHERE throttle_key = :k", {"k": "a:b"}
    )
    assert changed == 1


async def test_transaction_rolls_back_on_error(store: Store) -> None:
    async def failing() -> None:
        async with store.transaction():
            await store.execute(
                "INSERT INTO login_throttle (throttle_key, failures, window_start)"
                " VALUES ('x', 1, 'now')"
            )
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await failing()
    assert await store.fetch_all("SELECT * FROM login_throttle") == []


async def test_transactions_are_isolated_between_tasks(store: Store) -> None:
    """Statements of another task wait for (or do not see) an open transaction."""
    seen: list[int] = []
    inside = anyio.Event()
    release = anyio.Event()

    async def writer() -> None:
        async with store.transaction():
            await store.execute(
                "INSERT INTO login_throttle (throttle_key, failures, window_start)"
                " VALUES ('t', 1, 'now')"
            )
            inside.set()
            await release.wait()
            await store.execute("UPDATE login_throttle SET failures = 2 WHERE throttle_key = 't'")

    async def reader() -> None:
        await inside.wait()
        release.set()
        row = await store.fetch_one("SELECT failures FROM login_throttle WHERE throttle_key = 't'")
        seen.append(row[0] if row else 0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        tg.start_soon(reader)
    assert seen[0] in (0, 2)  # never the half-done state 1


async def test_sqlite_store_file_is_private(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.aclose()
    assert (tmp_path / "state.sqlite3").stat().st_mode & 0o077 == 0
