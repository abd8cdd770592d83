"""A driver cut off from the state store is not dead: it goes on until it notices. Its run is
taken over by another instance meanwhile; whatever the old driver still puts on disk must not
fail the variants of the instance that holds the run now."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog.testing

from exporter_api.config import ExportConfig
from exporter_api.errors import StoreUnavailable
from exporter_api.store import Store
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD, ExportDatabase, poll_until
from tests.exporter_api.runs.enginekit import U1, EngineKit, engine_kit, plan, single
from tests.exporter_api.runs.test_engine import has_active_query, no_active_query

CREDS = {"sess-1": (USER1, USER1_PASSWORD)}
LONG_AGO = "2000-01-01T00:00:00.000Z"
STALE = b"written by the old driver after the takeover\n"


async def taken_over_run(kit: EngineKit, catalog: ExportConfig) -> str:
    """A Running run whose driver stopped heartbeating long ago (cut off from the store)."""
    state = await kit.left_running(plan(catalog, single("s-orders", "g-sales")), "cut-off-instance")
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


_LOOKING = ContextVar("_LOOKING", default=False)


class Unreachable:
    """Fault injection on a real store: while ``cut`` every statement of the engine fails as
    it does when the store cannot be reached; the test itself may look (``looking()``)."""

    def __init__(self, store: Store) -> None:
        self.cut = False
        self._execute, self._fetch_all = store.execute, store.fetch_all
        store.execute = self.execute  # type: ignore[method-assign]
        store.fetch_all = self.fetch_all  # type: ignore[method-assign]

    @contextmanager
    def looking(self) -> Iterator[None]:
        token = _LOOKING.set(True)
        try:
            yield
        finally:
            _LOOKING.reset(token)

    async def execute(self, *args: Any, **kwargs: Any) -> int:
        if self.cut and not _LOOKING.get():
            raise StoreUnavailable()
        return await self._execute(*args, **kwargs)

    async def fetch_all(self, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if self.cut and not _LOOKING.get():
            raise StoreUnavailable()
        return await self._fetch_all(*args, **kwargs)


async def test_a_driver_that_cannot_reach_the_store_stops_before_a_takeover(
    catalog: ExportConfig, tmp_path: Path, export_db: ExportDatabase
) -> None:
    # The lease is 2 s (takeover - heartbeat): the driver has one heartbeat (1 s) to stop its
    # query before the run may be taken over, a margin a loaded machine still keeps.
    heartbeat, takeover = 1.0, 3.0
    async with engine_kit(
        catalog, tmp_path / "data", CREDS, heartbeat_s=heartbeat, takeover_after_s=takeover
    ) as kit:
        store = Unreachable(kit.store)
        state = await kit.engine.start(U1, plan(catalog, single("s-slow", "g-slow")))
        await poll_until(lambda: has_active_query(export_db))
        with structlog.testing.capture_logs() as logs:
            store.cut = True
            await poll_until(lambda: no_active_query(export_db), limit_s=takeover)
            stopped_at = datetime.now(UTC)  # a SQLite store's clock is this process's
            await poll_until(lambda: stopped_here(kit, state.run_id), limit_s=5)
            with store.looking():  # what the run left, before anyone may claim it again
                left = await kit.repo.load(state.run_id)
                driver = await kit.engine.queue.driver(state.run_id)
            store.cut = False
            # Once the store answers, the run is claimed again when its heartbeat is stale
            # (here by this very instance, the only one).
            await poll_until(lambda: ready(kit, state.run_id), limit_s=3 * takeover)
            await kit.engine.cancel(state.run_id)
        attempts = await kit.store.fetch_one(
            "SELECT attempts FROM runs WHERE run_id = :r", {"r": state.run_id}
        )
    abandoned = [e for e in logs if e["event"] == "runs_abandoned_store_unreachable"]
    assert [e["run_ids"] for e in abandoned] == [[state.run_id]]
    # Stopped (its query gone on the server) before another instance could take it over.
    assert driver is not None
    last_beat = datetime.fromisoformat(driver.heartbeat_at)
    assert stopped_at < last_beat + timedelta(seconds=takeover)
    assert left is not None
    assert left.status == "Running"  # nothing written by the run that stopped
    assert [v.status for v in left.groups[0].scripts[0].variants] == ["Running"]
    assert driver.instance_id == kit.engine.instance_id
    assert attempts == (1,)


async def ready(kit: EngineKit, run_id: str) -> bool:
    return kit.engine.is_active(run_id)


async def stopped_here(kit: EngineKit, run_id: str) -> bool:
    return not kit.engine.is_active(run_id)
