"""``exporter-api serve --workers 2``: two processes on one port, as SignalR clients see it.

The kernel hands each TCP connection to either worker, so a negotiate answered by one is often
followed by a WebSocket connect that reaches the other: it adopts the connection from its
self-verifying token. Only WebSockets are offered (SSE and Long Polling need every request of a
connection on one process).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.system.checks import check_progress_order
from tests.system.client import FINAL, HubClients, login, start_run
from tests.system.harness import System

pytestmark = pytest.mark.system

CLIENTS = 6
ROUNDS = 2


def is_final_update(run_id: str) -> Callable[[dict[str, Any]], bool]:
    def check(line: dict[str, Any]) -> bool:
        return (
            line["type"] == "event"
            and line["name"] == "run.updated"
            and line["payload"]["runId"] == run_id
            and line["payload"]["status"] in FINAL
        )

    return check


def test_hub_clients_of_an_instance_with_two_workers(system: System, tmp_path: Path) -> None:
    instance = system.new_instance("w2", args=("--workers", "2"))
    instance.start()
    instance.wait_ready()
    hub = instance.url + "/hubs/runs"
    session = login(instance.url, "sys_user12")

    negotiated = httpx.post(
        f"{hub}/negotiate?negotiateVersion=1", headers=session.headers, timeout=10
    )
    assert negotiated.status_code == 200, negotiated.text
    body = negotiated.json()
    assert [t["transport"] for t in body["availableTransports"]] == ["WebSockets"]
    sse = httpx.get(
        hub,
        params={"id": body["connectionToken"]},
        headers={**session.headers, "accept": "text/event-stream"},
        timeout=10,
    )
    assert sse.status_code == 404, sse.text

    for round_ in range(ROUNDS):
        clients = HubClients(tmp_path, hub)
        try:
            # Every client negotiates and connects on its own TCP connections: with two workers
            # a good share of them connect on the worker that did not negotiate.
            started = [
                clients.start(f"w{round_}-client{n}", session, transport="WebSockets")
                for n in range(CLIENTS)
            ]
            run_id = start_run(instance.url, session, "g-events")
            for client in started:
                assert client.subscribe(run_id)["runId"] == run_id
            for client in started:
                final = client.wait_for(is_final_update(run_id), 60)
                assert final["payload"]["status"] == "Success", client.describe()
                events = client.events(run_id)
                assert any(e["name"] == "script.progress" for e in events), client.describe()
                check_progress_order(events)
                assert not client.of_type("reconnecting"), client.describe()
        finally:
            clients.stop_all()
