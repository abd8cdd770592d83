"""Fixtures of the system tests: one system (PostgreSQL, Redis, HAProxy, three instances) for
the session, restored before each test; every log is attached to a failing test's report."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.services import PostgresCluster
from tests.system.catalog import create_export_database
from tests.system.client import HubClients
from tests.system.harness import System, start_system, stop_system


@pytest.fixture(scope="session")
def system_session(
    pg: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    create_export_database(pg)
    system = start_system(tmp_path_factory.mktemp("system"), pg)
    try:
        yield system
    finally:
        stop_system(system)


@pytest.fixture
def system(system_session: System, request: pytest.FixtureRequest) -> System:
    """The system with all three instances up (restarted when a test left one down)."""
    system_session.restore()
    request.node.system_log_offsets = system_session.log_offsets()
    return system_session


@pytest.fixture
def hub_clients(system: System, tmp_path: Path) -> Iterator[HubClients]:
    """Official SignalR clients through HAProxy, stopped at the end of the test."""
    clients = HubClients(tmp_path, system.haproxy.url + "/hubs/runs")
    try:
        yield clients
    finally:
        clients.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in {"call", "teardown"}:
        system = getattr(item, "funcargs", {}).get("system")
        if isinstance(system, System):
            offsets = getattr(item, "system_log_offsets", None)
            report.sections.append(("system logs", system.logs(offsets)))
    return report
