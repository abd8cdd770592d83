"""Signals between instances: `PostgresNotifier` on a throwaway PostgreSQL, and session
revocation crossing two app instances that share one state store."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import structlog
from websockets.asyncio.client import connect

from exporter_api.config import Settings
from exporter_api.notify import Handler, LocalNotifier, PostgresNotifier
from exporter_api.store import Store, open_store
from tests.exporter_api.conftest import DEMO_LOGIN, create_pg_database, demo_config_with
from tests.exporter_api.runs.live import live_service
from tests.services import PostgresCluster, async_wait_until, free_port

RS = "\x1e"
SAME_ORIGIN = {"X-Requested-With": "test"}


@asynccontextmanager
async def _store(url: str, tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(tmp_path, url)
    try:
        yield store
    finally:
        await store.aclose()


class Inbox:
    """What handlers received, with a way to wait for a count (no sleeps)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self._event = anyio.Event()

    def handler(self, name: str) -> Handler:
        async def handle(payload: str) -> None:
            self.items.append((name, payload))
            self._event.set()
            self._event = anyio.Event()

        return handle

    async def wait_for(self, count: int) -> list[tuple[str, str]]:
        with anyio.fail_after(5):
            while len(self.items) < count:
                await self._event.wait()
        return self.items


async def test_local_notifier_calls_handlers_in_order_and_forgets() -> None:
    notifier = LocalNotifier()
    inbox = Inbox()
    notifier.listen("c", inbox.handler("a"))
    forget = notifier.listen("c", inbox.handler("b"))
    await notifier.notify("c", "1")
    forget()
    await notifier.notify("c", "2")
    await notifier.notify("other", "3")
    assert inbox.items == [("a", "1"), ("b", "1"), ("a", "2")]


async def test_postgres_notifier_reaches_every_instance_in_order(
    pg: PostgresCluster, tmp_path: Path
) -> None:
    url = create_pg_database(pg, "notify")
    inbox = Inbox()

    async def failing(payload: str) -> None:
        raise RuntimeError("a broken handler does not stop the others")

    async with _store(url, tmp_path / "a") as store_a, _store(url, tmp_path / "b") as store_b:
        a, b = PostgresNotifier(url, store_a), PostgresNotifier(url, store_b)
        a.listen("exporter_test", inbox.handler("a"))
        b.listen("exporter_test", failing)
        b.listen("exporter_test", inbox.handler("b"))
        async with a.running(), b.running():
            await a.synced()
            await b.synced()
            for n in range(5):
                await a.notify("exporter_test", str(n))
            items = await inbox.wait_for(10)
            assert [p for name, p in items if name == "a"] == ["0", "1", "2", "3", "4"]
            assert [p for name, p in items if name == "b"] == ["0", "1", "2", "3", "4"]
            # A handler added for a new channel is listened for once synced.
            late = Inbox()
            forget = b.listen("exporter_late", late.handler("late"))
            await b.synced()
            await a.notify("exporter_late", "x")
            assert await late.wait_for(1) == [("late", "x")]
            # Forgotten: no more calls (the notification after it on another channel proves
            # the first one was not just slow).
            forget()
            await b.synced()
            await a.notify("exporter_late", "y")
            await a.notify("exporter_test", "z")
            await inbox.wait_for(12)
            assert late.items == [("late", "x")]


async def test_postgres_notifier_reconnects_after_losing_its_connection(
    pg: PostgresCluster, tmp_path: Path
) -> None:
    url = create_pg_database(pg, "notify")
    inbox = Inbox()
    async with _store(url, tmp_path) as store:
        notifier = PostgresNotifier(url, store, backoff_s=(0.05, 0.5))
        notifier.listen("exporter_test", inbox.handler("h"))
        with structlog.testing.capture_logs() as logs:
            async with notifier.running():
                await notifier.synced()
                killed = await store.fetch_all(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'exporter_notifier'"
                )
                assert killed == [(True,)]
                # A log line has no event to await: poll it, bounded by the deadline.
                await async_wait_until(
                    lambda: any(e["event"] == "notifier_reconnected" for e in logs),
                    10,
                    "the notifier to reconnect",
                    0.02,
                )
                await notifier.synced()
                await notifier.notify("exporter_test", "after")
                assert await inbox.wait_for(1) == [("h", "after")]
    assert url.rsplit("@", 1)[0] not in repr(logs)  # the URL (with its password) is never logged


