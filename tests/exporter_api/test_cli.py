"""`exporter-api` as an operator runs it: exit codes and messages, no tracebacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import structlog
from hypercorn.config import Config as HypercornConfig

from exporter_api.app import create_app
from exporter_api.cli import _serve_until_signal
from exporter_api.config import Settings
from exporter_api.security.keys import JWT_KEY_ENV, VAULT_KEY_ENV, generate_key, parse_keys
from exporter_api.services import Services
from exporter_api.store import open_store
from exporter_api.workers import listening_socket
from tests.exporter_api.conftest import DEMO_LOGIN, NoRuns, create_pg_database
from tests.services import (
    PostgresCluster,
    RedisServer,
    exporter_serve,
    free_port,
    kill_survivors,
    log_events,
    service_env,
    wait_for_workers,
)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter_api", *args],
        env=service_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_shared_store_without_keys_refuses_to_start(tmp_path: Path) -> None:
    # The URL is never dialled: the keys are checked before anything listens or connects.
    shared = ("serve", "--data-dir", str(tmp_path), "--state-url", "postgresql://127.0.0.1:9/state")
    result = _cli(*shared, "--port", "9")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert JWT_KEY_ENV in result.stderr
    assert "keys_dir" in result.stderr
    assert not (tmp_path / "jwt.key").exists()
    # Only the JWT key given: the vault key is named next.
    result = _cli(*shared, env={JWT_KEY_ENV: _cli("generate-key").stdout.strip()})
    assert result.returncode == 1
    assert VAULT_KEY_ENV in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_second_process_on_one_sqlite_data_dir_refuses_to_start(tmp_path: Path) -> None:
    # The first instance (its SQLite store open here) is left alone: the second never listens.
    first = await open_store(tmp_path)
    try:
        result = await anyio.to_thread.run_sync(
            lambda: _cli("serve", "--data-dir", str(tmp_path), "--port", str(free_port()))
        )
        assert await first.fetch_one("SELECT 1") == (1,)
    finally:
        await first.aclose()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().endswith(
        f"error: another exporter-api process is using the data directory {tmp_path}; stop it, "
        "or use a PostgreSQL state store to run several instances"
    )


def test_audit_with_the_store_unreachable_prints_one_line(tmp_path: Path) -> None:
    # Nothing listens on port 1: the connection is refused.
    url = "postgresql://auditor:secret@127.0.0.1:1/x"
    result = _cli("audit", "--data-dir", str(tmp_path), "--since", "2026-01-01", "--state-url", url)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: cannot read the PostgreSQL state store (ConnectionRefusedError)"
    ]
    assert "secret" not in result.stderr


def test_audit_refused_by_the_server_prints_one_line(pg: PostgresCluster, tmp_path: Path) -> None:
    url = f"postgresql://{pg.superuser}:wrong-secret@127.0.0.1:{pg.port}/postgres"
    result = _cli("audit", "--data-dir", str(tmp_path), "--since", "2026-01-01", "--state-url", url)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: cannot read the PostgreSQL state store (InvalidPasswordError)"
    ]
    assert "wrong-secret" not in result.stderr


_STUBBORN = """
import asyncio
from exporter_api.cli import _exit_if_stuck

async def main():
    async def flush_for_ever():  # as hypercorn's task flushing a socket nobody reads
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
    asyncio.get_running_loop().create_task(flush_for_ever())
    _exit_if_stuck(0.2)

