"""`/healthz` and `/readyz`: outside /api/ auth, each check bounded, 503 problem JSON naming
what failed (real SQLite/PostgreSQL stores, a real redis-server and a silent TCP peer)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path

import anyio
import msgspec
from starlette.applications import Starlette

from exporter_api.app import create_app
from exporter_api.config import Settings, load_config
from exporter_api.health import Health
from exporter_api.store.base import Store
from exporter_api.store.sqlite import SqliteStore
from tests.exporter_api.conftest import NoRuns, create_pg_database, running_app
from tests.exporter_api.runs.conftest import poll_until
from tests.services import PostgresCluster, RedisServer, free_port


def _app(settings: Settings, **server: object) -> Starlette:
    config = load_config(settings.config_path)
    if server:
        config = msgspec.structs.replace(
            config, server=msgspec.structs.replace(config.server, **server)
        )
    return create_app(settings, config, runs=NoRuns())


async def test_health_and_readiness_without_auth(settings: Settings) -> None:
    app = _app(settings)
    async with running_app(app) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        head = await client.head("/readyz")
        spec = (await client.get("/api/openapi.json")).json()
        # Draining (SIGTERM): 503 at once, the process itself still alive.
        app.state.health.start_draining()
        draining = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert head.status_code == 200
    assert ready.headers["cache-control"] == "no-store"
    assert (settings.data_dir / "exports").is_dir()  # made at start when missing
    assert list((settings.data_dir / "exports").iterdir()) == []  # the probe file is removed
    assert draining.status_code == 503
    assert draining.headers["content-type"] == "application/problem+json"
    assert draining.json()["detail"] == "not ready: draining"
    assert alive.status_code == 200
    for path in ("/healthz", "/readyz"):
        operation = spec["paths"][path]["get"]
        assert "security" not in operation
        assert "200" in operation["responses"]
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]


async def test_unusable_files_directory_is_named(settings: Settings, tmp_path: Path) -> None:
    shared = tmp_path / "shared-volume"
    config = load_config(settings.config_path)
    config = msgspec.structs.replace(
        config, output=msgspec.structs.replace(config.output, files_dir=str(shared))
    )
    app = create_app(settings, config, runs=NoRuns())
    async with running_app(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        assert shared.is_dir()
        shutil.rmtree(shared)
        shared.write_text("a file where the directory should be")
        gone = await client.get("/readyz")
    assert gone.status_code == 503
    assert gone.json()["detail"] == "not ready: files directory: does not exist"


def _threads_in_probe() -> int:
    """Worker threads currently inside the files check."""
    return sum(
        any(frame.f_code.co_name == "_write_probe" for frame, _ in traceback.walk_stack(top))
        for top in sys._current_frames().values()
    )


async def test_a_hung_files_directory_holds_one_thread(settings: Settings) -> None:
    app = _app(settings)
    async with running_app(app) as client:
        health = app.state.health
        health.timeout_s = 0.2
        # A FIFO where the probe file goes: opening it for writing blocks until a reader comes,
        # as a write on a hung NFS mount does.
        probe = health.files_dir / health._probe_name
        os.mkfifo(probe, 0o600)
        answers = [await client.get("/readyz") for _ in range(5)]
        stuck = _threads_in_probe()
        # The mount answers again: the blocked check finishes and the next one passes.
        reader = os.open(probe, os.O_RDONLY | os.O_NONBLOCK)
        try:

            async def returned() -> bool:
                return _threads_in_probe() == 0

            await poll_until(returned, limit_s=5)
            back = await client.get("/readyz")
        finally:
            os.close(reader)
    assert stuck == 1, "every probe started one more thread on the hung directory"
    assert [a.status_code for a in answers] == [503] * 5
    assert answers[0].json()["detail"] == "not ready: files directory: no answer within 0.2 s"
    assert {a.json()["detail"] for a in answers[1:]} == {
        "not ready: files directory: not answering (the previous check has not returned yet)"
    }
    assert back.status_code == 200
    assert not probe.exists()


async def test_redis_checked_when_configured(settings: Settings, redis: RedisServer) -> None:
    async with running_app(_app(dataclasses.replace(settings, redis_url=redis.url))) as client:
        ok = await client.get("/readyz")
    assert ok.status_code == 200
    closed = f"redis://127.0.0.1:{free_port()}/0"
    async with running_app(_app(dataclasses.replace(settings, redis_url=closed))) as client:
        down = await client.get("/readyz")
    assert down.status_code == 503
    detail = down.json()["detail"]
    assert detail.startswith("not ready: redis: unreachable")
    assert closed not in detail


async def test_a_silent_peer_answers_503_within_the_timeout(settings: Settings) -> None:
    # A socket that accepts connections (the kernel's backlog) and never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        app = _app(dataclasses.replace(settings, redis_url=url))
        async with running_app(app) as client:
            app.state.health.timeout_s = 0.5
            started = time.monotonic()
            with anyio.fail_after(5):
                slow = await client.get("/readyz")
            took = time.monotonic() - started
    assert slow.status_code == 503
    assert slow.json()["detail"] == "not ready: redis: no answer within 0.5 s"
    assert took < 2


async def test_lost_state_store_is_named(settings: Settings, pg: PostgresCluster) -> None:
    state_url = create_pg_database(pg, "state_health")
    pg_settings = dataclasses.replace(
        settings, state_url=state_url, jwt_key=b"j" * 32, vault_key=b"v" * 32
    )
    async with running_app(_app(pg_settings)) as client:
        assert (await client.get("/readyz")).status_code == 200
        pg.psql(f'DROP DATABASE "{state_url.rsplit("/", 1)[1]}" WITH (FORCE)')
        lost = await client.get("/readyz")
    assert lost.status_code == 503
    assert lost.json()["detail"].startswith("not ready: state store: unreachable")


async def _concurrent_failures(health: Health, store: Store, count: int) -> list[list[str]]:
    results: list[list[str]] = []
    async with health.running(store):

        async def probe() -> None:
            results.append(await health.failures())

        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(probe)
    return results


async def test_overlapping_probes_share_one_check(tmp_path: Path) -> None:
    # Two load balancer checkers, or a burst of anonymous requests, at the same moment.
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        results = await _concurrent_failures(Health(tmp_path / "exports", None), store, 4)
    finally:
        await store.aclose()
    assert results == [[], [], [], []]


async def test_overlapping_probes_with_redis(tmp_path: Path, redis: RedisServer) -> None:
    # More probes than the health client's Redis connections (2): none fails for want of one.
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        results = await _concurrent_failures(Health(tmp_path / "exports", redis.url), store, 6)
    finally:
        await store.aclose()
    assert results == [[]] * 6
