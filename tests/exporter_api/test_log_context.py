"""Every log line about a run or a hub connection names it (run_id / connection_id), the login
and the client address: bound once (structlog contextvars) where a request, a hub connection and
a run begin, not passed by each caller."""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from typing import Any

import anyio
import pytest
import structlog
from websockets.asyncio.client import connect

from exporter_api.config import Settings
from signalr_core import set_logger_factory
from tests.exporter_api.runs.live import bearer, live_service

RS = "\x1e"
SALES = {
    "mode": "SingleGroup",
    "selection": {"groups": [{"groupId": "g-sales", "scripts": [{"scriptId": "s-orders"}]}]},
}
BIG = {
    "mode": "SingleGroup",
    "selection": {"groups": [{"groupId": "g-big", "scripts": [{"scriptId": "s-ledger"}]}]},
}
FINAL = {"Success", "NoData", "Failed", "Cancelled"}


async def _subscribe_over_websockets(base: str, token: str, run_id: str) -> None:
    """A hub connection of the JSON protocol that subscribes to ``run_id`` and leaves."""
    async with connect(f"ws{base[4:]}/hubs/runs?access_token={token}") as ws:
        await ws.send(json.dumps({"protocol": "json", "version": 1}) + RS)
        assert await ws.recv() == "{}" + RS
        call = {"type": 1, "invocationId": "1", "target": "SubscribeRun", "arguments": [run_id]}
        await ws.send(json.dumps(call) + RS)
        with anyio.fail_after(10):
            while True:
                frame = await ws.recv()
                assert isinstance(frame, str)
                messages = [json.loads(part) for part in frame.split(RS)[:-1]]
                if any(m.get("type") == 3 and m.get("invocationId") == "1" for m in messages):
                    break


def _without(entries: list[MutableMapping[str, Any]], *keys: str) -> list[MutableMapping[str, Any]]:
    return [e for e in entries if any(e.get(k) is None for k in keys)]


@pytest.fixture
def hub_logs_through_structlog() -> Iterator[None]:
    """As `exporter_api.logging.configure_logging` does when the service starts."""
    set_logger_factory(structlog.get_logger)
    try:
        yield
    finally:
        set_logger_factory(None)


@pytest.mark.usefixtures("hub_logs_through_structlog")
async def test_run_and_hub_lines_name_the_run_connection_login_and_client(
    settings: Settings,
) -> None:
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with live_service(settings.config_path, settings.data_dir, "db-test") as service:
            token = await service.login("USER1", "demo")
            auth = bearer(token)
            # The big run keeps this instance busy: the next one is queued, then claimed here by
            # the engine's claim loop, away from the request that started it.
            big = (await service.http.post("/api/runs", json=BIG, headers=auth)).json()["runId"]
            created = await service.http.post("/api/runs", json=SALES, headers=auth)
            assert created.status_code == 201, created.text
            run_id = created.json()["runId"]
            await _subscribe_over_websockets(service.base, token, run_id)
            with anyio.fail_after(30):
                while True:
                    state = (await service.http.get(f"/api/runs/{run_id}", headers=auth)).json()
                    if state["status"] in FINAL:
                        break
                    await anyio.sleep(0.05)
            # a signed link: no Bearer token, the login comes from the link's session
            download = await service.http.get(state["files"][0]["downloadUrl"])
            assert download.status_code == 200
            cancel = await service.http.post(f"/api/runs/{big}/cancel", headers=auth)
            assert cancel.status_code == 202
    assert any(e["event"] == "run_claimed" and e["run_id"] == run_id for e in logs)
    run_lines = [e for e in logs if e.get("run_id") in (run_id, big)]
    assert {"run_queued", "run_finished", "download_finished"} <= {e["event"] for e in run_lines}
    assert {"run_cancel_requested", "run_finished"} <= {
        e["event"] for e in run_lines if e["run_id"] == big
    }
    assert _without(run_lines, "login", "client_ip") == []
    assert {e["login"] for e in run_lines} == {"USER1"}
    assert {e["client_ip"] for e in run_lines} == {"127.0.0.1"}
    hub_lines = [e for e in logs if e.get("connection_id")]
    assert len({e["connection_id"] for e in hub_lines}) == 1
    assert len(hub_lines) >= 2  # at least connected and disconnected
    assert _without(hub_lines, "login", "client_ip") == []
    assert {e["login"] for e in hub_lines} == {"USER1"}
    # Nothing outlives its request or run: the server's own lines name no user.
    (stopping,) = [e for e in logs if e["event"] == "service_stopping"]
    assert "login" not in stopping
    assert "run_id" not in stopping