asyncio.run(main())
"""


def test_a_stop_that_leaves_a_stuck_connection_task_still_ends_the_process() -> None:
    # Without the exit, asyncio.run waits for that task for ever (the test's timeout).
    result = subprocess.run(
        [sys.executable, "-c", _STUBBORN],
        env=service_env(None),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert "exit_forced" in result.stdout
    assert "tasks_left=1" in result.stdout


def test_generate_key_prints_a_usable_key() -> None:
    first, second = _cli("generate-key"), _cli("generate-key")
    assert first.returncode == 0
    assert len(parse_keys(first.stdout, "stdout").current) == 32
    assert first.stdout != second.stdout


def test_workers_need_the_postgresql_store_and_redis(tmp_path: Path) -> None:
    keys = {JWT_KEY_ENV: generate_key(), VAULT_KEY_ENV: generate_key()}
    sqlite = _cli("serve", "--data-dir", str(tmp_path), "--workers", "2", env=keys)
    assert sqlite.returncode == 1
    assert "Traceback" not in sqlite.stderr
    assert "PostgreSQL state store" in sqlite.stderr
    assert "Redis" in sqlite.stderr
    secret_url = "postgresql://u:pa55word@127.0.0.1:9/state"
    no_redis = _cli(
        "serve",
        "--data-dir",
        str(tmp_path),
        "--workers",
        "2",
        "--state-url",
        secret_url,
        env=keys,
    )
    assert no_redis.returncode == 1
    assert "PostgreSQL" not in no_redis.stderr
    assert "--redis-url" in no_redis.stderr
    assert "pa55word" not in no_redis.stderr


def _serve_workers(
    settings: Settings, state_url: str, redis: RedisServer, log_path: Path
) -> AbstractContextManager[tuple[subprocess.Popen[bytes], str]]:
    """``serve --workers 2`` on the PostgreSQL store ``state_url`` and ``redis``."""
    env = {
        JWT_KEY_ENV: generate_key(),
        VAULT_KEY_ENV: generate_key(),
        "EXPORTER_REDIS_URL": redis.url,
    }
    args = ("--workers", "2", "--state-url", state_url)
    return exporter_serve(
        settings.config_path, settings.data_dir, log_path, args=args, env=env, timeout=60
    )


def test_workers_serve_one_port_and_stop_on_sigterm(
    settings: Settings, pg: PostgresCluster, redis: RedisServer, tmp_path: Path
) -> None:
    state_url = create_pg_database(pg, "state_workers")
    log_path = tmp_path / "workers.log"
    with _serve_workers(settings, state_url, redis, log_path) as (proc, url):
        with httpx.Client(base_url=url, timeout=10) as client:
            wait_for_workers(log_path)
            assert client.get("/readyz").json() == {"status": "ready"}
            login = client.post("/api/auth/login", json=DEMO_LOGIN)
            assert login.status_code == 200
            token = login.json()["accessToken"]
            # Both workers accept the token (shared keys and store), whichever answers.
            for _ in range(6):
                scripts = client.get(
                    "/api/catalog/scripts", headers={"Authorization": f"Bearer {token}"}
                )
                assert scripts.status_code == 200
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)  # past the deadline: the block's end stops it, and the test fails
    assert code == 0
    events = log_events(log_path)
    pids = {e["pid"] for e in events if e["event"] == "worker_started"}
    assert len(pids) == 2
    assert sorted(e["worker"] for e in events if e["event"] == "worker_stopped") == [0, 1]
    assert sum(e["event"] == "draining_started" for e in events) == 2
    for pid in pids:  # no worker is left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    text = log_path.read_text(encoding="utf-8")
    assert pg.password not in text  # the state URL's password is never logged


def test_workers_drain_and_exit_when_the_supervisor_is_killed(
    settings: Settings, pg: PostgresCluster, redis: RedisServer, tmp_path: Path
) -> None:
    state_url = create_pg_database(pg, "state_orphans")
    log_path = tmp_path / "workers.log"
    with _serve_workers(settings, state_url, redis, log_path) as (proc, url):
        events = wait_for_workers(log_path)
        proc.kill()  # SIGKILL (OOM killer, kill -9): the supervisor stops no one itself
        proc.wait()
    pids = {e["pid"] for e in events if e["event"] == "worker_started"}
    left = kill_survivors(pids, 30)
    assert len(pids) == 2
    assert left == [], "workers outlived their supervisor"
    events = log_events(log_path)
    assert sum(e["event"] == "draining_started" for e in events) == 2  # as on SIGTERM
    with listening_socket("127.0.0.1", httpx.URL(url).port or 0):  # a new supervisor can bind
        pass


class _DrainingRuns(NoRuns):
    """A runs component whose drain waits for the test: the order of the stop is observable."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.draining = anyio.Event()
        self.release = anyio.Event()

    async def drain(self) -> list[str]:
        self.calls.append("drain")
        self.draining.set()
        await self.release.wait()
        return ["run-1"]

    async def shutdown(self) -> None:
        self.calls.append("shutdown")


