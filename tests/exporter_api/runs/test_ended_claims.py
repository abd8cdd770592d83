"""A dead owner's partial and never-recorded files go when its run is claimed -- also when the
run is then ended rather than resumed (its session logged out, taken over too often, a cancel
pending, or cancelled while nobody drove it): else they would stay on disk for good."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter_api.config import ExportConfig
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD
from tests.exporter_api.runs.enginekit import EngineKit, engine_kit, plan, single

CREDS = {"sess-1": (USER1, USER1_PASSWORD)}
LONG_AGO = "2000-01-01T00:00:00.000Z"


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    part: Path
    orphan: Path


async def leave_dead_run(kit: EngineKit, catalog: ExportConfig) -> DeadRun:
    """What a process SIGKILLed right after renaming a file into place leaves: a Running run
    claimed by it, the complete file no row records, and the next variant's partial file."""
    state = await kit.left_running(plan(catalog, single("s-orders", "g-sales")), "dead-process")
    directory = kit.files_root / state.run_id
    directory.mkdir(parents=True)
    orphan = directory / f"{USER1}_s-orders_v1.csv"
    orphan.write_bytes(b"OrderId\n1\n2\n")
    part = directory / f".{USER1}_s-orders_v2.csv.part"
    part.write_bytes(b"OrderId\n1\n")
    return DeadRun(state.run_id, part, orphan)


@pytest.mark.parametrize(
    ("credentials", "max_run_attempts", "cancel", "status"),
    [
        ({}, 3, False, "Failed"),
        (CREDS, 0, False, "Failed"),
        (CREDS, 3, True, "Cancelled"),
    ],
    ids=["credentials-gone", "taken-over-too-often", "cancel-pending"],
)
async def test_a_run_claimed_at_restart_and_ended_loses_the_dead_owners_files(
    catalog: ExportConfig,
    tmp_path: Path,
    credentials: dict[str, tuple[str, str]],
    max_run_attempts: int,
    cancel: bool,
    status: str,
) -> None:
    data = tmp_path / "data"
    async with engine_kit(catalog, data, CREDS) as kit:
        dead = await leave_dead_run(kit, catalog)
        if cancel:
            await kit.store.execute(
                "UPDATE runs SET cancel_requested = 1 WHERE run_id = :run_id",
                {"run_id": dead.run_id},
            )
    # Restarted on the same SQLite store: the run is claimed at startup, then ended.
    async with engine_kit(catalog, data, credentials, max_run_attempts=max_run_attempts) as kit:
        await kit.engine.wait(dead.run_id)
        ended = await kit.repo.load(dead.run_id)
        recorded = await kit.repo.files(dead.run_id)
    assert ended is not None
    assert ended.status == status
    assert recorded == []
    assert not dead.orphan.exists()
    assert not dead.part.exists()


async def test_a_run_cancelled_while_nobody_drives_it_loses_the_dead_owners_files(
    catalog: ExportConfig, tmp_path: Path
) -> None:
    # No periodic claim within the test (heartbeat_s): the cancel finds the run unattended.
    async with engine_kit(
        catalog, tmp_path / "data", CREDS, takeover_after_s=1.0, heartbeat_s=60.0
    ) as kit:
        dead = await leave_dead_run(kit, catalog)
        await kit.store.execute(
            "UPDATE runs SET heartbeat_at = :at WHERE run_id = :run_id",
            {"at": LONG_AGO, "run_id": dead.run_id},
        )
        cancelled = await kit.engine.cancel(dead.run_id)  # claimed by the cancel itself
    assert cancelled.status == "Cancelled"
    assert not dead.orphan.exists()
    assert not dead.part.exists()
