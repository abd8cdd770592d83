"""Instances die, restart one after another, or join mid-export: runs still end Success with
every file whole, and hub clients see the run go on."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.services import wait_until
from tests.system.catalog import GATE_LOCK, HEAD_ROWS
from tests.system.checks import check_files, check_only_reconnects, other_than
from tests.system.client import (
    HubClients,
    Session,
    get_run,
    list_files,
    login,
    start_run,
    wait_final,
)
from tests.system.harness import Instance, System

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

TAKEOVER_LIMIT_S = 15.0


def _ledger_variant(state: dict[str, Any]) -> dict[str, Any]:
    variant: dict[str, Any] = state["groups"][0]["scripts"][0]["variants"][1]
    return variant


def _wait_ledger_under_way(base: str, session: Session, run_id: str) -> None:
    """Variant 1 (the head) is done and variant 2 (2,000,000 rows) is writing rows."""

    def under_way() -> bool:
        state = get_run(base, session, run_id)
        assert state["status"] in {"Queued", "Running"}, state["status"]
        rows: int = _ledger_variant(state)["rowsExported"]
        return rows > 0

    wait_until(under_way, 60, "the ledger variant to write rows", 0.1)


def _wait_at_gate(system: System, user: str) -> None:
    """The gated ledger's query of ``user`` waits for the test's advisory lock (it has sent
    the rows before the gate)."""
    sql = (
        "SELECT 1 FROM pg_stat_activity WHERE usename = $1"
        " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
    )
    wait_until(lambda: bool(system.monitor.fetch(sql, user)), 60, "the export at the gate", 0.1)


def _stable(file: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in file.items() if k != "downloadUrl"}


def _file_dir_names(system: System, run_id: str) -> list[str]:
    directory = system.files_dir / run_id
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_kill_of_the_driving_instance_is_taken_over(
    system: System, hub_clients: HubClients
) -> None:
    session = login(system.haproxy.url, "sys_user4")
    run_id = start_run(system.instances[0].url, session, "g-big")
    driver = system.wait_driver(session.user)
    survivor = other_than(system.instances, driver)
    pinned = hub_clients.start("pinned", session, pin=survivor.name)
    roaming = hub_clients.start("roaming", session)
    pinned.subscribe(run_id)
    roaming.subscribe(run_id)
    _wait_ledger_under_way(survivor.url, session, run_id)
    head = list_files(survivor.url, session, run_id)["files"]
    assert [f["variant"] for f in head] == [1], head
    # The ledger's query runs where the head's did: one instance drives the whole run.
    assert system.wait_driver(session.user) is driver

    killed_at = time.time()
    driver.kill()
    try:
        new_driver = system.wait_driver(session.user, timeout=TAKEOVER_LIMIT_S + 5)
    except AssertionError:
        state = get_run(survivor.url, session, run_id)
        raise AssertionError(
            f"no instance took the run over; it is {state['status']}: {state['error']}"
        ) from None
    takeover_s = time.time() - killed_at
    assert new_driver is not driver
    assert takeover_s < TAKEOVER_LIMIT_S, f"takeover took {takeover_s:.1f}s"

    final = wait_final(survivor.url, session, run_id, 120)
    assert final["status"] == "Success", final
    files = check_files(survivor.url, session, run_id, "g-big")
    # The head finished before the kill: its file is the same one, not exported again (the
    # signed link differs: it is signed anew for each listing).
    assert [_stable(f) for f in files if f["variant"] == 1] == [_stable(f) for f in head]
    # The dead instance's partial file is gone; only the listed files remain.
    wait_until(
        lambda: _file_dir_names(system, run_id) == sorted(f["name"] for f in files),
        10,
        "only the run's listed files in its directory",
    )

    pinned.wait_run_final(run_id, 10)
    roaming.wait_run_final(run_id, 10)
    pinned.stop()
    roaming.stop()
    # The pinned client's instance never went away: the events simply continued.
    assert not pinned.of_type("reconnecting"), pinned.describe()
    after_kill = [e for e in pinned.events(run_id) if e["ts"] > killed_at]
    assert {"script.updated", "script.progress", "run.updated"} <= {e["name"] for e in after_kill}
    # The roaming client reconnected when its instance was the dead one, and never gave up.
    assert not roaming.of_type("closed"), roaming.describe()
    on_dead = driver.name in {r.server for r in system.haproxy.requests("roaming")}
    assert len(roaming.of_type("reconnected")) == (1 if on_dead else 0), roaming.describe()
    print(f"takeover after SIGKILL: {takeover_s:.2f}s")


def test_rolling_restart_during_a_two_million_row_export(
    system: System, hub_clients: HubClients
) -> None:
    session = login(system.haproxy.url, "sys_user5")
    # The export stops at row GATE_ROW until the gate opens: every restart below happens
    # during it, on a fast machine as on a loaded one.
    system.monitor.fetch("SELECT pg_advisory_lock($1)", GATE_LOCK)
    try:
        run_id = start_run(system.haproxy.url, session, "g-gated")
        client = hub_clients.start("rolling", session)
        client.subscribe(run_id)
        _wait_at_gate(system, session.user)

        timings = []
        first_sigterm = time.time()
        for instance in system.instances:
            assert get_run(system.haproxy.url, session, run_id)["status"] in {"Queued", "Running"}
            drained_s = instance.terminate(timeout=60)
            instance.start()
            instance.wait_ready()
            system.haproxy.wait_up([instance.name])
            timings.append(drained_s)
        assert get_run(system.haproxy.url, session, run_id)["status"] in {"Queued", "Running"}
    finally:
        system.monitor.fetch("SELECT pg_advisory_unlock($1)", GATE_LOCK)

    final = wait_final(system.haproxy.url, session, run_id, 180)
    assert final["status"] == "Success", final
    check_files(system.haproxy.url, session, run_id, "g-gated")
    client.wait_run_final(run_id, 10)
    client.stop()
    # Only reconnects: the client was on one of the three, each told it to come back.
    check_only_reconnects(client, run_id)
    # And the export's progress kept coming to it through the restarts.
    later = {e["name"] for e in client.events(run_id) if e["ts"] > first_sigterm}
    assert {"script.progress", "run.updated"} <= later, later
    print(f"SIGTERM to exit: {', '.join(f'{t:.2f}s' for t in timings)}")


def test_an_instance_joining_never_breaks_running_exports(system: System) -> None:
    session = login(system.haproxy.url, "sys_user6")
    run_id = start_run(system.instances[0].url, session, "g-big")
    _wait_ledger_under_way(system.instances[0].url, session, run_id)
    joining: Instance = system.new_instance("i4")
    joining.start()
    joining.wait_ready()
    assert get_run(joining.url, session, run_id)["status"] == "Running"
    final = wait_final(joining.url, session, run_id, 120)
    assert final["status"] == "Success", final
    # The newcomer serves the files written by another instance on the shared volume.
    files = check_files(joining.url, session, run_id, "g-big", zip_too=True)
    assert sum(f["rows"] for f in files) == HEAD_ROWS + 2_000_000


def test_redis_loss_takes_instances_out_of_the_balancer_and_runs_go_on(system: System) -> None:
    """Without Redis no instance is ready (HAProxy has no server left), yet exports under way
    finish; when Redis returns, every instance is ready again."""
    base = system.instances[0].url
    session = login(base, "sys_user11")
    run_id = start_run(base, session, "g-big")
    _wait_ledger_under_way(base, session, run_id)
    system.redis.stop()
    try:
        wait_until(
            lambda: not any(i.ready() for i in system.instances),
            15,
            "every instance to answer /readyz with 503 without Redis",
        )
    finally:
        system.redis.start()
    for instance in system.instances:
        instance.wait_ready()
    final = wait_final(base, session, run_id, 120)
    assert final["status"] == "Success", final
    check_files(base, session, run_id, "g-big")
