"""Load: many hub connections watching many concurrent runs, bounded in time, on a real process.

`exporter-api serve` runs the demo catalog on a free port. Two users keep ``RUNNERS`` runs going
at once (each runner starts `g-sales`, waits for its end, starts the next) for ``DURATION_S``
seconds while ``CONNECTIONS`` WebSocket hub connections (the SignalR JSON protocol, written by
hand on the `websockets` client) subscribe to those runs and must each see every run they
subscribed to end. Errors of any kind are counted and must be zero; the server's resident memory
after the load must stay within a bound of what it was after a warm-up round. The figures are
printed (``-s``) and recorded in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.bodies import group, login_body, run_body, script
from tests.procstat import rss_bytes
from tests.services import demo_config, exporter_serve

RS = "\x1e"
CONNECTIONS = 200
RUNNERS = 10
DURATION_S = 21.0
# Resident memory is read after the warm-up and after each of ``WINDOWS`` equal windows of the
# load. The allocator's high-water mark rises in steps (more runs in flight at once than in the
# warm-up; a new thread arena): a step shows in one window. A leak grows in every window, so
# the smallest growth of a window after the first is what bounds it.
WINDOWS = 3
RSS_GROWTH_LIMIT_KB = 100 * 1024
RSS_WINDOW_LIMIT_KB = 15 * 1024

pytestmark = pytest.mark.timeout(240)


@dataclass
class Figures:
    runs_finished: int = 0
    events: int = 0
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    config = demo_config(
        tmp_path, {"max_active_runs_per_user = 3": f"max_active_runs_per_user = {RUNNERS}"}
    )
    with exporter_serve(
        config, tmp_path / "data", tmp_path / "server.log", args=("--log-level", "warning")
    ) as (proc, url):
        yield url.removeprefix("http://"), proc


class HubClient:
    """A SignalR JSON-protocol client on one WebSocket: invocations and run events."""

    def __init__(self, ws: ClientConnection, figures: Figures) -> None:
        self.ws = ws
        self.figures = figures
        self._next_id = 0
        self._results: dict[str, anyio.Event] = {}
        self._finished: dict[str, anyio.Event] = {}

    def watch(self, run_id: str) -> anyio.Event:
        return self._finished.setdefault(run_id, anyio.Event())

    async def subscribe(self, run_id: str) -> None:
        self._next_id += 1
        invocation = str(self._next_id)
        done = self._results[invocation] = anyio.Event()
        message = {
            "type": 1,
            "invocationId": invocation,
            "target": "SubscribeRun",
            "arguments": [run_id],
        }
        await self.ws.send(json.dumps(message) + RS)
        await done.wait()

    async def read(self) -> None:
        async for frame in self.ws:
            assert isinstance(frame, str)
            for part in frame.split(RS)[:-1]:
                self._handle(json.loads(part))

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == 3:
            if message.get("error"):
                self.figures.errors.append(f"completion error: {message['error']}")
            result = message.get("result")
            if isinstance(result, dict) and result.get("status") not in {None, "Queued", "Running"}:
                # The run ended before the subscription: its final event went out before it.
                self.watch(result["runId"]).set()
            event = self._results.pop(message["invocationId"], None)
            if event is not None:
                event.set()
        elif kind == 1:
            self.figures.events += 1
            target = message["target"]
            payload = message["arguments"][0]
            if target == "run.updated" and payload["status"] not in {"Queued", "Running"}:
                if payload["status"] != "Success":
                    self.figures.errors.append(f"run ended {payload['status']}")
                self.watch(payload["runId"]).set()
        elif kind == 7:
            self.figures.errors.append(f"close: {message.get('error')}")


@asynccontextmanager
async def hub_client(host: str, token: str, figures: Figures) -> AsyncIterator[HubClient]:
    async with connect(f"ws://{host}/hubs/runs?access_token={token}", max_size=1 << 20) as ws:
        await ws.send(json.dumps({"protocol": "json", "version": 1}) + RS)
        handshake = await ws.recv()
        assert handshake == "{}" + RS, handshake
        client = HubClient(ws, figures)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.read)
            yield client
            tg.cancel_scope.cancel()


async def _login(http: httpx.AsyncClient, user: str) -> str:
    response = await http.post("/api/auth/login", json=login_body(user, "demo", "db-test"))
    assert response.status_code == 200, response.text
    token: str = response.json()["accessToken"]
    return token


RUN_BODY = run_body(
    "SingleGroup", group("g-sales", *(script(s) for s in ("s-orders", "s-customers", "s-payments")))
)


async def test_hub_connections_and_concurrent_runs_under_load(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    host, proc = server
    figures = Figures()
    async with httpx.AsyncClient(base_url=f"http://{host}", timeout=30) as http:
        tokens = [await _login(http, "USER1"), await _login(http, "USER2")]
        async with AsyncExitStack() as stack:
            clients: list[HubClient] = []
            for i in range(CONNECTIONS):
                client = await stack.enter_async_context(hub_client(host, tokens[i % 2], figures))
                clients.append(client)

            async def one_run(runner: int) -> None:
                token = tokens[runner % 2]
                response = await http.post(
                    "/api/runs", json=RUN_BODY, headers={"Authorization": f"Bearer {token}"}
                )
                if response.status_code != 201:
                    figures.errors.append(f"POST /api/runs {response.status_code}")
                    return
                run_id = response.json()["runId"]
                # Every connection of this user with the same remainder watches the run.
                watchers = clients[runner % 2 :: 2][runner // 2 :: RUNNERS // 2]
                for watcher in watchers:
                    watcher.watch(run_id)
                    await watcher.subscribe(run_id)
                with anyio.move_on_after(60) as scope:
                    for watcher in watchers:
                        await watcher.watch(run_id).wait()
                if scope.cancelled_caught:
                    figures.errors.append(f"run {run_id}: not every watcher saw its end")
                    return
                state = await http.get(
                    f"/api/runs/{run_id}", headers={"Authorization": f"Bearer {token}"}
                )
                if state.json()["status"] != "Success":
                    figures.errors.append(f"run {run_id} stored as {state.json()['status']}")
                figures.runs_finished += 1

            async def runner(index: int, until: float) -> None:
                while time.monotonic() < until:
                    await one_run(index)

            # Warm-up: one round, then the memory baseline.
            async with anyio.create_task_group() as tg:
                for index in range(RUNNERS):
                    tg.start_soon(one_run, index)
            rss_kb = [rss_bytes(proc.pid) // 1024]
            started = time.monotonic()
            for window in range(1, WINDOWS + 1):
                async with anyio.create_task_group() as tg:
                    for index in range(RUNNERS):
                        tg.start_soon(runner, index, started + DURATION_S * window / WINDOWS)
                rss_kb.append(rss_bytes(proc.pid) // 1024)
            elapsed = time.monotonic() - started
    print(
        f"\nload: {CONNECTIONS} hub connections, {RUNNERS} concurrent runners, {elapsed:.1f} s:"
        f" {figures.runs_finished} runs, {figures.events} events delivered,"
        f" {len(figures.errors)} errors, RSS {' -> '.join(str(kb // 1024) for kb in rss_kb)} MB"
    )
    assert figures.errors == []
    assert figures.runs_finished >= 2 * RUNNERS
    assert min(rss_kb) > 0  # VmRSS was read, and the service was still there to read it from
    assert rss_kb[-1] - rss_kb[0] < RSS_GROWTH_LIMIT_KB
    later_windows = [after - before for before, after in itertools.pairwise(rss_kb[1:])]
    assert min(later_windows) < RSS_WINDOW_LIMIT_KB, f"RSS grew in every window: {later_windows}"
