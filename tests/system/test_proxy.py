"""Three instances behind HAProxy: sticky hub connections, events and files from any instance."""

from __future__ import annotations

import pytest

from tests.system.checks import check_files, check_progress_order, other_than
from tests.system.client import HubClients, get_run, login, start_run, wait_final
from tests.system.harness import System

pytestmark = pytest.mark.system


TRANSPORTS = ("WebSockets", "WebSockets", "ServerSentEvents", "LongPolling")


def test_official_client_keeps_the_sticky_cookie(system: System, hub_clients: HubClients) -> None:
    """Every request of a client reaches one server, with no help from the test: the Node
    client's cookie jar carries HAProxy's SRV cookie to the WebSocket upgrade, the SSE stream,
    every long poll and every message sent. Round robin spreads the clients, so without the
    cookie their requests would scatter."""
    session = login(system.haproxy.url, "sys_user1")
    clients = [
        hub_clients.start(f"sticky{n}", session, transport=transport)
        for n, transport in enumerate(TRANSPORTS)
    ]
    run_id = start_run(system.instances[0].url, session, "g-events")
    for client in clients:
        assert client.subscribe(run_id)["runId"] == run_id
        client.stop()
    servers = set()
    for client, transport in zip(clients, TRANSPORTS, strict=True):
        assert not client.of_type("reconnecting"), client.describe()
        requests = system.haproxy.requests(client.name)
        assert len({r.server for r in requests}) == 1, requests
        servers |= {r.server for r in requests}
        negotiates = [r for r in requests if "/negotiate" in r.path]
        assert len(negotiates) == 1, requests
        if transport == "WebSockets":
            assert any(r.status == 101 for r in requests), requests  # upgraded through HAProxy
        else:
            assert any(r.method == "POST" and "?id=" in r.path for r in requests), requests
        if transport == "LongPolling":
            polls = [r for r in requests if r.method == "GET" and "?id=" in r.path]
            assert len(polls) >= 2, requests
    assert len(servers) >= 2, servers


def test_events_of_a_run_driven_by_another_instance(
    system: System, hub_clients: HubClients
) -> None:
    session = login(system.haproxy.url, "sys_user2")
    rest = system.instances[0]
    run_id = start_run(rest.url, session, "g-events")
    driver = system.wait_driver(session.user)
    pinned = other_than(system.instances, driver, rest)
    client = hub_clients.start("watcher", session, pin=pinned.name)
    state = client.subscribe(run_id)
    assert state["runId"] == run_id
    final = client.final_status(run_id, 30)
    client.stop()
    assert final == "Success"
    events = client.events(run_id)
    names = {e["name"] for e in events}
    assert {"script.updated", "script.progress", "group.updated", "run.updated"} <= names, names
    check_progress_order(events)
    # Every request of the client went to the pinned instance: the events crossed Redis.
    assert {r.server for r in system.haproxy.requests("watcher")} == {pinned.name}
    assert pinned is not driver
    assert get_run(pinned.url, session, run_id)["status"] == "Success"


def test_files_download_through_other_instances(system: System) -> None:
    session = login(system.instances[0].url, "sys_user3")
    run_id = start_run(system.instances[0].url, session, "g-events")
    writer = system.wait_driver(session.user)
    assert wait_final(writer.url, session, run_id, 60)["status"] == "Success"
    for other in system.instances:
        if other is not writer:
            check_files(other.url, session, run_id, "g-events", zip_too=True)
    # And through HAProxy, wherever it sends each request.
    check_files(system.haproxy.url, session, run_id, "g-events", zip_too=True)
