"""A driver cut off from the state store is not dead: it goes on until it notices. Its run is
taken over by another instance meanwhile; whatever the old driver still puts on disk must not
fail the variants of the instance that holds the run now."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import structlog.testing

from exporter_api.config import ExportConfig
from exporter_api.runs.repository import RunOwner
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD
from tests.exporter_api.runs.enginekit import EngineKit, engine_kit, plan, single, user

CREDS = {"sess-1": (USER1, USER1_PASSWORD)}
U1 = user(USER1, "sess-1")
LONG_AGO = "2000-01-01T00:00:00.000Z"
STALE = b"written by the old driver after the takeover\n"


async def taken_over_run(kit: EngineKit, catalog: ExportConfig) -> str:
    """A Running run whose driver stopped heartbeating long ago (cut off from the store)."""
    state = kit.engine._initial_state(U1, plan(catalog, single("s-orders", "g-sales")))
    script = state.groups[0].scripts[0]
    state.status = state.groups[0].status = script.status = "Running"
    script.variants[0].status = "Running"
    owner = RunOwner(USER1, "db-pg", "m1", "s1", "sess-1")
    assert await kit.repo.insert_run(state, owner, "cut-off-instance", max_active=None)
    await kit.store.execute(
        "UPDATE runs SET heartbeat_at = :at WHERE run_id = :run_id",
        {"at": LONG_AGO, "run_id": state.run_id},
    )
    return state.run_id


class OldDriverCommitsAfterReconcile:
    """The old driver links its variant-1 file into place after the new owner reconciled the
    run's directory (the new owner's first save, resetting the run, comes right after)."""

    def __init__(self, kit: EngineKit, name: str) -> None:
        self.kit = kit
        self.name = name
        self.stale: Path | None = None
        self._save_all = kit.repo.save_all
        kit.repo.save_all = self.save_all  # type: ignore[method-assign]

    async def save_all(self, state: Any, *args: Any, **kwargs: Any) -> None:
        if self.stale is None:
            directory = self.kit.files_root / state.run_id
            directory.mkdir(parents=True, exist_ok=True)
            self.stale = directory / self.name
            self.stale.write_bytes(STALE)
        await self._save_all(state, *args, **kwargs)


async def test_a_stale_file_of_the_old_driver_never_fails_the_new_owners_variant(
    catalog: ExportConfig, tmp_path: Path
) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        zombie = OldDriverCommitsAfterReconcile(kit, f"{USER1}_s-orders_v1.csv")
        run_id = await taken_over_run(kit, catalog)
        with structlog.testing.capture_logs() as logs:
            await kit.engine.claim_orphans()
            await kit.engine.wait(run_id)
        state = await kit.repo.load(run_id)
        files = await kit.repo.files(run_id)
    assert state is not None
    assert state.status == "Success"
    variants = state.groups[0].scripts[0].variants
    assert [v.status for v in variants] == ["Success", "Success", "NoData"]
    assert [f.name for f in files] == [
        f"{USER1}_s-orders_v1 (2).csv",  # the name in place is skipped
        f"{USER1}_s-orders_v2.csv",
    ]
    for f in files:
        data = (kit.files_root / run_id / f.name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f.sha256
    assert zombie.stale is not None
    assert zombie.stale.read_bytes() == STALE  # never replaced
    assert [e["run_id"] for e in logs if e["event"] == "stale_export_file_skipped"] == [run_id]
