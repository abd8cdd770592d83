"""The whole service on a real port (hypercorn, in the test's event loop), a REST client and the
official SignalR client (Node) watching a run."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from exporter_api.app import create_app
from exporter_api.config import Settings, load_config
from exporter_api.runs import build_runs
from exporter_api.runs.models import utc_now
from tests.services import free_port

HUB_WATCH = Path(__file__).with_name("hub_watch.mjs")
ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Service:
    base: str
    http: httpx.AsyncClient

    async def login(self, username: str, password: str, stream_id: str = "s1") -> str:
        response = await self.http.post(
            "/api/auth/login",
            json={
                "dbUsername": username,
                "dbPassword": password,
                "databaseId": self.database_id,
                "managerId": "m1",
                "streamId": stream_id,
            },
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["accessToken"]
        return token

    database_id: str = "db-pg"
    app: Any = None  # the Starlette app being served (its state holds the services)

    async def hold_slots(self) -> None:
        """Every connection slot of the database looks held by a live instance: runs wait in
        the queue (their scripts start nothing) until ``free_slots``."""
        await self.app.state.services.store.execute(
            "UPDATE run_slots SET instance_id = 'blocker', holder = 'blocker',"
            " heartbeat_at = :now WHERE database_id = :db",
            {"now": utc_now(), "db": self.database_id},
        )

    async def free_slots(self) -> None:
        await self.app.state.services.store.execute(
            "UPDATE run_slots SET instance_id = '', holder = '' WHERE holder = 'blocker'"
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def live_service(
    config_path: Path,
    data_dir: Path,
    database_id: str = "db-pg",
    *,
    state_url: str | None = None,
    redis_url: str | None = None,
) -> AsyncIterator[Service]:
    """The app served by hypercorn; several share one state store (``state_url``) and, with
    ``redis_url``, one hub backplane."""
    port = free_port()
    # A shared state store generates no keys: instances sharing one are given the same.
    settings = Settings(
        config_path=config_path,
        data_dir=data_dir,
        port=port,
        state_url=state_url,
        jwt_key=b"j" * 32 if state_url else None,
        vault_key=b"v" * 32 if state_url else None,
    )
    runs = build_runs(load_config(config_path), redis_url=redis_url) if redis_url else None
    app = create_app(settings, runs=runs)
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_serve, app, config, stop)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            with anyio.fail_after(20):
                while True:
                    try:
                        await http.get("/api/catalog/databases")
                        break
                    except httpx.TransportError:
                        await anyio.sleep(0.05)
            try:
                yield Service(base, http, database_id, app)
            finally:
                stop.set()


async def _serve(app: Any, config: HypercornConfig, stop: anyio.Event) -> None:
    await serve(app, config, shutdown_trigger=stop.wait)


@asynccontextmanager
async def hub_watch(
    service: Service,
    token: str,
    run_id: str | None = None,
    *,
    create: dict[str, Any] | None = None,
    protocol: str = "json",
    transport: str = "WebSockets",
    api: Service | None = None,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Run hub_watch.mjs (watching ``run_id``, or starting the run ``create`` once connected,
    through ``api`` when given: another instance than the hub's); the yielded list fills with
    its JSON lines until it is done."""
    command = _command(service, token, protocol, transport)
    if run_id is not None:
        command += ["--run", run_id]
    if create is not None:
        command += ["--create", json.dumps(create), "--api", (api or service).base]
    async with _node(command) as (lines, _):
        yield lines


@asynccontextmanager
async def held_hub_watch(
    service: Service, token: str, run_id: str
) -> AsyncIterator[tuple[list[dict[str, Any]], Callable[[str], Awaitable[None]]]]:
    """hub_watch.mjs staying connected: ``await tell("again")`` calls SubscribeRun once more on
    the same connection; the block's end tells it to stop."""
    command = [*_command(service, token, "json", "WebSockets"), "--run", run_id, "--hold", "1"]
    async with _node(command, stdin=True) as (lines, process):
        assert process.stdin is not None
        stdin = process.stdin

        async def tell(text: str) -> None:
            await stdin.send(text.encode() + b"\n")

        try:
            yield lines, tell
        finally:
            # The process is gone already when the server closed its connection.
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await tell("stop")


def _command(service: Service, token: str, protocol: str, transport: str) -> list[str]:
    return [
        *("node", str(HUB_WATCH), "--hub", f"{service.base}/hubs/runs", "--token", token),
        *("--protocol", protocol, "--transport", transport, "--timeout", "30000"),
    ]


@asynccontextmanager
async def _node(
    command: list[str], *, stdin: bool = False
) -> AsyncIterator[tuple[list[dict[str, Any]], anyio.abc.Process]]:
    lines: list[dict[str, Any]] = []
    async with await anyio.open_process(
        command, cwd=ROOT, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL
    ) as process:

        async def read() -> None:
            assert process.stdout is not None
            buffer = b""
            async for chunk in process.stdout:
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    lines.append(json.loads(line))

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            yield lines, process
            with anyio.fail_after(40):
                await process.wait()


async def wait_for_line(lines: list[dict[str, Any]], count: int) -> None:
    """Until ``lines`` holds at least ``count`` lines (10 s at most)."""
    with anyio.fail_after(10):
        while len(lines) < count:  # noqa: ASYNC110 - filled by another task from a pipe
            await anyio.sleep(0.02)


async def wait_for_type(lines: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The first line of type ``kind`` (run events may arrive before it); no time limit."""
    while True:
        for line in lines:
            if line["type"] == kind:
                return line
        await anyio.sleep(0.02)


def events(lines: list[dict[str, Any]], name: str, **match: object) -> list[dict[str, Any]]:
    return [
        line["payload"]
        for line in lines
        if line["type"] == "event"
        and line["name"] == name
        and all(line["payload"].get(k) == v for k, v in match.items())
    ]
