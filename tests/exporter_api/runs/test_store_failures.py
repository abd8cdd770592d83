"""A state store that fails during a run (full, unavailable): the run ends Failed naming the
real cause -- never "interrupted by a server restart" (issue 8.5) -- and a final state that
could not be saved is saved by the heartbeat once the store accepts it again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog.testing

from exporter_api.config import ExportConfig
from exporter_api.errors import ExporterError, StoreUnavailable
from exporter_api.runs.repository import RunRepository
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD, poll_until
from tests.exporter_api.runs.enginekit import engine_kit, plan, single, user

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
        if self.save_failures and (kwargs.get("file") is not None or not self.with_file):
            self.save_failures -= 1
            raise StoreFull("the state store is full (no space left on its disk)")
        await self._save(*args, **kwargs)

    async def save_all(self, *args: Any, **kwargs: Any) -> None:
        if self.final_failures:
            self.final_failures -= 1
            raise StoreFull("the state store is full (no space left on its disk)")
        await self._save_all(*args, **kwargs)


FULL = "the state store is full (no space left on its disk)"


@pytest.mark.parametrize("with_file", [False, True], ids=["first-change", "recording-a-file"])
async def test_a_full_store_fails_the_run_with_its_real_cause(
    catalog: ExportConfig, tmp_path: Path, with_file: bool
) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS, heartbeat_s=0.1) as kit:
        faults = FailingSaves(kit.repo, final_failures=2, with_file=with_file)
        state = await kit.engine.start(
            user(USER1, "sess-1"), plan(catalog, single("s-orders", "g-sales"))
        )
        await kit.engine.wait(state.run_id)

        async def saved() -> bool:
            loaded = await kit.repo.load(state.run_id)
            return loaded is not None and loaded.status == "Failed"

        await poll_until(saved)  # by the heartbeat, once save_all works again
        loaded = await kit.repo.load(state.run_id)
        published = kit.events.of("run.updated", runId=state.run_id)
        recorded = await kit.repo.files(state.run_id)
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
        progress_only = kwargs.get("group") is None and kwargs.get("file") is None
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
            state = await kit.run_to_end(
                user(USER1, "sess-1"), plan(catalog, single("s-progress", "g-slow"))
            )
    failed_saves = [e for e in logs if e["event"] == "progress_save_failed"]
    assert faults.failures == 0
    assert state.status == "Success"
    assert [v.status for v in state.groups[0].scripts[0].variants] == ["Success"]
    assert state.groups[0].scripts[0].rows_exported == 300_000
    assert len(failed_saves) == 2
    assert {e["error_type"] for e in failed_saves} == {"StoreUnavailable"}
    assert {e["run_id"] for e in failed_saves} == {state.run_id}
