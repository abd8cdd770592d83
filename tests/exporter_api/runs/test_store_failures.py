"""A state store that fails during a run (full, unavailable): the run ends Failed naming the
real cause -- never "interrupted by a server restart" (issue 8.5) -- and a final state that
could not be saved is saved by the heartbeat once the store accepts it again."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog.testing

from exporter_api.config import ExportConfig
from exporter_api.errors import ExporterError, StoreUnavailable
from exporter_api.runs.repository import RunRepository
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD, poll_until
from tests.exporter_api.runs.enginekit import U1, EngineKit, engine_kit, plan, single

CREDS = {"sess-1": (USER1, USER1_PASSWORD)}


class StoreFull(ExporterError):
    """What the store's error translation raises when the disk is full."""

    status = 503
    title = "Service Unavailable"


class FailingSaves:
    """Fault injection on a real repository: the first save fails, then ``save_all`` fails
    ``final_failures`` times before the store "has room again"."""

    def __init__(self, repo: RunRepository, final_failures: int, *, with_file: bool) -> None:
        self.repo = repo
        self.with_file = with_file  # fail the save recording a committed file, not the first
        self.save_failures = 1
        self.final_failures = final_failures
        self._save, self._save_all = repo.save, repo.save_all
        repo.save = self.save  # type: ignore[method-assign]
        repo.save_all = self.save_all  # type: ignore[method-assign]

    async def save(self, *args: Any, **kwargs: Any) -> None:
        if self.save_failures and (kwargs.get("files") or not self.with_file):
            self.save_failures -= 1
            raise StoreFull("the state store is full (no space left on its disk)")
        await self._save(*args, **kwargs)

    async def save_all(self, *args: Any, **kwargs: Any) -> None:
        if self.final_failures:
            self.final_failures -= 1
            raise StoreFull("the state store is full (no space left on its disk)")
        await self._save_all(*args, **kwargs)


FULL = "the state store is full (no space left on its disk)"


async def _orders_stored_as_failed(kit: EngineKit, catalog: ExportConfig) -> str:
    """Runs s-orders to its end, then waits until the store holds it as Failed (the heartbeat
    saves a final state whose save failed); its id."""
    state = await kit.engine.start(U1, plan(catalog, single("s-orders", "g-sales")))
    await kit.engine.wait(state.run_id)

    async def saved() -> bool:
        loaded = await kit.repo.load(state.run_id)
        return loaded is not None and loaded.status == "Failed"

    await poll_until(saved)
    return state.run_id


@pytest.mark.parametrize("with_file", [False, True], ids=["first-change", "recording-a-file"])
async def test_a_full_store_fails_the_run_with_its_real_cause(
    catalog: ExportConfig, tmp_path: Path, with_file: bool
) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS, heartbeat_s=0.1) as kit:
        faults = FailingSaves(kit.repo, final_failures=2, with_file=with_file)
        run_id = await _orders_stored_as_failed(kit, catalog)  # once save_all works again
        loaded = await kit.repo.load(run_id)
        published = kit.events.of("run.updated", runId=run_id)
        recorded = await kit.repo.files(run_id)
        on_disk = [p async for p in anyio.Path(kit.files_root).rglob("*") if await p.is_file()]
    assert faults.final_failures == 0
    assert loaded is not None
    assert loaded.error == FULL
    assert "restart" not in loaded.error
    variants = loaded.groups[0].scripts[0].variants
    assert [v.status for v in variants] == ["Failed", "Failed", "Failed"]
    if with_file:  # the committed file of variant 1 could not be recorded: it went
        assert variants[0].error == f"the file could not be recorded: {FULL}"
        assert variants[0].file_id is None
    assert variants[-1].error == FULL
    assert recorded == []
    assert on_disk == []
    assert published[-1]["status"] == "Failed"


class FailingProgressSaves:
    """Fault injection on a real repository: the first ``failures`` periodic progress saves
    (a script and its running variant, no group or file) fail as during a store failover."""

    def __init__(self, repo: RunRepository, failures: int) -> None:
        self.failures = failures
        self._save = repo.save
        repo.save = self.save  # type: ignore[method-assign]

    async def save(self, *args: Any, **kwargs: Any) -> None:
        progress_only = kwargs.get("group") is None and not kwargs.get("files")
        if progress_only and kwargs.get("variants") and self.failures:
            self.failures -= 1
            raise StoreUnavailable("the state store is unavailable")
        await self._save(*args, **kwargs)


