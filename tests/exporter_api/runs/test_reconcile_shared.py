"""9.3: instances sharing one files directory (and a PostgreSQL state store). An instance that
starts, or claims runs on its heartbeat, reconciles only the runs whose owner is dead (which it
takes over): a live instance's partial file in the same directory tree is never touched."""

from __future__ import annotations

from pathlib import Path

from exporter_api.config import ExportConfig
from exporter_api.runs.filerecords import StoredFile
from exporter_api.runs.models import utc_now
from exporter_api.runs.repository import RunOwner
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD, poll_until
from tests.exporter_api.runs.enginekit import engine_kit, plan, single, user

CREDS = {"sess-1": (USER1, USER1_PASSWORD)}
U1 = user(USER1, "sess-1")
LONG_AGO = "2000-01-01T00:00:00.000Z"


def _parts(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.iterdir() if p.name.endswith(".part")] if run_dir.is_dir() else []


async def test_only_a_dead_owners_run_is_reconciled(
    catalog: ExportConfig, tmp_path: Path, pg_state_url: str
) -> None:
    data = tmp_path / "data"  # one files directory for both instances, as on a shared volume
    async with engine_kit(catalog, data, CREDS, state_url=pg_state_url) as a:
        live = await a.engine.start(U1, plan(catalog, single("s-slow", "g-slow")))
        live_dir = a.files_root / live.run_id

        async def writing() -> bool:
            return bool(_parts(live_dir))

        await poll_until(writing)
        live_part = _parts(live_dir)[0]

        # What an instance that died mid-run left: a Running run with a stale heartbeat, one
        # recorded file, a partial file and a file renamed but never recorded.
        dead = a.engine._initial_state(U1, plan(catalog, single("s-orders", "g-sales")))
        group = dead.groups[0]
        script = group.scripts[0]
        dead.status = group.status = script.status = "Running"
        script.variants[0].status = "Success"
        script.variants[1].status = "Running"
        owner = RunOwner(USER1, "db-pg", "m1", "s1", "sess-1")
        assert await a.repo.insert_run(dead, owner, "dead-instance", max_active=None)
        dead_dir = a.files_root / dead.run_id
        dead_dir.mkdir()
        (dead_dir / "v1.csv").write_bytes(b"OrderId\n3\n")
        (dead_dir / ".v2.csv.part").write_bytes(b"OrderId\n1\n")
        (dead_dir / "v3.csv").write_bytes(b"OrderId\n2\n")  # the SIGKILL-after-rename orphan
        recorded = StoredFile(
            run_id=dead.run_id,
            file_id="f1",
            group_id=group.group_id,
            script_id=script.script_id,
            variant=1,
            name="v1.csv",
            size_bytes=10,
            rows=1,
            sha256="0" * 64,
            created_at=utc_now(),
        )
        await a.repo.save(dead, file=recorded)
        await a.store.execute(
            "UPDATE runs SET heartbeat_at = :at WHERE run_id = :run_id",
            {"at": LONG_AGO, "run_id": dead.run_id},
        )

        # A second instance starts on the same store and files directory: it takes the dead
        # instance's run over (and carries it to its end), never the live one.
        async with engine_kit(catalog, data, CREDS, state_url=pg_state_url) as b:
            await b.engine.wait(dead.run_id)
            recovered = await b.repo.load(dead.run_id)
            still = await b.repo.load(live.run_id)
            dead_files = sorted(p.name for p in dead_dir.iterdir())
            live_part_there = live_part.exists()
            # and its periodic claims leave the live run alone too
            assert await b.engine.claim_orphans() == []
        assert live_part.exists()
        assert still is not None
        assert still.status == "Running"
        cancelled = await a.engine.cancel(live.run_id)
        live_left = _parts(live_dir)  # its own writer removes its partial file

    assert recovered is not None
    assert recovered.status == "Success"
    # recorded kept; partial and orphan gone; variant 2 exported anew (variant 3 has no rows)
    assert dead_files == sorted(["v1.csv", f"{USER1}_s-orders_v2.csv"])
    assert live_part_there
    assert cancelled.status == "Cancelled"
    assert live_left == []