async def test_postgres_notifier_refuses_to_start_without_its_database(
    pg: PostgresCluster, tmp_path: Path
) -> None:
    url = create_pg_database(pg, "notify")
    async with _store(url, tmp_path) as store:
        notifier = PostgresNotifier(f"postgresql://127.0.0.1:{free_port()}/x", store, timeout_s=2)
        with pytest.raises(OSError, match="Connect call failed"):
            async with notifier.running():
                pass


# --- two instances, one state store ------------------------------------------------------------


@asynccontextmanager
async def _hub(base: str, token: str) -> AsyncIterator[AsyncIterator[str]]:
    """A raw SignalR WebSocket connection (JSON protocol) after its handshake."""
    async with httpx.AsyncClient(base_url=base) as http:
        negotiated = await http.post(
            "/hubs/runs/negotiate?negotiateVersion=1",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert negotiated.status_code == 200, negotiated.text
    conn_token = negotiated.json()["connectionToken"]
    ws_url = base.replace("http", "ws") + f"/hubs/runs?id={conn_token}&access_token={token}"
    async with connect(ws_url) as ws:
        await ws.send(json.dumps({"protocol": "json", "version": 1}) + RS)
        assert (await ws.recv()) == "{}" + RS

        async def messages() -> AsyncIterator[str]:
            async for frame in ws:
                for message in str(frame).split(RS):
                    if message:
                        yield message

        yield messages()


async def _wait_closed(messages: AsyncIterator[str]) -> dict[str, object]:
    async for message in messages:
        decoded: dict[str, object] = json.loads(message)
        if decoded.get("type") == 7:
            return decoded
    raise AssertionError("the connection ended without a Close message")


async def test_logout_on_one_instance_closes_hub_connections_on_another(
    pg: PostgresCluster, tmp_path: Path, settings: Settings
) -> None:
    state_url = create_pg_database(pg, "state_sessions")
    # No grace for a refresh token presented again: its reuse below is a theft at once.
    config_path = demo_config_with(tmp_path, "refresh_reuse_grace_s = 0")
    async with (
        live_service(config_path, settings.data_dir, "db-test", state_url=state_url) as instance_a,
        live_service(config_path, settings.data_dir, "db-test", state_url=state_url) as instance_b,
    ):
        a, b = instance_a.base, instance_b.base
        async with httpx.AsyncClient(base_url=a) as on_a:
            login = await on_a.post("/api/auth/login", json=DEMO_LOGIN)
            token = login.json()["accessToken"]
            async with _hub(b, token) as messages:
                started = time.monotonic()
                assert (await on_a.post("/api/auth/logout")).status_code == 204
                with anyio.fail_after(1):
                    closed = await _wait_closed(messages)
                took = time.monotonic() - started
            assert closed.get("allowReconnect") in (None, False)
            assert "session has ended" in str(closed.get("error"))
            assert took < 1
        # Refresh-token reuse presented to B revokes the session: A closes its connection.
        async with httpx.AsyncClient(base_url=a) as on_a, httpx.AsyncClient(base_url=b) as on_b:
            login = await on_a.post("/api/auth/login", json=DEMO_LOGIN)
            token = login.json()["accessToken"]
            stolen = login.cookies["exporter_refresh"]
            assert (await on_a.post("/api/auth/refresh", headers=SAME_ORIGIN)).status_code == 200
            async with _hub(a, token) as messages:
                on_b.cookies.set("exporter_refresh", stolen, path="/api/auth")
                reused = await on_b.post("/api/auth/refresh", headers=SAME_ORIGIN)
                assert reused.status_code == 401
                with anyio.fail_after(1):
                    await _wait_closed(messages)
