"""The export engine against the throwaway PostgreSQL cluster: lanes, variants, statuses,
files, failures, cancel (checked in pg_stat_activity), the per-user limit and restart recovery."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread
import asyncpg
import pytest

from exporter_api.config import ExportConfig, load_config
from exporter_api.runs.engine import RunEngine
from exporter_api.runs.errors import RunAlreadyFinished, TooManyActiveRuns
from exporter_api.runs.files import UTF8_BOM
from exporter_api.runs.models import RunState, ScriptState, VariantState
from exporter_api.runs.repository import RunNotOwned, RunOwner, RunRepository
from exporter_api.store import open_store
from tests.exporter_api.runs.conftest import (
    USER1,
    USER1_PASSWORD,
    USER2,
    USER2_PASSWORD,
    ExportDatabase,
    poll_until,
    write_catalog,
)
from tests.exporter_api.runs.enginekit import (
    RecordingPublisher,
    engine_kit,
    plan,
    single,
    user,
)

CREDS = {"sess-1": (USER1, USER1_PASSWORD), "sess-2": (USER2, USER2_PASSWORD)}
U1 = user(USER1, "sess-1")


def script_of(state: RunState, script_id: str) -> ScriptState:
    return next(s for g in state.groups for s in g.scripts if s.script_id == script_id)


def variants(state: RunState, script_id: str) -> list[VariantState]:
    return script_of(state, script_id).variants


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def list_files(root: Path) -> list[Path]:
    return await anyio.to_thread.run_sync(_files, root)


async def active_queries(db: ExportDatabase, login: str) -> list[str]:
    # asyncpg rather than a psql process per poll: the cancel tests time what they see here
    connection = await asyncpg.connect(db.cluster.dsn(db=db.name))
    try:
        rows = await connection.fetch(
            "SELECT query FROM pg_stat_activity WHERE state = 'active'"
            " AND usename = $1 AND application_name = 'exporter-api'",
            login,
        )
    finally:
        await connection.close()
    return [row["query"] for row in rows]


async def has_active_query(db: ExportDatabase) -> bool:
    return bool(await active_queries(db, USER1))


async def no_active_query(db: ExportDatabase) -> bool:
    return not await active_queries(db, USER1)


async def has_files(root: Path) -> bool:
    return bool(await list_files(root))


ALL = {
    "mode": "AllGroups",
    "selection": {
        "groups": [
            {
                "groupId": "g-sales",
                "scripts": [
                    {"scriptId": "s-orders"},
                    {"scriptId": "s-customers"},
                    {"scriptId": "s-empty"},
                ],
            },
            {"groupId": "g-misc", "scripts": [{"scriptId": "s-bad"}]},
            {"groupId": "g-slow", "enabled": False, "scripts": [{"scriptId": "s-slow"}]},
        ]
    },
}


async def test_full_run(catalog: ExportConfig, tmp_path: Path, export_db: ExportDatabase) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        state = await kit.run_to_end(U1, plan(catalog, ALL))
        files = await kit.repo.files(state.run_id)

    # --- statuses at every level
    by_id = {s.script_id: s for g in state.groups for s in g.scripts}
    assert [v.status for v in by_id["s-orders"].variants] == ["Success", "Success", "NoData"]
    assert by_id["s-orders"].status == "Success"  # a finished mix of Success and NoData
    assert [v.status for v in by_id["s-customers"].variants] == ["Success", "Success"]
    assert by_id["s-empty"].status == "NoData"
    assert [v.status for v in by_id["s-bad"].variants] == ["Success", "Failed", "Success"]
    assert by_id["s-bad"].status == "Failed"
    bad = by_id["s-bad"].variants[1]
    assert bad.error is not None
    assert "division by zero" in bad.error
    assert USER1_PASSWORD not in bad.error
    assert {g.group_id: g.status for g in state.groups} == {
        "g-sales": "Success",
        "g-misc": "Failed",
    }
    assert state.status == "Failed"
    assert state.finished_at is not None

    # --- lanes run concurrently: the first variants of lane 0 and lane 1 overlap in time
    o1, c1 = by_id["s-orders"].variants[0], by_id["s-customers"].variants[0]
    assert o1.started_at is not None
    assert c1.started_at is not None
    assert o1.finished_at is not None
    assert c1.finished_at is not None
    assert max(o1.started_at, c1.started_at) < min(o1.finished_at, c1.finished_at)
    # ... scripts of one lane run one after the other in catalog order, variants in turn
    assert by_id["s-orders"].finished_at is not None
    assert by_id["s-empty"].started_at is not None
    assert by_id["s-orders"].finished_at <= by_id["s-empty"].started_at
    for script in by_id.values():
        for a, b in zip(script.variants, script.variants[1:], strict=False):
            assert a.finished_at is not None
            assert b.started_at is not None
            assert a.finished_at <= b.started_at

    # --- files: one per variant with rows; content, rows and sha256 as recorded
    assert sorted((f.script_id, f.variant) for f in files) == [
        ("s-bad", 1),
        ("s-bad", 3),
        ("s-customers", 1),
        ("s-customers", 2),
        ("s-orders", 1),
        ("s-orders", 2),
    ]
    on_disk = await list_files(tmp_path / "data" / "exports")
    assert sorted(p.name for p in on_disk) == sorted(f.name for f in files)  # no .part left
    orders_v1 = next(f for f in files if (f.script_id, f.variant) == ("s-orders", 1))
    assert orders_v1.name == f"{USER1}_s-orders_v1.csv"
    data = (tmp_path / "data" / "exports" / state.run_id / orders_v1.name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == orders_v1.sha256
    assert len(data) == orders_v1.size_bytes
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert rows[0] == ["OrderId", "Клиент", "Amount"]  # AllColumns: every profile label
    expected = await anyio.to_thread.run_sync(
        export_db.psql,
        "SELECT count(*) FROM orders WHERE manager_id = 'm1' AND stream_id = 's1'"
        " AND order_id % 3 = 0",
    )
    assert len(rows) - 1 == int(expected) == orders_v1.rows
    assert by_id["s-orders"].variants[0].rows_exported == orders_v1.rows
    assert any(r[1].startswith('ООО "Ромашка", ') for r in rows[1:])  # quoting survived


async def test_events_of_a_run(catalog: ExportConfig, tmp_path: Path) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        state = await kit.run_to_end(U1, plan(catalog, ALL))
        events = kit.events

    run_statuses = [e["status"] for e in events.of("run.updated")]
    assert run_statuses == ["Running", "Failed"]
    orders = events.of("script.updated", scriptId="s-orders")
    assert [e["message"] for e in orders if e["status"] == "Running"] == [
        "Executing variant 1/3",
        "Executing variant 2/3",
        "Executing variant 3/3",
    ]
    assert [(e["variant"], e["variantCount"]) for e in orders if e["status"] == "Running"] == [
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    assert orders[-1]["status"] == "Success"
    assert all(e["groupId"] == "g-sales" for e in orders)
    bad = events.of("script.updated", scriptId="s-bad")
    assert bad[-1]["status"] == "Failed"
    assert "division by zero" in bad[-1]["message"]
    assert [e["status"] for e in events.of("group.updated", groupId="g-misc")] == [
        "Running",
        "Failed",
    ]
    # progress: the last event of each script carries the final totals
    for script in (s for g in state.groups for s in g.scripts):
        progress = events.of("script.progress", scriptId=script.script_id)
        assert progress, script.script_id
        assert progress[-1]["rowsExported"] == script.rows_exported
        assert progress[-1]["bytesWritten"] == script.bytes_written
    # the run event is last and names the final status with a timestamp
    assert events.events[-1].method == "run.updated"
    assert events.events[-1].payload["updatedAt"].endswith("Z")


async def test_custom_columns(catalog: ExportConfig, tmp_path: Path) -> None:
    body = single(
        "s-orders",
        "g-sales",
        exportMode="CustomColumns",
        selectedColumnItemIds=["amount", "order_id"],
    )
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        state = await kit.run_to_end(U1, plan(catalog, body))
        files = await kit.repo.files(state.run_id)
    assert state.status == "Success"
    assert script_of(state, "s-orders").columns == ["order_id", "amount"]
    first = (tmp_path / "data" / "exports" / state.run_id / files[0].name).read_text("utf-8")
    header, row = first.splitlines()[:2]
    assert header == "OrderId,Amount"  # profile order, not request order
    assert len(row.split(",")) == 2


async def test_nodata_run(catalog: ExportConfig, tmp_path: Path) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        state = await kit.run_to_end(U1, plan(catalog, single("s-empty", "g-sales")))
        assert await kit.repo.files(state.run_id) == []
    assert state.status == "NoData"
    assert [v.status for v in variants(state, "s-empty")] == ["NoData", "NoData"]
    assert await list_files(tmp_path / "data" / "exports") == []  # no header-only files


async def test_cancel_stops_the_query_on_the_server(
    catalog: ExportConfig, tmp_path: Path, export_db: ExportDatabase
) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        state = await kit.engine.start(U1, plan(catalog, single("s-slow", "g-slow")))
        await poll_until(lambda: has_active_query(export_db))
        await poll_until(lambda: has_files(tmp_path / "data" / "exports"))  # the partial file
        cancelled_at = time.monotonic()
        after = await kit.engine.cancel(state.run_id)
        assert after.status == "Cancelled"
        # the query is gone on the server within a second
        await poll_until(lambda: no_active_query(export_db), limit_s=1.0)
        assert time.monotonic() - cancelled_at < 1.0
        assert await list_files(tmp_path / "data" / "exports") == []  # partial file removed
        with pytest.raises(RunAlreadyFinished):
            await kit.engine.cancel(state.run_id)
        loaded = await kit.repo.load(state.run_id)
        assert loaded is not None
        assert loaded.status == "Cancelled"
        assert [v.status for v in variants(loaded, "s-slow")] == ["Cancelled"]
        assert kit.events.of("run.updated")[-1]["status"] == "Cancelled"


async def test_cancel_keeps_finished_files(catalog: ExportConfig, tmp_path: Path) -> None:
    body = {
        "mode": "AllGroups",
        "selection": {
            "groups": [
                {"groupId": "g-misc", "scripts": [{"scriptId": "s-bad"}]},
                {"groupId": "g-slow", "scripts": [{"scriptId": "s-slow"}]},
            ]
        },
    }
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        state = await kit.engine.start(U1, plan(catalog, body))

        async def bad_done() -> bool:
            loaded = await kit.repo.load(state.run_id)
            return loaded is not None and variants(loaded, "s-bad")[2].status == "Success"

        await poll_until(bad_done)
        after = await kit.engine.cancel(state.run_id)
        files = await kit.repo.files(state.run_id)
    assert after.status == "Failed"  # worst outcome: Failed beats Cancelled
    assert script_of(after, "s-bad").status == "Failed"
    assert script_of(after, "s-slow").status == "Cancelled"
    assert sorted(f.variant for f in files) == [1, 3]
    names = [p.name for p in await list_files(tmp_path / "data" / "exports")]
    assert sorted(names) == sorted(f.name for f in files)


async def test_run_stays_running_while_a_failed_script_still_runs_a_variant(
    tmp_path: Path, export_db: ExportDatabase
) -> None:
    # s-bad: variant 2 fails (division by zero), variant 3 is made slow: the script is Failed at
    # once, but the run must stay Running (cancellable, counted as active) until variant 3 ends.
    path = write_catalog(tmp_path / "cat", export_db)
    slow_sql = (path.parent / "sql" / "slow_v1.sql").read_text(encoding="utf-8")
    (path.parent / "sql" / "bad_v3.sql").write_text(slow_sql, encoding="utf-8")
    config = load_config(path)
    async with engine_kit(config, tmp_path / "data", CREDS) as kit:
        state = await kit.engine.start(U1, plan(config, single("s-bad", "g-misc")))

        async def third_running() -> bool:
            loaded = await kit.repo.load(state.run_id)
            return loaded is not None and variants(loaded, "s-bad")[2].status == "Running"

        await poll_until(third_running)
        loaded = await kit.repo.load(state.run_id)
        assert loaded is not None
        assert script_of(loaded, "s-bad").status == "Failed"  # the contract rule, kept
        assert loaded.groups[0].status == "Running"
        assert loaded.status == "Running"
        assert loaded.finished_at is None
        assert kit.events.of("run.updated", runId=state.run_id)[-1]["status"] == "Running"
        after = await kit.engine.cancel(state.run_id)  # not a 409
    assert [v.status for v in variants(after, "s-bad")] == ["Success", "Failed", "Cancelled"]
    assert after.status == "Failed"
    assert after.finished_at is not None


class _CancelOnceCommitted(RecordingPublisher):
    """Cancels the run (as ``RunEngine.cancel`` does) on the first progress event published
    after a file was committed: the window between ``FileWriter.commit()`` and recording it."""

    def __init__(self, engine: RunEngine, root: Path) -> None:
        super().__init__()
        self.engine, self.root, self.fired = engine, root, False

    async def publish(self, run_id: str, method: str, payload: object) -> None:
        await super().publish(run_id, method, payload)
        if self.fired or method != "script.progress":
            return
        if [p async for p in anyio.Path(self.root / run_id).glob("*.csv")]:
            self.fired = True
            run = self.engine._active[run_id]
            run.cancel_requested = True
            run.scope.cancel()
            await anyio.lowlevel.checkpoint()


async def test_cancel_right_after_commit_keeps_the_file_recorded(
    catalog: ExportConfig, tmp_path: Path
) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        publisher = _CancelOnceCommitted(kit.engine, kit.files_root)
        kit.engine.publisher = publisher
        loaded = await kit.run_to_end(U1, plan(catalog, single("s-orders", "g-sales")))
        files = await kit.repo.files(loaded.run_id)
    assert publisher.fired
    assert [v.status for v in variants(loaded, "s-orders")] == ["Success", "Cancelled", "Cancelled"]
    assert [f.variant for f in files] == [1]
    assert variants(loaded, "s-orders")[0].file_id == files[0].file_id
    names = [p.name for p in await list_files(kit.files_root)]
    assert names == [files[0].name]  # no committed file left unrecorded


async def test_per_user_active_run_limit(catalog: ExportConfig, tmp_path: Path) -> None:
    slow = plan(catalog, single("s-slow", "g-slow"))
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        started = [await kit.engine.start(U1, slow) for _ in range(3)]
        with pytest.raises(TooManyActiveRuns):
            await kit.engine.start(U1, slow)
        # another user is not affected
        other = await kit.engine.start(user(USER2, "sess-2"), slow)
        for state in [*started, other]:
            await kit.engine.cancel(state.run_id)
        # a finished run frees its slot
        again = await kit.engine.start(U1, slow)
        await kit.engine.cancel(again.run_id)


async def test_a_restart_resumes_the_runs_the_server_stopped(
    catalog: ExportConfig, tmp_path: Path, export_db: ExportDatabase
) -> None:
    """SQLite, one process: stopping the server hands its runs back to the store (nothing is
    marked Failed); the next start resumes them. Finished variants keep their files; the
    variant that was running starts again from the beginning."""
    data = tmp_path / "data"
    async with engine_kit(catalog, data, CREDS) as kit:
        state = await kit.engine.start(U1, plan(catalog, single("s-orders", "g-sales")))

        async def second_running() -> bool:
            loaded = await kit.repo.load(state.run_id)
            return loaded is not None and variants(loaded, "s-orders")[1].status == "Running"

        await poll_until(second_running)
        await poll_until(lambda: has_active_query(export_db))
        (first_file,) = await kit.repo.files(state.run_id)
    stopped = await _load(data, state.run_id)
    assert stopped.status == "Running"  # handed over, not failed
    assert [v.status for v in variants(stopped, "s-orders")] == ["Success", "Running", "Queued"]
    assert await active_queries(export_db, USER1) == []
    assert [p.name for p in await list_files(data / "exports")] == [first_file.name]  # no .part

    async with engine_kit(catalog, data, CREDS) as kit:
        await kit.engine.wait(state.run_id)  # claimed at start: a store only this process uses
        loaded = await kit.repo.load(state.run_id)
        files = await kit.repo.files(state.run_id)
        messages = [e["message"] for e in kit.events.of("script.updated", scriptId="s-orders")]
    assert loaded is not None
    assert loaded.status == "Success"
    assert [v.status for v in variants(loaded, "s-orders")] == ["Success", "Success", "NoData"]
    assert variants(loaded, "s-orders")[0].file_id == first_file.file_id  # kept as it was
    assert [f.variant for f in files] == [1, 2]
    assert messages == ["Queued", "Executing variant 2/3", "Executing variant 3/3", "Success"]
    on_disk = await list_files(data / "exports")
    assert sorted(p.name for p in on_disk) == sorted(f.name for f in files)


async def _load(data: Path, run_id: str) -> RunState:
    store = await open_store(data)
    try:
        loaded = await RunRepository(store).load(run_id)
    finally:
        await store.aclose()
    assert loaded is not None
    return loaded


async def test_restart_resumes_runs_of_a_dead_process(
    catalog: ExportConfig, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with engine_kit(catalog, data, CREDS) as kit:
        # What a killed process leaves behind: a Running run in the store and a partial file.
        state = kit.engine._initial_state(U1, plan(catalog, ALL))
        state.status = "Running"
        state.groups[0].status = "Running"
        state.groups[0].scripts[0].status = "Running"
        state.groups[0].scripts[0].variants[0].status = "Running"
        owner = RunOwner(USER1, "db-pg", "m1", "s1", "sess-1")
        assert await kit.repo.insert_run(state, owner, "dead-process", max_active=None)
        part = data / "exports" / state.run_id / f".{USER1}_s-orders_v1.csv.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(b"OrderId\n1\n")
    async with engine_kit(catalog, data, CREDS) as kit:
        await kit.engine.wait(state.run_id)
        loaded = await kit.repo.load(state.run_id)
        files = await kit.repo.files(state.run_id)
        events = kit.events.of("run.updated", runId=state.run_id)
    assert loaded is not None
    assert loaded.status == "Failed"  # as a fresh run of ALL: s-bad's variant 2 fails
    assert loaded.error is None
    assert script_of(loaded, "s-orders").status == "Success"
    assert len(files) == 6
    statuses = {v.status for g in loaded.groups for s in g.scripts for v in s.variants}
    assert not statuses & {"Queued", "Running"}
    assert not part.exists()
    # nothing had finished: the run was Queued again until its first variant started anew
    assert [e["status"] for e in events] == ["Queued", "Running", "Failed"]
    assert events[-1]["updatedAt"] == loaded.updated_at


async def test_restart_resumes_every_run_of_a_dead_process_at_once(
    catalog: ExportConfig, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    owner = RunOwner(USER1, "db-pg", "m1", "s1", "sess-1")
    async with engine_kit(catalog, data, CREDS) as kit:
        run_ids = []
        for _ in range(45):  # more than one page of claimable runs
            state = kit.engine._initial_state(U1, plan(catalog, single("s-empty", "g-sales")))
            assert await kit.repo.insert_run(state, owner, "dead-process", max_active=None)
            run_ids.append(state.run_id)
    # Restarted (a store only it uses): every run is claimed before it serves anything, none
    # is left for the takeover delay.
    async with engine_kit(catalog, data, CREDS) as kit:
        left = await kit.store.fetch_one(
            "SELECT COUNT(*) FROM runs WHERE instance_id = 'dead-process'"
        )
        for run_id in run_ids:
            await kit.engine.wait(run_id)
        ended = [await kit.repo.load(run_id) for run_id in run_ids]
    assert left == (0,)
    assert {s.status for s in ended if s is not None} == {"NoData"}
    assert len(ended) == 45


async def test_a_run_recorded_as_ours_but_not_driven_is_taken_over_once_stale(
    catalog: ExportConfig, tmp_path: Path, export_db: ExportDatabase
) -> None:
    # What a run whose final save failed on a crashed path leaves behind: a Running run recorded
    # as this very instance's, with no task driving it (its heartbeat is no longer refreshed).
    async with engine_kit(
        catalog, tmp_path / "data", CREDS, heartbeat_s=0.25, takeover_after_s=1.0
    ) as kit:
        live = await kit.engine.start(U1, plan(catalog, single("s-slow", "g-slow")))
        await poll_until(lambda: has_active_query(export_db))
        state = kit.engine._initial_state(U1, plan(catalog, single("s-empty", "g-sales")))
        state.status = state.groups[0].status = "Running"
        state.groups[0].scripts[0].status = "Running"
        state.groups[0].scripts[0].variants[0].status = "Running"
        owner = RunOwner(USER1, "db-pg", "m1", "s1", "sess-1")
        assert await kit.repo.insert_run(state, owner, kit.engine.instance_id, max_active=None)

        async def ended() -> bool:
            loaded = await kit.repo.load(state.run_id)
            return loaded is not None and loaded.status == "NoData"

        await poll_until(ended)
        still = await kit.repo.load(live.run_id)
        await kit.engine.cancel(live.run_id)
    assert still is not None
    assert still.status == "Running"  # the live run is left alone


async def test_utf8_sig_writes_a_bom(tmp_path: Path, export_db: ExportDatabase) -> None:
    config = load_config(write_catalog(tmp_path / "cat", export_db, encoding="utf-8-sig"))
    async with engine_kit(config, tmp_path / "data", CREDS) as kit:
        state = await kit.run_to_end(U1, plan(config, single("s-bad", "g-misc")))
        files = await kit.repo.files(state.run_id)
    data = (tmp_path / "data" / "exports" / state.run_id / files[0].name).read_bytes()
    assert data.startswith(UTF8_BOM + b"OrderId,")
    assert hashlib.sha256(data).hexdigest() == files[0].sha256


async def test_cp1251(tmp_path: Path, export_db: ExportDatabase) -> None:
    config = load_config(write_catalog(tmp_path / "cat", export_db, encoding="cp1251"))
    async with engine_kit(config, tmp_path / "data", CREDS) as kit:
        state = await kit.run_to_end(U1, plan(config, single("s-bad", "g-misc")))
        files = await kit.repo.files(state.run_id)
    data = (tmp_path / "data" / "exports" / state.run_id / files[0].name).read_bytes()
    assert data.decode("cp1251").startswith("OrderId,Клиент,Amount\n")


async def test_database_connection_limit_across_runs(
    tmp_path: Path, export_db: ExportDatabase
) -> None:
    # One connection for the database: two runs of two lanes each never overlap a query.
    config = load_config(write_catalog(tmp_path / "cat", export_db, max_connections=1))
    body = {
        "mode": "SingleGroup",
        "selection": {
            "groups": [
                {
                    "groupId": "g-sales",
                    "scripts": [{"scriptId": "s-orders"}, {"scriptId": "s-customers"}],
                }
            ]
        },
    }
    async with engine_kit(config, tmp_path / "data", CREDS) as kit:
        a = await kit.engine.start(U1, plan(config, body))
        b = await kit.engine.start(user(USER2, "sess-2"), plan(config, body))
        await kit.engine.wait(a.run_id)
        await kit.engine.wait(b.run_id)
        states = [await kit.repo.load(a.run_id), await kit.repo.load(b.run_id)]
    intervals = sorted(
        (v.started_at or "", v.finished_at or "")
        for st in states
        if st is not None
        for g in st.groups
        for s in g.scripts
        for v in s.variants
    )
    assert len(intervals) == 10
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert end <= start


async def test_progress_is_throttled_with_a_final_event(
    catalog: ExportConfig, tmp_path: Path
) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        started = time.monotonic()
        state = await kit.run_to_end(U1, plan(catalog, single("s-progress", "g-slow")))
        elapsed = time.monotonic() - started
        progress = [e for e in kit.events.events if e.method == "script.progress"]
    assert state.status == "Success"
    script = script_of(state, "s-progress")
    assert script.rows_exported == 300_000
    assert script.bytes_written > 60_000_000
    # hundreds of 256 KiB chunks, but at most ~4 events per second (+ the final one)
    assert 3 <= len(progress) <= 4 * elapsed + 2
    gaps = [b.at - a.at for a, b in itertools.pairwise(progress[:-1])]
    assert min(gaps) >= 0.2
    counts = [e.payload["rowsExported"] for e in progress]
    assert counts == sorted(counts)
    assert progress[-1].payload == {
        "runId": state.run_id,
        "scriptId": "s-progress",
        "rowsExported": 300_000,
        "bytesWritten": script.bytes_written,
    }


async def test_postgres_state_store(
    catalog: ExportConfig, tmp_path: Path, export_db: ExportDatabase
) -> None:
    """The same run persisted in the PostgreSQL state store (several-instance deployments)."""
    await anyio.to_thread.run_sync(export_db.cluster.psql, "DROP DATABASE IF EXISTS runstate")
    await anyio.to_thread.run_sync(export_db.cluster.psql, "CREATE DATABASE runstate")
    url = export_db.cluster.dsn(db="runstate")
    async with engine_kit(catalog, tmp_path / "data", CREDS, state_url=url) as kit:
        assert kit.store.backend == "postgres"
        state = await kit.run_to_end(U1, plan(catalog, ALL))
        files = await kit.repo.files(state.run_id)
        listed = await kit.repo.list_runs(USER1, "db-pg", "m1", "s1", limit=10, cursor=None)
        # a run another instance left Running: taken over once its heartbeat is stale
        orphan = kit.engine._initial_state(U1, plan(catalog, single("s-empty", "g-sales")))
        orphan.status = "Running"
        owner = RunOwner(USER1, "db-pg", "m1", "s1", "sess-1")
        assert await kit.repo.insert_run(orphan, owner, "other-instance", max_active=None)
        assert await kit.engine.claim_orphans() == []  # fresh heartbeat: a live instance
        await kit.store.execute(
            "UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00.000Z' WHERE run_id = :r",
            {"r": orphan.run_id},
        )
        assert await kit.engine.claim_orphans() == [orphan.run_id]
        await kit.engine.wait(orphan.run_id)
        recovered = await kit.repo.load(orphan.run_id)
    assert state.status == "Failed"
    assert len(files) == 6
    assert [r.run_id for r in listed] == [state.run_id]
    assert recovered is not None
    assert recovered.status == "NoData"
    assert recovered.error is None


async def test_cancel_through_another_instance_sharing_the_state_store(
    catalog: ExportConfig, tmp_path: Path, export_db: ExportDatabase
) -> None:
    """Instance B cancels a run instance A drives: A sees the flag with its heartbeat, cancels
    the run's scope (the query stops) and records Cancelled; nothing overwrites it."""
    await anyio.to_thread.run_sync(export_db.cluster.psql, "DROP DATABASE IF EXISTS runstate2")
    await anyio.to_thread.run_sync(export_db.cluster.psql, "CREATE DATABASE runstate2")
    url = export_db.cluster.dsn(db="runstate2")
    async with (
        engine_kit(catalog, tmp_path / "a", CREDS, state_url=url, heartbeat_s=0.2) as a,
        engine_kit(catalog, tmp_path / "b", CREDS, state_url=url, heartbeat_s=0.2) as b,
    ):
        state = await a.engine.start(U1, plan(catalog, single("s-slow", "g-slow")))
        await poll_until(lambda: has_active_query(export_db))
        after = await b.engine.cancel(state.run_id)
        assert after.status == "Cancelled"
        assert not a.engine.is_active(state.run_id)  # A stopped driving it
        await poll_until(lambda: no_active_query(export_db), limit_s=2.0)
        await anyio.sleep(0.5)  # a few more heartbeats: nothing rewrites the outcome
        loaded = await b.repo.load(state.run_id)
        with pytest.raises(RunAlreadyFinished):
            await b.engine.cancel(state.run_id)
    assert loaded is not None
    assert loaded.status == "Cancelled"
    assert [v.status for v in variants(loaded, "s-slow")] == ["Cancelled"]


