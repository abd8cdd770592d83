"""Signals between instances: cancel and logout take effect on another instance in under a
second; the per-user run limit holds exactly when the POSTs are spread over instances."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.services import wait_until
from tests.system.checks import other_than
from tests.system.client import (
    HubClients,
    Session,
    cancel,
    login,
    post_run,
    start_run,
    wait_final,
)
from tests.system.harness import System

pytestmark = pytest.mark.system

SIGNAL_LIMIT_S = 1.0


def test_cancel_through_another_instance_stops_the_query(system: System) -> None:
    session = login(system.haproxy.url, "sys_user7")
    run_id = start_run(system.instances[0].url, session, "g-slow")
    driver = system.wait_driver(session.user)
    [(backend, _)] = system.monitor.active_queries(session.user)
    other = other_than(system.instances, driver)

    # The POST may wait for the run to settle before it answers: the database is watched
    # meanwhile, from just before the request.
    responses: list[httpx.Response] = []
    sent = time.monotonic()
    thread = threading.Thread(target=lambda: responses.append(cancel(other.url, session, run_id)))
    thread.start()
    try:
        wait_until(
            lambda: backend not in {pid for pid, _ in system.monitor.active_queries(session.user)},
            10,
            "the export query to stop",
            0.005,
        )
        stopped_s = time.monotonic() - sent
    finally:
        thread.join(30)
    assert responses, "the cancel request did not answer"
    assert responses[0].status_code == 202, responses[0].text
    assert stopped_s < SIGNAL_LIMIT_S, f"the query ran {stopped_s:.3f}s after the cancel"
    assert wait_final(other.url, session, run_id, 20)["status"] == "Cancelled"
    print(f"cancel across instances: query stopped after {stopped_s * 1000:.0f} ms")


def test_logout_through_another_instance_closes_the_hub_connection(
    system: System, hub_clients: HubClients
) -> None:
    x, y = system.instances[0], system.instances[1]
    leaving = login(x.url, "sys_user8")
    staying = login(x.url, "sys_user8")  # another session of the same user
    closed_client = hub_clients.start("leaving", leaving, pin=x.name)
    open_client = hub_clients.start("staying", staying, pin=x.name)

    sent = time.time()
    response = httpx.post(f"{y.url}/api/auth/logout", headers=leaving.headers, timeout=30)
    assert response.status_code == 204, response.text
    closed = closed_client.wait_for(lambda line: line["type"] == "closed", 10)
    closed_s = closed["ts"] - sent
    # Closed with an error, and for good: no reconnect was even tried.
    assert closed["message"], closed
    assert not closed_client.of_type("reconnecting"), closed_client.describe()
    assert closed_s < SIGNAL_LIMIT_S, f"the hub connection closed {closed_s:.3f}s after logout"

    # The user's other session is untouched: its connection still works.
    run_id = start_run(x.url, staying, "g-events")
    assert open_client.subscribe(run_id)["runId"] == run_id
    open_client.wait_run_final(run_id, 60)
    open_client.stop()
    assert not open_client.of_type("closed"), open_client.describe()
    assert not open_client.of_type("reconnecting"), open_client.describe()
    print(f"logout across instances: hub connection closed after {closed_s * 1000:.0f} ms")


def test_per_user_run_limit_is_exact_across_instances(system: System) -> None:
    session = login(system.haproxy.url, "sys_user9")
    limit = 2  # [server] max_active_runs_per_user in the generated catalog
    posts = 9
    barrier = threading.Barrier(posts)

    def post(index: int) -> httpx.Response:
        base = system.instances[index % len(system.instances)].url
        barrier.wait(10)
        return post_run(base, session, "g-slow")

    with ThreadPoolExecutor(posts) as pool:
        responses = list(pool.map(post, range(posts)))
    statuses = sorted(r.status_code for r in responses)
    created = [r.json()["runId"] for r in responses if r.status_code == 201]
    try:
        assert statuses == [201] * limit + [429] * (posts - limit), statuses
        listed = httpx.get(
            f"{system.haproxy.url}/api/runs", headers=session.headers, timeout=30
        ).json()["items"]
        active = [r["runId"] for r in listed if r["status"] in {"Queued", "Running"}]
        assert sorted(active) == sorted(created)
    finally:
        _cancel_all(system, session, created)


def _cancel_all(system: System, session: Session, run_ids: list[str]) -> None:
    for run_id in run_ids:
        cancel(system.haproxy.url, session, run_id)
    for run_id in run_ids:
        wait_final(system.haproxy.url, session, run_id, 20)
