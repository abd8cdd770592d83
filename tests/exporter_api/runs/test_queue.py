"""The run queue's heartbeat: a run is "lost" only when another instance drives it now."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exporter_api.runs.models import utc_now
from exporter_api.runs.queue import RunQueue
from exporter_api.store import Store, open_store

NOW = "2026-11-30T12:00:00.000Z"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(tmp_path)
    try:
        yield store
    finally:
        await store.aclose()


async def _insert(store: Store, run_id: str, status: str, instance_id: str) -> None:
    await store.execute(
        "INSERT INTO runs (run_id, login, database_id, manager_id, stream_id, session_id, mode,"
        " status, instance_id, heartbeat_at, created_at, updated_at) VALUES (:run_id, 'U', 'db',"
        " 'm1', 's1', 'sess', 'SingleGroup', :status, :instance_id, :now, :now, :now)",
        {"run_id": run_id, "status": status, "instance_id": instance_id, "now": NOW},
    )


async def test_heartbeat_reports_only_runs_another_instance_drives(store: Store) -> None:
    queue = RunQueue(store)
    await _insert(store, "RUNNING-HERE", "Running", "me")
    await _insert(store, "JUST-FINISHED", "Success", "me")  # saved, not yet forgotten here
    await _insert(store, "TAKEN-OVER", "Running", "other")
    before = utc_now()
    lost = await queue.heartbeat(["RUNNING-HERE", "JUST-FINISHED", "TAKEN-OVER"], "me")
    assert lost == ["TAKEN-OVER"]
    row = await store.fetch_one("SELECT heartbeat_at FROM runs WHERE run_id = 'RUNNING-HERE'")
    assert row is not None
    assert before <= row[0] <= utc_now()  # stamped by the store's clock (SQLite: this process)