@asynccontextmanager
async def _serving(
    settings: Settings, runs: _DrainingRuns, stop_signal: signal.Signals
) -> AsyncIterator[httpx.AsyncClient]:
    """`_serve_until_signal` in this process; ``stop_signal`` is ignored until it is listened
    for, so a signal sent too early fails the test instead of killing pytest."""
    previous = signal.signal(stop_signal, signal.SIG_IGN)
    port = free_port()
    hc = HypercornConfig()
    hc.bind = [f"127.0.0.1:{port}"]
    hc.accesslog = None
    hc.errorlog = None
    hc.graceful_timeout = 1
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_serve_until_signal, create_app(settings, runs=runs), hc, (stop_signal,))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                with anyio.fail_after(20):
                    # Polling conditions with a deadline: the port, then the signal handler.
                    while True:
                        try:
                            if (await client.get("/readyz")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await anyio.sleep(0.05)
                    while signal.getsignal(stop_signal) == signal.SIG_IGN:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                yield client
    finally:
        signal.signal(stop_signal, previous)


async def test_sigterm_drains_runs_before_closing_the_hub(settings: Settings) -> None:
    runs = _DrainingRuns()
    with structlog.testing.capture_logs() as logs:
        async with _serving(settings, runs, signal.SIGUSR2) as client:
            os.kill(os.getpid(), signal.SIGUSR2)
            with anyio.fail_after(5):
                await runs.draining.wait()
            # While runs drain the instance still answers, but is no longer ready.
            not_ready = await client.get("/readyz")
            assert (await client.get("/healthz")).status_code == 200
            assert runs.calls == ["drain"]
            runs.release.set()
    assert not_ready.status_code == 503
    assert not_ready.json()["detail"] == "not ready: draining"
    assert runs.calls == ["drain", "shutdown"]
    events = [e["event"] for e in logs]
    assert events.index("draining_started") < events.index("drained")
    assert next(e for e in logs if e["event"] == "drained")["handed_over"] == 1


class _SlowStart(_DrainingRuns):
    """Runs whose start (claiming runs on a busy store) waits for the test."""

    def __init__(self) -> None:
        super().__init__()
        self.starting = anyio.Event()
        self.started = anyio.Event()

    @asynccontextmanager
    async def lifespan(self, services: Services) -> AsyncIterator[None]:
        self.starting.set()
        await self.started.wait()
        async with super().lifespan(services):
            yield


async def test_a_signal_while_the_app_starts_drains_once_it_has_started(
    settings: Settings,
) -> None:
    runs = _SlowStart()
    runs.release.set()
    hc = HypercornConfig()
    hc.bind = [f"127.0.0.1:{free_port()}"]
    hc.accesslog = None
    hc.errorlog = None
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        with structlog.testing.capture_logs() as logs, anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    _serve_until_signal, create_app(settings, runs=runs), hc, (signal.SIGUSR2,)
                )
                await runs.starting.wait()
                # Listened for already (before the lifespan began), not ignored or fatal.
                assert signal.getsignal(signal.SIGUSR2) != signal.SIG_IGN
                os.kill(os.getpid(), signal.SIGUSR2)
                runs.started.set()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert runs.calls == ["drain", "shutdown"]
    events = [e["event"] for e in logs]
    assert events.index("service_started") < events.index("draining_started")


async def test_a_second_signal_cuts_the_drain_short(settings: Settings) -> None:
    runs = _DrainingRuns()
    with structlog.testing.capture_logs() as logs:
        async with _serving(settings, runs, signal.SIGUSR2):
            os.kill(os.getpid(), signal.SIGUSR2)
            with anyio.fail_after(5):
                await runs.draining.wait()
            os.kill(os.getpid(), signal.SIGUSR2)  # never released: only the signal ends it
    assert runs.calls == ["drain", "shutdown"]
    assert "drain_cut_short" in [e["event"] for e in logs]
