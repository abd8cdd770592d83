"""A second process on a SQLite data directory (an overlapping restart, an operator's mistake)
must not take the first one's live runs: the engine treats a SQLite store as its own, so the
store refuses to open while another process has it."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter_api.config import ExportConfig
from exporter_api.store.sqlite import DataDirInUse
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD, ExportDatabase, poll_until
from tests.exporter_api.runs.enginekit import U1, engine_kit, plan, single

CREDS = {"sess-1": (USER1, USER1_PASSWORD)}


async def test_a_second_instance_never_takes_a_live_run(
    catalog: ExportConfig, tmp_path: Path, export_db: ExportDatabase
) -> None:
    data = tmp_path / "data"
    async with engine_kit(catalog, data, CREDS) as first:
        started = await first.engine.start(U1, plan(catalog, single("s-slow", "g-slow")))
        run_dir = first.files_root / started.run_id

        async def writing() -> bool:
            return any(p.name.endswith(".part") for p in run_dir.glob(".*"))

        await poll_until(writing)
        parts = sorted(run_dir.glob(".*.part"))
        with pytest.raises(DataDirInUse):
            async with engine_kit(catalog, data, CREDS):
                pass
        owner = await first.store.fetch_one(
            "SELECT instance_id FROM runs WHERE run_id = :r", {"r": started.run_id}
        )
        still_active = first.engine.is_active(started.run_id)
        parts_after = sorted(run_dir.glob(".*.part"))
        await first.engine.cancel(started.run_id)
        await first.engine.wait(started.run_id)
    assert owner == (first.engine.instance_id,)
    assert still_active
    assert parts_after == parts  # its partial file was left alone
