"""A full export disk through the engine: the variant fails with a message a user can act on,
and no partial file is left behind (a 1 MiB tmpfs as the files directory)."""

from __future__ import annotations

from pathlib import Path

from exporter_api.config import ExportConfig
from exporter_api.runs.errors import DISK_FULL
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD
from tests.exporter_api.runs.demokit import DEMO_CREDS, demo_catalog, demo_providers
from tests.exporter_api.runs.enginekit import U1, engine_kit, plan, single, user
from tests.exporter_api.runs.tmpfs import mounted_tmpfs

BIG = single("s-ledger", "g-big")
PG_CREDS = {"sess-1": (USER1, USER1_PASSWORD)}


async def test_full_disk_fails_the_variant_and_leaves_no_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # ~2.5 MB of CSV for a 1 MiB disk
    config, providers = await demo_providers(demo_catalog(tmp_path / "demo", 30_000), data)
    who = user("USER1", "sess-demo", database_id="db-test")
    with mounted_tmpfs(data / "exports", size="1m") as disk:
        async with engine_kit(config, data, DEMO_CREDS, providers=providers) as kit:
            state = await kit.run_to_end(who, plan(config, BIG))
            files = await kit.repo.files(state.run_id)
            # the disk is usable again at once: a small export of the same run's size works
            sales = await kit.run_to_end(who, plan(config, single("s-orders", "g-sales")))
        leftovers = sorted(p.name for p in (disk / state.run_id).iterdir())
        sales_files = sorted(p.name for p in (disk / sales.run_id).iterdir())
    variant = state.groups[0].scripts[0].variants[0]
    assert variant.status == "Failed"
    assert variant.error == DISK_FULL == "the export disk is full"
    assert variant.message == DISK_FULL
    assert state.status == "Failed"
    assert files == []
    assert leftovers == []  # no .part, no complete file
    assert sales.status == "Success"
    assert len(sales_files) == 3


async def test_full_disk_under_postgres_is_not_a_lost_connection(
    catalog: ExportConfig, tmp_path: Path
) -> None:
    # The symptom: an OSError(ENOSPC) from the sink read "lost the connection to db-pg".
    data = tmp_path / "data"
    with mounted_tmpfs(data / "exports", size="1m") as disk:
        async with engine_kit(catalog, data, PG_CREDS) as kit:
            state = await kit.run_to_end(U1, plan(catalog, single("s-progress", "g-slow")))
            files = await kit.repo.files(state.run_id)
        leftovers = sorted(p.name for p in (disk / state.run_id).iterdir())
    variant = state.groups[0].scripts[0].variants[0]
    assert (variant.status, variant.error) == ("Failed", DISK_FULL)
    assert files == []
    assert leftovers == []