async def test_saves_of_an_instance_that_lost_the_run_are_refused(
    catalog: ExportConfig, tmp_path: Path
) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS) as kit:
        state = kit.engine._initial_state(U1, plan(catalog, single("s-orders", "g-sales")))
        owner = RunOwner(USER1, "db-pg", "m1", "s1", "sess-1")
        assert await kit.repo.insert_run(state, owner, "instance-a", max_active=None)
        state.status = "Running"
        await kit.repo.save(state, instance_id="instance-a")
        await kit.store.execute(  # instance B took it over
            "UPDATE runs SET instance_id = 'instance-b' WHERE run_id = :r", {"r": state.run_id}
        )
        state.status = "Success"
        with pytest.raises(RunNotOwned):
            await kit.repo.save_all(state, "instance-a")
        loaded = await kit.repo.load(state.run_id)
    assert loaded is not None
    assert loaded.status == "Running"


async def test_statement_timeout_fails_the_variant(
    tmp_path: Path, export_db: ExportDatabase
) -> None:
    config = load_config(write_catalog(tmp_path / "cat", export_db, statement_timeout_s=1))
    async with engine_kit(config, tmp_path / "data", CREDS) as kit:
        state = await kit.run_to_end(U1, plan(config, single("s-slow", "g-slow")))
    (variant,) = variants(state, "s-slow")
    assert variant.status == "Failed"
    assert variant.error == "the query exceeded the statement timeout of 1 s"
    assert state.status == "Failed"
    assert await list_files(tmp_path / "data" / "exports") == []
