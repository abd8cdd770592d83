"""Database-slot leases: a lease attempt cut off after the store applied it frees its row, and
the heartbeat keeps alive only the leases this instance holds (else a leaked lease would shrink
the database's cap for good and later runs would stay Queued)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest

from exporter_api.config import load_config
from exporter_api.runs.slots import SlotLeases
from exporter_api.store import Store
from tests.exporter_api.conftest import create_pg_database
from tests.exporter_api.runs.conftest import (
    ExportDatabase,
    write_catalog,
)
from tests.exporter_api.runs.enginekit import CREDS, U1, U2, engine_kit, plan, single
from tests.services import PostgresCluster

LONG_AGO = "2000-01-01T00:00:00.000Z"


class LateLeaseReply:
    """A real store whose first lease ``UPDATE`` is applied, then its reply is late (a slow
    network): ``applied`` is set in between, while the caller still waits."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.backend = store.backend
        self.applied = anyio.Event()

    async def execute(self, sql: str, params: Mapping[str, object] | None = None) -> int:
        result = await self._store.execute(sql, params)
        if not self.applied.is_set() and sql.startswith("UPDATE run_slots SET instance_id = :me"):
            self.applied.set()
            await anyio.sleep_forever()  # until the caller is cancelled
        return result

    async def fetch_one(
        self, sql: str, params: Mapping[str, object] | None = None
    ) -> tuple[object, ...] | None:
        return await self._store.fetch_one(sql, params)

    def transaction(self) -> AbstractAsyncContextManager[None]:
        return self._store.transaction()


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    pg: PostgresCluster = request.getfixturevalue("pg")
    return create_pg_database(pg, "slots")


async def leased_rows(store: Store) -> int:
    row = await store.fetch_one("SELECT COUNT(*) FROM run_slots WHERE holder <> ''")
    assert row is not None
    return int(row[0])


async def test_a_run_cancelled_while_its_lease_reply_is_in_flight_frees_the_slot(
    tmp_path: Path, export_db: ExportDatabase, state_url: str | None
) -> None:
    config = load_config(write_catalog(tmp_path / "cat", export_db, max_connections=1))
    async with engine_kit(config, tmp_path / "data", CREDS, state_url=state_url) as kit:
        late = LateLeaseReply(kit.store)
        kit.engine.slots.store = late  # type: ignore[assignment]
        first = await kit.engine.start(U1, plan(config, single("s-orders", "g-sales")))
        await late.applied.wait()
        assert await leased_rows(kit.store) == 1  # the store leased the row; no reply yet
        cancelled = await kit.engine.cancel(first.run_id)
        assert await leased_rows(kit.store) == 0
        # the database's only slot is free: the next run gets it
        with anyio.fail_after(20):
            second = await kit.run_to_end(U2, plan(config, single("s-empty", "g-sales")))
    assert cancelled.status == "Cancelled"
    assert second.status == "NoData"


async def test_the_heartbeat_refreshes_only_the_leases_held_here(store: Store) -> None:
    slots = SlotLeases(store, "me", {"db": 2}, stale_after_s=10.0)
    await slots.prepare(exclusive=False)
    # A lease naming this instance that nothing here holds (left by a lost attempt).
    await store.execute(
        "UPDATE run_slots SET instance_id = 'me', holder = 'leaked', run_id = 'r0',"
        " heartbeat_at = :long_ago WHERE database_id = 'db' AND slot = 1",
        {"long_ago": LONG_AGO},
    )
    async with slots.hold("db", "r1"):
        await store.execute("UPDATE run_slots SET heartbeat_at = :long_ago", {"long_ago": LONG_AGO})
        await slots.heartbeat()
        rows = await store.fetch_all(
            "SELECT holder, run_id, heartbeat_at FROM run_slots WHERE database_id = 'db'"
            " ORDER BY slot"
        )
        held = await slots.held("db")
    assert rows[0][1] == "r1"
    assert rows[0][2] > LONG_AGO  # refreshed
    assert rows[1] == ("leaked", "r0", LONG_AGO)  # not kept alive: stale, so free for the taking
    assert held == 1
    assert await leased_rows(store) == 1  # the leaked one only
