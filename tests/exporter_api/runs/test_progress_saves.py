"""Progress saved to the store: never behind what the hub sent, even when rows stop arriving
(a page reload reads the store)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from exporter_api.config import DatabaseConfig, ExportConfig, load_config
from exporter_api.providers.base import DatabaseProvider, ExportRequest, ExportResult, ExportSink
from exporter_api.runs.repository import RunRepository
from tests.exporter_api.runs.demokit import DEMO_CREDS, demo_catalog
from tests.exporter_api.runs.enginekit import EngineKit, engine_kit, plan, single, user
from tests.services import async_wait_until

WHO = user("USER1", "sess-demo", database_id="db-test")


class StallingProvider(DatabaseProvider):
    """Streams three rows at once, then stalls (a query computing its next batch) until
    ``release`` is set."""

    server_csv = True
    server_style = True

    def __init__(self, config: DatabaseConfig) -> None:
        super().__init__(config)
        self.stalled = anyio.Event()
        self.release = anyio.Event()

    async def verify_login(self, username: str, password: str) -> None:
        return None

    async def export(
        self, username: str, password: str, request: ExportRequest, sink: ExportSink
    ) -> ExportResult:
        await sink.write(b"id\n1\n", 1)
        await sink.write(b"2\n3\n", 2)
        self.stalled.set()
        await self.release.wait()
        return ExportResult(rows=3, bytes=9)


class ProgressSaves:
    """A real repository whose progress saves (a script and its running variant only) of
    ``rows`` rows set ``saved``."""

    def __init__(self, repo: RunRepository, rows: int) -> None:
        self.rows = rows
        self.saved = anyio.Event()
        self._save = repo.save
        repo.save = self.save  # type: ignore[method-assign]

    def watched(self, kwargs: dict[str, Any]) -> bool:
        """A progress save (a script and its running variant only) of ``rows`` rows."""
        variants = kwargs.get("variants") or []
        progress_only = kwargs.get("group") is None and not kwargs.get("files")
        return progress_only and [v.rows_exported for v in variants] == [self.rows]

    async def save(self, *args: Any, **kwargs: Any) -> None:
        await self._save(*args, **kwargs)
        if self.watched(kwargs):
            self.saved.set()


@asynccontextmanager
async def stalling_engine(
    tmp_path: Path,
) -> AsyncIterator[tuple[ExportConfig, StallingProvider, EngineKit]]:
    """An engine on the demo catalog whose db-test exports stall after three rows; every batch
    is sent to the hub, progress saved at most every 0.2 s (both batches arrive well within one
    save interval)."""
    config = load_config(demo_catalog(tmp_path / "demo", 10))
    provider = StallingProvider(next(db for db in config.databases if db.id == "db-test"))
    async with engine_kit(
        config,
        tmp_path / "d",
        DEMO_CREDS,
        providers={"db-test": provider},
        progress_interval_s=0.0,
        persist_progress_s=0.2,
    ) as kit:
        yield config, provider, kit


async def test_the_last_progress_sent_is_saved_when_rows_stop_arriving(tmp_path: Path) -> None:
    async with stalling_engine(tmp_path) as (config, provider, kit):
        saves = ProgressSaves(kit.repo, rows=3)
        state = await kit.engine.start(WHO, plan(config, single("s-orders", "g-sales")))
        with anyio.fail_after(10):
            await provider.stalled.wait()
            await saves.saved.wait()  # no row arrives any more: the save interval's timer
        sent = kit.events.of("script.progress", runId=state.run_id)
        reloaded = await kit.repo.load(state.run_id)
        provider.release.set()
        await kit.engine.wait(state.run_id)
        final = await kit.repo.load(state.run_id)
    assert reloaded is not None
    assert final is not None
    script = reloaded.groups[0].scripts[0]
    assert script.status == "Running"
    assert sent[-1]["rowsExported"] == 3
    assert script.rows_exported == 3
    assert [v.rows_exported for v in script.variants] == [3, 0, 0]
    assert final.status == "Success"


class HeldProgressSave(ProgressSaves):
    """A progress save of ``rows`` rows that waits for ``release`` (a slow store): ``saved``
    is set once it is in flight."""

    def __init__(self, repo: RunRepository, rows: int) -> None:
        super().__init__(repo, rows)
        self.release = anyio.Event()

    async def save(self, *args: Any, **kwargs: Any) -> None:
        if self.watched(kwargs):
            self.saved.set()
            await self.release.wait()
        await self._save(*args, **kwargs)


async def test_a_cancel_while_a_progress_save_is_in_flight_keeps_the_finished_file(
    tmp_path: Path,
) -> None:
    # The variant's file is committed while the timer's save still waits for the store; a
    # cancel arriving then must not leave that file on disk without its record.
    async with stalling_engine(tmp_path) as (config, provider, kit):
        saves = HeldProgressSave(kit.repo, rows=3)
        cancelled = anyio.Event()
        cancel_here = kit.engine._cancel_here

        def cancel_and_tell(run: Any) -> None:
            cancel_here(run)
            cancelled.set()

        kit.engine._cancel_here = cancel_and_tell  # type: ignore[method-assign]
        state = await kit.engine.start(WHO, plan(config, single("s-orders", "g-sales")))
        run_dir = kit.files_root / state.run_id

        def committed() -> bool:
            return run_dir.is_dir() and any(p.name.endswith("_v1.csv") for p in run_dir.iterdir())

        with anyio.fail_after(20):
            await saves.saved.wait()  # the timer's save is in flight, held
            provider.release.set()  # the variant ends and commits its file
            await async_wait_until(committed)
            async with anyio.create_task_group() as tg:
                tg.start_soon(kit.engine.cancel, state.run_id)
                await cancelled.wait()
                saves.release.set()
            await kit.engine.wait(state.run_id)
        recorded = [f.name for f in await kit.repo.files(state.run_id)]
        on_disk = sorted(p.name for p in run_dir.iterdir())
    assert recorded
    assert sorted(recorded) == on_disk
