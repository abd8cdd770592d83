from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import asyncpg
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from structlog.testing import capture_logs

from exporter_api.errors import StoreUnavailable
from exporter_api.store import Store, load_migrations, open_store
from exporter_api.store.postgres import PostgresStore
from exporter_api.store.sqlite import LOCK_FILE_NAME, DataDirInUse
from tests.exporter_api.conftest import create_pg_database
from tests.services import PostgresCluster, free_port


def test_migrations_are_numbered_in_order() -> None:
    migrations = load_migrations()
    assert migrations[0][1] == "0001_auth.sql"
    assert [v for v, _, _ in migrations] == sorted({v for v, _, _ in migrations})


async def test_migrations_applied_once(store: Store) -> None:
    rows = await store.fetch_all("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [r[1] for r in rows] == [name for _, name, _ in load_migrations()]
    assert await store.migrate() == []  # idempotent


async def test_named_parameters_round_trip(store: Store) -> None:
    await store.execute(
        "INSERT INTO login_throttle (throttle_key, failures, window_start, locked_until)"
        " VALUES (:k, :f, :w, :l)",
        {"k": "a:b", "f": 3, "w": "2026-01-01T00:00:00.000Z", "l": None},
    )
    row = await store.fetch_one(
        "SELECT failures, locked_until FROM login_throttle WHERE throttle_key = :k", {"k": "a:b"}
    )
    assert row == (3, None)
    assert (
        await store.fetch_one("SELECT failures FROM login_throttle WHERE throttle_key = ':k'")
        is None
    )
    changed = await store.execute(
        "UPDATE login_throttle SET failures = failures + 1 WHERE throttle_key = :k", {"k": "a:b"}
    )
    assert changed == 1


async def test_transaction_rolls_back_on_error(store: Store) -> None:
    async def failing() -> None:
        async with store.transaction():
            await store.execute(
                "INSERT INTO login_throttle (throttle_key, failures, window_start)"
                " VALUES ('x', 1, 'now')"
            )
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await failing()
    assert await store.fetch_all("SELECT * FROM login_throttle") == []


async def test_transactions_are_isolated_between_tasks(store: Store) -> None:
    """Statements of another task wait for (or do not see) an open transaction."""
    seen: list[int] = []
    inside = anyio.Event()
    release = anyio.Event()

    async def writer() -> None:
        async with store.transaction():
            await store.execute(
                "INSERT INTO login_throttle (throttle_key, failures, window_start)"
                " VALUES ('t', 1, 'now')"
            )
            inside.set()
            await release.wait()
            await store.execute("UPDATE login_throttle SET failures = 2 WHERE throttle_key = 't'")

    async def reader() -> None:
        await inside.wait()
        release.set()
        row = await store.fetch_one("SELECT failures FROM login_throttle WHERE throttle_key = 't'")
        seen.append(row[0] if row else 0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        tg.start_soon(reader)
    assert seen[0] in (0, 2)  # never the half-done state 1


async def test_sqlite_store_file_is_private(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.aclose()
    assert (tmp_path / "state.sqlite3").stat().st_mode & 0o077 == 0


async def test_one_process_holds_a_sqlite_data_dir(tmp_path: Path) -> None:
    first = await open_store(tmp_path)
    try:
        with pytest.raises(DataDirInUse) as refused:
            await open_store(tmp_path)
        # Another process: the lock is the kernel's, not this process's memory.
        other = await anyio.run_process(
            [sys.executable, "-c", _OPEN_STORE, str(tmp_path)], check=False
        )
        assert await first.fetch_one("SELECT 1") == (1,)  # the holder is unaffected
    finally:
        await first.aclose()
    assert str(refused.value) == (
        f"another exporter-api process is using the data directory {tmp_path}; stop it, or use "
        "a PostgreSQL state store to run several instances"
    )
    assert other.returncode == 3, other.stderr.decode()
    assert (tmp_path / LOCK_FILE_NAME).stat().st_mode & 0o077 == 0
    again = await open_store(tmp_path)  # closing released it
    await again.aclose()


async def test_a_killed_process_releases_the_sqlite_data_dir(tmp_path: Path) -> None:
    async with await anyio.open_process(
        [sys.executable, "-c", _HOLD_STORE, str(tmp_path)], stdout=subprocess.DEVNULL
    ) as holder:
        assert holder.stderr is not None
        with anyio.fail_after(60):
            said = await BufferedByteReceiveStream(holder.stderr).receive_until(b"\n", 100)
        assert said == b"held"
        with pytest.raises(DataDirInUse):
            await open_store(tmp_path)
        holder.kill()
        await holder.wait()
    store = await open_store(tmp_path)  # SIGKILL left no lock behind
    await store.aclose()


_OPEN_STORE = """
import sys, anyio
from pathlib import Path
from exporter_api.store import open_store
from exporter_api.store.sqlite import DataDirInUse
try:
    anyio.run(open_store, Path(sys.argv[1]))
except DataDirInUse:
    sys.exit(3)
"""

_HOLD_STORE = """
import sys, anyio
from pathlib import Path
from exporter_api.store import open_store

async def main() -> None:
    await open_store(Path(sys.argv[1]))
    print("held", file=sys.stderr, flush=True)
    await anyio.sleep_forever()

anyio.run(main)
"""


async def test_closed_store_is_unavailable(store: Store) -> None:
    await store.aclose()
    with pytest.raises(StoreUnavailable):
        await store.execute("DELETE FROM login_throttle")
    with pytest.raises(StoreUnavailable):
        await store.fetch_all("SELECT * FROM login_throttle")
    with pytest.raises(StoreUnavailable):
        async with store.transaction():
            pass


async def test_bugs_are_not_translated(store: Store) -> None:
    """A constraint violation is a bug in the caller, not an outage: it passes through."""
    insert = (
        "INSERT INTO login_throttle (throttle_key, failures, window_start) VALUES ('d', 1, 'w')"
    )
    await store.execute(insert)
    with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
        await store.execute(insert)
    with pytest.raises((sqlite3.OperationalError, asyncpg.PostgresSyntaxError)):
        await store.execute("SELEC 1")


async def test_sqlite_full_is_unavailable_and_the_store_recovers(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        await store.execute("CREATE TABLE filler (x BLOB)")
        row = await store.fetch_one("PRAGMA page_count")
        assert row is not None
        # The database may not grow: as if the disk were full (SQLITE_FULL).
        await store.execute(f"PRAGMA max_page_count = {int(row[0])}")
        with capture_logs() as logs, pytest.raises(StoreUnavailable) as info:
            await store.execute("INSERT INTO filler VALUES (randomblob(100000))")
        assert "disk full" in info.value.detail
        assert info.value.status == 503
        assert logs[0]["event"] == "store_unavailable"
        assert logs[0]["code"] == "SQLITE_FULL"
        with pytest.raises(StoreUnavailable):
            async with store.transaction():
                await store.execute("INSERT INTO filler VALUES (randomblob(100000))")
        # No transaction was left open on the shared connection: the store works again.
        await store.execute("PRAGMA max_page_count = 1000000")
        async with store.transaction():
            await store.execute("INSERT INTO filler VALUES (randomblob(100000))")
        assert await store.fetch_one("SELECT COUNT(*) FROM filler") == (1,)
    finally:
        await store.aclose()


async def test_postgres_connection_lost_is_unavailable_and_the_store_recovers(
    tmp_path: Path, pg: PostgresCluster
) -> None:
    url = create_pg_database(pg, "lost")
    db = url.rsplit("/", 1)[1]
    store = await open_store(tmp_path, url)

    async def killed_mid_transaction() -> None:
        async with store.transaction():
            await store.execute("SELECT 1")
            await anyio.to_thread.run_sync(
                pg.psql,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE datname = '{db}' AND pid <> pg_backend_pid()",
            )
            await store.execute("SELECT 1")

    try:
        with pytest.raises(StoreUnavailable):
            await killed_mid_transaction()
        # Each call that meets another killed pooled connection fails alike and discards it;
        # then the pool connects anew.
        with anyio.fail_after(30):
            for _ in range(20):
                try:
                    assert await store.fetch_one("SELECT 1") == (1,)
                    break
                except StoreUnavailable:
                    await anyio.lowlevel.checkpoint()
            else:
                pytest.fail("the store did not recover")
    finally:
        await store.aclose()


class _SilencingProxy:
    """A TCP proxy to PostgreSQL that can make the connections it carries go silent (bytes
    vanish both ways, the sockets stay open: a network that drops them), while connections
    opened afterwards work."""

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster
        self.generation = 0
        self.port = 0

    def silence_open_connections(self) -> None:
        self.generation += 1

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self.port = free_port()
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        async with listener:
            task_status.started()
            await listener.serve(self._carry)

    async def _carry(self, client: anyio.abc.SocketStream) -> None:
        generation = self.generation
        async with client, await anyio.connect_tcp("127.0.0.1", self.cluster.port) as server:

            async def pump(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream) -> None:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    async for chunk in source:
                        if generation == self.generation:
                            await sink.send(chunk)

            async with anyio.create_task_group() as tg:
                tg.start_soon(pump, client, server)
                await pump(server, client)
                tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def _pg_store(url: str, **options: Any) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(url, **options)
    try:
        yield store
    finally:
        await store.aclose()


@contextlib.asynccontextmanager
async def _behind_silencing_proxy(
    pg: PostgresCluster, name: str, **options: Any
) -> AsyncIterator[tuple[PostgresStore, _SilencingProxy]]:
    """A store on a new database of ``pg`` whose connections go through a `_SilencingProxy`."""
    url = create_pg_database(pg, name)
    proxy = _SilencingProxy(pg)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        async with _pg_store(url.replace(f":{pg.port}/", f":{proxy.port}/"), **options) as store:
            yield store, proxy
        tg.cancel_scope.cancel()


async def test_a_postgres_store_that_goes_silent_is_unavailable_within_the_statement_limit(
    pg: PostgresCluster,
) -> None:
    silent = _behind_silencing_proxy(pg, "silent", max_size=2, statement_timeout_s=0.5)
    async with silent as (store, proxy):
        async with anyio.create_task_group() as warm:  # two pooled connections
            for _ in range(2):
                warm.start_soon(store.fetch_one, "SELECT pg_sleep(0.1)")
        proxy.silence_open_connections()
        with anyio.fail_after(5):  # within the limit, not the 10 s ROLLBACK/release bound
            with pytest.raises(StoreUnavailable):
                await store.fetch_one("SELECT 1")
            with pytest.raises(StoreUnavailable):
                async with store.transaction():
                    await store.execute("SELECT 1")
        # Both silent connections were closed when they timed out; new ones work.
        with anyio.fail_after(5):
            assert await store.fetch_one("SELECT 1") == (1,)
            async with store.transaction():
                assert await store.fetch_one("SELECT 2") == (2,)


async def test_a_postgres_statement_is_bounded_except_for_maintenance_and_migrations(
    pg: PostgresCluster,
) -> None:
    url = create_pg_database(pg, "bounded")
    async with _pg_store(url, max_size=1, statement_timeout_s=0.3) as store:
        with pytest.raises(StoreUnavailable):
            await store.execute("SELECT pg_sleep(1)")
        with store.maintenance():  # a purge of a large backlog may take minutes
            await store.execute("SELECT pg_sleep(1)")
        assert await store.fetch_one("SELECT 1") == (1,)  # the pool got over the timeout


async def test_a_request_cancelled_while_the_server_is_silent_unwinds_at_once(
    pg: PostgresCluster,
) -> None:
    # A client that goes away while its statement waits on a silent server: the connection is
    # closed, not rolled back and released (each of which would wait 10 s on it).
    silent = _behind_silencing_proxy(pg, "cancelled", max_size=1, statement_timeout_s=30)
    async with silent as (store, proxy):
        for in_transaction in (True, False):
            await store.fetch_one("SELECT 1")  # the pooled connection, then silenced
            proxy.silence_open_connections()
            with anyio.fail_after(3):  # the statement limit (30 s) is not what ends it
                with anyio.move_on_after(0.2) as scope:
                    if in_transaction:
                        async with store.transaction():
                            await store.execute("SELECT 1")
                    else:
                        await store.fetch_one("SELECT 1")
                assert scope.cancelled_caught
        with anyio.fail_after(5):  # a new connection, through the proxy, works
            assert await store.fetch_one("SELECT 2") == (2,)


async def test_a_store_error_raised_by_the_caller_rolls_back_on_a_healthy_connection(
    pg: PostgresCluster,
) -> None:
    url = create_pg_database(pg, "caller_error")
    async with _pg_store(url, max_size=1) as store:
        await store.execute("CREATE TABLE t (v INTEGER)")
        pid = await store.fetch_one("SELECT pg_backend_pid()")

        async def insert_then_fail() -> None:
            async with store.transaction():
                await store.execute("INSERT INTO t VALUES (1)")
                raise StoreUnavailable()  # the caller's own (say, another store's) failure

        with pytest.raises(StoreUnavailable):
            await insert_then_fail()
        assert await store.fetch_one("SELECT count(*) FROM t") == (0,)  # rolled back
        assert await store.fetch_one("SELECT pg_backend_pid()") == pid  # and kept
