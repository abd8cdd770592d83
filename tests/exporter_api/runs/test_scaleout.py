"""Several engines on one PostgreSQL state store (issue 9.4-9.6): claims, connection caps across
instances, takeover after a SIGKILL, retry limits, unreadable credentials, cancel through
another instance and drain. Two engines run in this process (distinct instance ids) and share
one notifier, standing in for the LISTEN/NOTIFY one between processes; the instance that dies
runs in a subprocess and is killed with SIGKILL."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import asyncpg
import pytest

from exporter_api import timestamps as timestamps_module
from exporter_api.config import ExportConfig, load_config
from exporter_api.notify import CANCEL_CHANNEL, LocalNotifier
from exporter_api.runs import retention as retention_module
from exporter_api.runs.lifecycle import CREDENTIALS_GONE, too_many_attempts
from exporter_api.runs.models import RunState
from exporter_api.runs.queue import UNCLAIMED, Claimable
from exporter_api.runs.repository import RunOwner
from tests.exporter_api.conftest import create_pg_database
from tests.exporter_api.runs.conftest import (
    USER1,
    USER1_PASSWORD,
    USER2,
    USER2_PASSWORD,
    ExportDatabase,
    poll_until,
    write_catalog,
)
from tests.exporter_api.runs.engine_proc import READY
from tests.exporter_api.runs.enginekit import EngineKit, engine_kit, plan, single, user
from tests.exporter_api.runs.test_engine import (
    has_active_query,
    list_files,
    no_active_query,
    variants,
)
from tests.services import PostgresCluster

CREDS = {"sess-1": (USER1, USER1_PASSWORD), "sess-2": (USER2, USER2_PASSWORD)}
U1 = user(USER1, "sess-1")
U2 = user(USER2, "sess-2")
OWNER = RunOwner(USER1, "db-pg", "m1", "s1", "sess-1")
ORDERS = single("s-orders", "g-sales")
LANES = {
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


@pytest.fixture
def state_url(pg: PostgresCluster) -> str:
    return create_pg_database(pg, "scaleout")


@asynccontextmanager
async def two_engines(
    config: ExportConfig, data: Path, url: str, **options: Any
) -> AsyncIterator[tuple[EngineKit, EngineKit]]:
    """Engines A and B: one state store, one files directory, one notifier."""
    notifier = LocalNotifier()
    async with (
        engine_kit(config, data, CREDS, state_url=url, notifier=notifier, **options) as a,
        engine_kit(config, data, CREDS, state_url=url, notifier=notifier, **options) as b,
    ):
        assert a.engine.instance_id != b.engine.instance_id
        yield a, b


async def stored(kit: EngineKit, run_id: str) -> RunState:
    loaded = await kit.repo.load(run_id)
    assert loaded is not None
    return loaded


async def second_variant_running(kit: EngineKit, run_id: str) -> bool:
    statuses = [v.status for v in variants(await stored(kit, run_id), "s-orders")]
    return statuses[:2] == ["Success", "Running"]


async def ended(kit: EngineKit, run_id: str) -> bool:
    return (await stored(kit, run_id)).status not in ("Queued", "Running")


async def files_are_whole(kit: EngineKit, run_id: str) -> None:
    files = await kit.repo.files(run_id)
    for f in files:
        data = await anyio.Path(kit.files_root / run_id / f.name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f.sha256
        assert len(data) == f.size_bytes
    names = sorted(p.name for p in await list_files(kit.files_root / run_id))
    assert names == sorted(f.name for f in files)  # no partial or unrecorded file


async def test_each_queued_run_is_claimed_by_exactly_one_engine(
    catalog: ExportConfig, tmp_path: Path, state_url: str
) -> None:
    # heartbeats far apart: only the two explicit claims below take the runs
    async with two_engines(
        catalog, tmp_path / "data", state_url, heartbeat_s=60, takeover_after_s=120
    ) as (a, b):
        run_ids = []
        for _ in range(8):
            state = a.engine._initial_state(U1, plan(catalog, single("s-empty", "g-sales")))
            assert await a.repo.insert_run(state, OWNER, UNCLAIMED, max_active=None)
            run_ids.append(state.run_id)
        claimed: dict[str, list[str]] = {"a": [], "b": []}

        async def claim(name: str, kit: EngineKit) -> None:
            claimed[name] += await kit.engine.claim_orphans()

        async with anyio.create_task_group() as tg:  # both race for the same rows
            tg.start_soon(claim, "a", a)
            tg.start_soon(claim, "b", b)

        async def all_ended() -> bool:
            return all([await ended(a, run_id) for run_id in run_ids])

        await poll_until(all_ended)
        by_a = {e.payload["runId"] for e in a.events.events}
        by_b = {e.payload["runId"] for e in b.events.events}
    assert sorted(claimed["a"] + claimed["b"]) == sorted(run_ids)  # each once, none twice
    assert by_a == set(claimed["a"])
    assert by_b == set(claimed["b"])
    assert not by_a & by_b  # events of a run come from the one engine driving it


async def test_connection_cap_holds_across_engines(
    tmp_path: Path, export_db: ExportDatabase, state_url: str
) -> None:
    config = load_config(write_catalog(tmp_path / "cat", export_db, max_connections=2))
    conn = await asyncpg.connect(export_db.cluster.dsn(db=export_db.name))
    samples: list[int] = []

    async def sample() -> None:
        while True:
            samples.append(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                    " 'exporter-api' AND usename = ANY($1::text[])",
                    [USER1, USER2],
                )
            )
            await anyio.sleep(0.02)

    try:
        async with two_engines(config, tmp_path / "data", state_url) as (a, b):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sample)
                # four lanes at once (two per engine) for two connections
                r1 = await a.engine.start(U1, plan(config, LANES))
                r2 = await b.engine.start(U2, plan(config, LANES))
                await a.engine.wait(r1.run_id)
                await b.engine.wait(r2.run_id)
                tg.cancel_scope.cancel()
            states = [await stored(a, r1.run_id), await stored(a, r2.run_id)]
    finally:
        await conn.close()
    assert [s.status for s in states] == ["Success", "Success"]
    assert max(samples) == 2  # both slots used, never more (pg_stat_activity)
    assert len(samples) > 20


async def _start_in_subprocess(
    config_path: Path, data: Path, url: str, body: dict[str, Any], heartbeat: float, takeover: float
) -> tuple[anyio.abc.Process, str, str]:
    proc = await anyio.open_process(
        [
            sys.executable,
            "-m",
            "tests.exporter_api.runs.engine_proc",
            str(config_path),
            str(data),
            url,
            json.dumps(body),
            str(heartbeat),
            str(takeover),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    buffer = b""
    with anyio.fail_after(30):
        while READY.encode() not in buffer:
            buffer += await proc.stdout.receive()
    line = buffer[buffer.index(READY.encode()) :].split(b"\n", 1)[0]
    ready = json.loads(line)
    return proc, ready["runId"], ready["instanceId"]


async def test_a_killed_engines_run_is_taken_over_and_ends_success(
    catalog_path: Path, catalog: ExportConfig, tmp_path: Path, state_url: str
) -> None:
    heartbeat, takeover = 0.2, 1.0
    data = tmp_path / "data"
    async with engine_kit(
        catalog,
        data,
        CREDS,
        state_url=state_url,
        heartbeat_s=heartbeat,
        takeover_after_s=takeover,
    ) as b:
        proc, run_id, dead = await _start_in_subprocess(
            catalog_path, data, state_url, ORDERS, heartbeat, takeover
        )
        try:
            await poll_until(lambda: second_variant_running(b, run_id), limit_s=20)
            (first,) = await b.repo.files(run_id)
        finally:
            proc.kill()  # SIGKILL: no finaliser, no hand-over
            await proc.wait()
        killed_at = time.monotonic()
        await poll_until(lambda: ended(b, run_id), limit_s=15)
        taken_at = b.events.events[0].at  # B's first event: the run reset for its resumption
        state = await stored(b, run_id)
        await files_are_whole(b, run_id)
        files = await b.repo.files(run_id)
        orders = b.events.of("script.updated", scriptId="s-orders")
        progress = b.events.of("script.progress", scriptId="s-orders")
        driver = await b.engine.queue.driver(run_id)
    assert state.status == "Success"
    assert [v.status for v in variants(state, "s-orders")] == ["Success", "Success", "NoData"]
    assert variants(state, "s-orders")[0].file_id == first.file_id  # the finished one is kept
    assert [f.variant for f in files] == [1, 2]
    assert [e["message"] for e in orders] == [
        "Queued",
        "Executing variant 2/3",
        "Executing variant 3/3",
        "Success",
    ]
    assert progress[-1]["rowsExported"] == state.groups[0].scripts[0].rows_exported
    assert driver is not None
    assert driver.instance_id == b.engine.instance_id != dead
    # within takeover_after_s + a heartbeat (and some slack for a busy machine)
    assert taken_at - killed_at < takeover + heartbeat + 1.5


async def _orphan(kit: EngineKit, config: ExportConfig, *, session: str, attempts: int) -> str:
    """A Running run left by an instance that died long ago."""
    state = kit.engine._initial_state(U1, plan(config, ORDERS))
    state.status = state.groups[0].status = "Running"
    state.groups[0].scripts[0].status = "Running"
    state.groups[0].scripts[0].variants[0].status = "Running"
    owner = RunOwner(USER1, "db-pg", "m1", "s1", session)
    assert await kit.repo.insert_run(state, owner, "dead-instance", max_active=None)
    await kit.store.execute(
        "UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00.000Z', attempts = :n"
        " WHERE run_id = :r",
        {"r": state.run_id, "n": attempts},
    )
    return state.run_id


async def test_a_run_taken_over_too_often_fails_saying_why(
    catalog: ExportConfig, tmp_path: Path, state_url: str
) -> None:
    async with engine_kit(
        catalog, tmp_path / "data", CREDS, state_url=state_url, max_run_attempts=2
    ) as kit:
        again = await _orphan(kit, catalog, session="sess-1", attempts=1)
        given_up = await _orphan(kit, catalog, session="sess-1", attempts=2)
        assert sorted(await kit.engine.claim_orphans()) == sorted([again, given_up])
        await kit.engine.wait(again)
        await kit.engine.wait(given_up)
        resumed, failed = await stored(kit, again), await stored(kit, given_up)
    assert resumed.status == "Success"  # its second takeover: still allowed
    assert failed.status == "Failed"
    assert failed.error == too_many_attempts(3, 2)
    assert variants(failed, "s-orders")[0].error == failed.error
    assert "server.max_run_attempts" in (failed.error or "")


async def test_a_run_whose_credentials_are_gone_fails_saying_why(
    catalog: ExportConfig, tmp_path: Path, state_url: str
) -> None:
    async with engine_kit(catalog, tmp_path / "data", CREDS, state_url=state_url) as kit:
        run_id = await _orphan(kit, catalog, session="logged-out", attempts=0)
        assert await kit.engine.claim_orphans() == [run_id]
        await kit.engine.wait(run_id)
        state = await stored(kit, run_id)
        assert await kit.repo.files(run_id) == []
    assert state.status == "Failed"
    assert state.error == CREDENTIALS_GONE
    assert {v.status for v in variants(state, "s-orders")} == {"Failed"}


async def test_cancel_through_the_other_engine_stops_the_query_within_a_second(
    catalog: ExportConfig, tmp_path: Path, export_db: ExportDatabase, state_url: str
) -> None:
    # Heartbeats far apart: only the notification can make this fast.
    async with two_engines(
        catalog, tmp_path / "data", state_url, heartbeat_s=5.0, takeover_after_s=20.0
    ) as (a, b):
        state = await a.engine.start(U1, plan(catalog, single("s-slow", "g-slow")))
        await poll_until(lambda: has_active_query(export_db))
        asked = time.monotonic()
        after = await b.engine.cancel(state.run_id)
        answered = time.monotonic() - asked
        await poll_until(lambda: no_active_query(export_db), limit_s=1.0 - answered)
        stopped = time.monotonic() - asked
    assert after.status == "Cancelled"  # the 202 body names the outcome, never "Running"
    assert [v.status for v in variants(after, "s-slow")] == ["Cancelled"]
    assert stopped < 1.0


class HeldAdoption:
    """Holds engine A between claiming a run and knowing it (a slow store round trip right
    after the claim): ``claimed`` is set once the claim is committed, ``release`` lets A go on."""

    def __init__(self, kit: EngineKit) -> None:
        self.claimed = anyio.Event()
        self.release = anyio.Event()
        self._owner = kit.repo.owner
        kit.repo.owner = self.owner  # type: ignore[method-assign]

    async def owner(self, run_id: str) -> RunOwner | None:
        self.claimed.set()
        await self.release.wait()
        return await self._owner(run_id)


@pytest.mark.parametrize("via", ["other", "same"])
async def test_a_cancel_while_a_claim_is_being_adopted_stops_the_run_within_a_second(
    catalog: ExportConfig, tmp_path: Path, export_db: ExportDatabase, state_url: str, via: str
) -> None:
    # Heartbeats far apart: neither the periodic claims nor the cancel safety net run here.
    async with two_engines(
        catalog, tmp_path / "data", state_url, heartbeat_s=60.0, takeover_after_s=120.0
    ) as (a, b):
        queued = a.engine._initial_state(U1, plan(catalog, single("s-slow", "g-slow")))
        assert await a.repo.insert_run(queued, OWNER, UNCLAIMED, max_active=None)
        held = HeldAdoption(a)
        canceller = b if via == "other" else a
        if via == "other":  # A is told while it does not know the run yet, then goes on

            async def notified(run_id: str) -> None:
                held.release.set()

            a.engine.notifier.listen(CANCEL_CHANNEL, notified)
        else:  # A goes on once the cancel flag is set
            request_cancel = a.engine.queue.request_cancel

            async def flag_then_release(run_id: str, *, stale_after_s: float) -> Claimable | None:
                driver = await request_cancel(run_id, stale_after_s=stale_after_s)
                held.release.set()
                return driver

            a.engine.queue.request_cancel = flag_then_release  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.engine.claim_orphans)
            await held.claimed.wait()
            asked = time.monotonic()
            after = await canceller.engine.cancel(queued.run_id)
            answered = time.monotonic() - asked
        await poll_until(lambda: no_active_query(export_db), limit_s=1.0)
        final = await stored(a, queued.run_id)
    assert answered < 1.0
    assert after.status == "Cancelled"  # the 202 body names the outcome, never "Running"
    assert final.status == "Cancelled"
    assert [v.status for v in variants(final, "s-slow")] == ["Cancelled"]


class ClockAhead(datetime):
    """This process's wall clock an hour ahead of the state store's (a skewed VM, an NTP step)."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) + timedelta(hours=1)


