"""Retention (`server.retention_days`), file names from display names and dates, and the per-user
active-run limit holding under concurrent starts on a shared PostgreSQL store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec

from exporter_api.app import create_app
from exporter_api.config import ExportConfig, Settings, load_config
from exporter_api.runs import RunsComponent
from exporter_api.runs.engine import new_ulid
from exporter_api.runs.files import files_root
from exporter_api.runs.models import RunState, utc_now
from exporter_api.runs.repository import RunOwner, RunRepository
from exporter_api.store import open_store
from tests.exporter_api.conftest import (
    DEMO_LOGIN,
    SALES,
    create_pg_database,
    ended_run,
    running_app,
)
from tests.services import PostgresCluster


def exports_of(settings: Settings) -> Path:
    return files_root(settings.data_dir, load_config(settings.config_path).output)


def _config(
    settings: Settings, *, retention_days: int = 0, template: str | None = None
) -> ExportConfig:
    config = load_config(settings.config_path)
    server = msgspec.structs.replace(config.server, retention_days=retention_days)
    output = config.output
    if template is not None:
        output = msgspec.structs.replace(output, file_name_template=template)
    return msgspec.structs.replace(config, server=server, output=output)


async def _run(
    client: httpx.AsyncClient, body: dict[str, Any] = SALES
) -> tuple[str, dict[str, str]]:
    token = (await client.post("/api/auth/login", json=DEMO_LOGIN)).json()["accessToken"]
    auth = {"Authorization": f"Bearer {token}"}
    run_id: str = (await client.post("/api/runs", json=body, headers=auth)).json()["runId"]
    await ended_run(client, run_id, auth)
    return run_id, auth


async def test_file_names_from_display_names_and_dates(settings: Settings) -> None:
    template = "{group_name}_{script_name}_{date}_{time}_v{variant}.csv"
    async with running_app(create_app(settings, _config(settings, template=template))) as client:
        run_id, auth = await _run(client)
        state = (await client.get(f"/api/runs/{run_id}", headers=auth)).json()
        created = datetime.fromisoformat(state["createdAt"].replace("Z", "+00:00"))
        stamp = created.strftime("%Y%m%d_%H%M%S")
        names = sorted(f["name"] for f in state["files"])
        assert names == [f"Sales_Orders export_{stamp}_v{i}.csv" for i in (1, 2, 3)]
        assert sorted(p.name for p in (exports_of(settings) / run_id).iterdir()) == names


async def test_retention_sweep_deletes_old_finished_runs_and_files(settings: Settings) -> None:
    app = create_app(settings, _config(settings, retention_days=2))
    async with running_app(app) as client:
        run_id, auth = await _run(client)
        directory = exports_of(settings) / run_id
        assert len(list(directory.iterdir())) == 3
        runs: RunsComponent = app.state.runs
        engine = runs.engine
        assert await engine.retention.sweep() == []  # fresh: kept
        assert await engine.retention.sweep(datetime.now(UTC) + timedelta(days=1)) == []
        assert await engine.retention.sweep(datetime.now(UTC) + timedelta(days=3)) == [run_id]
        assert not directory.exists()
        assert (await client.get(f"/api/runs/{run_id}", headers=auth)).status_code == 404
        assert (await client.get("/api/runs", headers=auth)).json()["items"] == []


async def test_retention_runs_in_the_background_from_the_start(settings: Settings) -> None:
    async with running_app(create_app(settings, _config(settings, retention_days=1))) as client:
        old, auth = await _run(client)
        kept, _ = await _run(client)
        store = client._transport.app.state.services.store  # type: ignore[attr-defined]
        await store.execute(
            "UPDATE runs SET finished_at = :t WHERE run_id = :id",
            {"t": "2020-01-01T00:00:00.000Z", "id": old},
        )
    # The next start sweeps at once: the old run and its files are gone, the recent one is kept.
    async with running_app(create_app(settings, _config(settings, retention_days=1))) as client:
        token = (await client.post("/api/auth/login", json=DEMO_LOGIN)).json()["accessToken"]
        auth = {"Authorization": f"Bearer {token}"}
        with anyio.fail_after(10):
            while (await client.get(f"/api/runs/{old}", headers=auth)).status_code != 404:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert not (exports_of(settings) / old).exists()
        assert (await client.get(f"/api/runs/{kept}", headers=auth)).status_code == 200
    # retention_days = 0 keeps everything
    async with running_app(create_app(settings, _config(settings))) as client:
        token = (await client.post("/api/auth/login", json=DEMO_LOGIN)).json()["accessToken"]
        auth = {"Authorization": f"Bearer {token}"}
        runs: RunsComponent = client._transport.app.state.runs  # type: ignore[attr-defined]
        assert await runs.engine.retention.sweep(datetime.now(UTC) + timedelta(days=999)) == []
        assert (await client.get(f"/api/runs/{kept}", headers=auth)).status_code == 200


def _state() -> RunState:
    now = utc_now()
    return RunState(
        run_id=new_ulid(),
        status="Queued",
        mode="AllGroups",
        login="u",
        database_id="db",
        manager_id="m1",
        stream_id="s1",
        created_at=now,
        updated_at=now,
    )


async def test_active_run_limit_is_race_free_on_postgres(
    pg: PostgresCluster, tmp_path: Path
) -> None:
    """Two instances on one PostgreSQL store, many concurrent starts: exactly the limit wins."""
    url = create_pg_database(pg, "limit")
    first = await open_store(tmp_path / "a", url)
    second = await open_store(tmp_path / "b", url)
    try:
        repos = [RunRepository(first), RunRepository(second)]
        owner = RunOwner("u", "db", "m1", "s1", "sess")
        results: list[bool] = []

        async def start(repo: RunRepository) -> None:
            results.append(await repo.insert_run(_state(), owner, "i", max_active=3))

        for _ in range(3):  # a few rounds: the race window is small
            results.clear()
            await first.execute("DELETE FROM runs")
            async with anyio.create_task_group() as tg:
                for i in range(16):
                    tg.start_soon(start, repos[i % 2])
            assert sorted(results) == [False] * 13 + [True] * 3
        row = await first.fetch_one("SELECT COUNT(*) FROM runs WHERE status = 'Queued'")
        assert row is not None
        assert int(row[0]) == 3
    finally:
        await first.aclose()
        await second.aclose()