async def test_a_failed_progress_save_is_retried_and_the_run_goes_on(
    catalog: ExportConfig, tmp_path: Path
) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS, persist_progress_s=0.2) as kit:
        faults = FailingProgressSaves(kit.repo, failures=2)
        with structlog.testing.capture_logs() as logs:
            state = await kit.run_to_end(U1, plan(catalog, single("s-progress", "g-slow")))
    failed_saves = [e for e in logs if e["event"] == "progress_save_failed"]
    assert faults.failures == 0
    assert state.status == "Success"
    assert [v.status for v in state.groups[0].scripts[0].variants] == ["Success"]
    assert state.groups[0].scripts[0].rows_exported == 300_000
    assert len(failed_saves) == 2
    assert {e["error_type"] for e in failed_saves} == {"StoreUnavailable"}
    assert {e["run_id"] for e in failed_saves} == {state.run_id}


class DoubtfulFileSave:
    """Fault injection on a real repository: the save recording the first committed file
    raises ``StoreUnavailable`` -- after being applied (the connection dropped before the
    COMMIT's reply came back) or not -- and the next ``final_failures`` whole-tree saves fail
    as well (the store still unreachable)."""

    def __init__(self, repo: RunRepository, *, applied: bool, final_failures: int) -> None:
        self.applied = applied
        self.pending = True
        self.final_failures = final_failures
        self._save, self._save_all = repo.save, repo.save_all
        repo.save = self.save  # type: ignore[method-assign]
        repo.save_all = self.save_all  # type: ignore[method-assign]

    async def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pending and kwargs.get("files"):
            self.pending = False
            if self.applied:
                await self._save(*args, **kwargs)
            raise StoreUnavailable()
        await self._save(*args, **kwargs)

    async def save_all(self, *args: Any, **kwargs: Any) -> None:
        if not self.pending and self.final_failures:
            self.final_failures -= 1
            raise StoreUnavailable()
        await self._save_all(*args, **kwargs)


@pytest.mark.parametrize("final_failures", [0, 2], ids=["final-save-works", "final-save-later"])
@pytest.mark.parametrize("applied", [True, False], ids=["commit-applied", "commit-not-applied"])
async def test_a_file_whose_record_may_have_been_saved_is_kept_until_that_is_known(
    catalog: ExportConfig, tmp_path: Path, applied: bool, final_failures: int
) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS, heartbeat_s=0.1) as kit:
        faults = DoubtfulFileSave(kit.repo, applied=applied, final_failures=final_failures)
        run_id = await _orders_stored_as_failed(kit, catalog)
        await poll_until(lambda: ended_here(kit, run_id))
        loaded = await kit.repo.load(run_id)
        recorded = await kit.repo.files(run_id)
        run_dir = kit.files_root / run_id
        on_disk = sorted([p.name async for p in anyio.Path(run_dir).iterdir()])
        contents = {f.name: await anyio.Path(run_dir / f.name).read_bytes() for f in recorded}
    assert faults.final_failures == 0
    assert loaded is not None
    variants = loaded.groups[0].scripts[0].variants
    unavailable = StoreUnavailable().detail
    assert [v.error for v in variants[1:]] == [unavailable, unavailable]
    if applied:  # recorded after all: listed, on disk, and its variant succeeded
        assert [f.variant for f in recorded] == [1]
        assert on_disk == [recorded[0].name]
        data = contents[recorded[0].name]
        assert hashlib.sha256(data).hexdigest() == recorded[0].sha256
        assert variants[0].status == "Success"
        assert variants[0].file_id == recorded[0].file_id
    else:  # never recorded: gone once the run's final save proved it
        assert recorded == []
        assert on_disk == []
        assert variants[0].status == "Failed"
        assert variants[0].error == f"the file could not be recorded: {unavailable}"
        assert variants[0].file_id is None


async def ended_here(kit: EngineKit, run_id: str) -> bool:
    """The final state is saved (no longer kept for the heartbeat to save)."""
    return run_id not in kit.engine.lifecycle.unsaved


async def test_a_run_whose_last_change_could_not_be_saved_still_ends_in_the_store(
    catalog: ExportConfig, tmp_path: Path
) -> None:
    # The save failing is the one that would have ended the run (its only variant's file).
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        FailingSaves(kit.repo, final_failures=0, with_file=True)
        state = await kit.run_to_end(U1, plan(catalog, single("s-progress", "g-slow")))
        published = kit.events.of("run.updated", runId=state.run_id)
    assert state.status == "Failed"  # not left Running
    assert [e["status"] for e in published] == ["Running", "Failed"]
    (variant,) = state.groups[0].scripts[0].variants
    assert variant.error == f"the file could not be recorded: {FULL}"