async def test_an_instance_whose_clock_is_ahead_takes_no_live_run_over(
    catalog: ExportConfig, tmp_path: Path, state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Heartbeats far apart: A's run is proved alive only by its start, stamped by the store.
    async with two_engines(
        catalog, tmp_path / "data", state_url, heartbeat_s=60.0, takeover_after_s=120.0
    ) as (a, b):
        live = await a.engine.start(U1, plan(catalog, single("s-slow", "g-slow")))
        with monkeypatch.context() as clock:
            for module in (timestamps_module, retention_module):  # every wall-clock reader
                clock.setattr(module, "datetime", ClockAhead)
            claimed = await b.engine.claim_orphans()
            driver = await b.engine.queue.driver(live.run_id)
        await a.engine.cancel(live.run_id)
    assert claimed == []
    assert driver is not None
    assert driver.instance_id == a.engine.instance_id


async def test_drain_hands_a_run_over_and_it_ends_success(
    catalog: ExportConfig, tmp_path: Path, state_url: str
) -> None:
    # A stale heartbeat would take 10 s: the other engine takes the run because it is released.
    async with two_engines(
        catalog, tmp_path / "data", state_url, heartbeat_s=0.2, takeover_after_s=10.0
    ) as (a, b):
        state = await a.engine.start(U1, plan(catalog, ORDERS))
        await poll_until(lambda: second_variant_running(a, state.run_id))
        (first,) = await a.repo.files(state.run_id)
        assert await a.engine.drain(grace_s=0) == [state.run_id]
        drained = time.monotonic()
        assert not a.engine.is_active(state.run_id)
        await poll_until(lambda: ended(b, state.run_id))
        elapsed = time.monotonic() - drained
        final = await stored(b, state.run_id)
        await files_are_whole(b, state.run_id)
        attempts = await b.store.fetch_one(
            "SELECT attempts FROM runs WHERE run_id = :r", {"r": state.run_id}
        )
        # a draining engine claims nothing: a run started on it goes to the other one
        queued = await a.engine.start(U1, plan(catalog, single("s-empty", "g-sales")))
        await poll_until(lambda: ended(b, queued.run_id))
        assert not a.engine.is_active(queued.run_id)
    assert final.status == "Success"
    assert [v.status for v in variants(final, "s-orders")] == ["Success", "Success", "NoData"]
    assert variants(final, "s-orders")[0].file_id == first.file_id
    assert elapsed < 3.0
    assert attempts == (0,)  # a hand-over is not a takeover
    assert not any(e.payload.get("status") in ("Cancelled", "Failed") for e in a.events.events)
    assert "Executing variant 2/3" in [
        e["message"] for e in b.events.of("script.updated", scriptId="s-orders")
    ]


async def test_drain_lets_runs_finish_within_the_grace_period(
    catalog: ExportConfig, tmp_path: Path, state_url: str
) -> None:
    async with two_engines(catalog, tmp_path / "data", state_url) as (a, _):
        state = await a.engine.start(U1, plan(catalog, ORDERS))
        assert await a.engine.drain(grace_s=30) == []
        final = await stored(a, state.run_id)
    assert final.status == "Success"


async def test_a_long_variant_of_a_live_engine_is_never_taken_over(
    catalog: ExportConfig, tmp_path: Path, state_url: str
) -> None:
    # Progress is saved far more often than the heartbeat, for longer than the takeover delay:
    # those saves must keep the run's heartbeat fresh, never set it back.
    async with two_engines(
        catalog,
        tmp_path / "data",
        state_url,
        heartbeat_s=0.25,
        takeover_after_s=1.0,
        persist_progress_s=0.05,
    ) as (a, b):
        state = await a.run_to_end(U1, plan(catalog, single("s-progress", "g-slow")))
        driver = await a.engine.queue.driver(state.run_id)
        attempts = await a.store.fetch_one(
            "SELECT attempts FROM runs WHERE run_id = :r", {"r": state.run_id}
        )
    assert state.status == "Success"
    assert driver is not None
    assert driver.instance_id == a.engine.instance_id
    assert attempts == (0,)
    assert not b.events.events  # B never drove it


async def test_a_busy_engine_leaves_a_new_run_to_an_idle_one(
    catalog: ExportConfig, tmp_path: Path, export_db: ExportDatabase, state_url: str
) -> None:
    # B's claim must win by more than A's delay even when a store round trip is slow
    async with two_engines(catalog, tmp_path / "data", state_url, claim_delay_s=1.0) as (a, b):
        busy = await a.engine.start(U1, plan(catalog, single("s-slow", "g-slow")))
        assert a.engine.is_active(busy.run_id)  # idle: it drives its first run itself
        await poll_until(lambda: has_active_query(export_db))
        started = await a.engine.start(U1, plan(catalog, ORDERS))  # queued: B is idle
        await a.engine.wait(started.run_id)
        final = await stored(a, started.run_id)
        driver = await a.engine.queue.driver(started.run_id)
        await a.engine.cancel(busy.run_id)
    assert final.status == "Success"
    assert driver is not None
    assert driver.instance_id == b.engine.instance_id
    assert {e.payload["runId"] for e in b.events.events} == {started.run_id}
