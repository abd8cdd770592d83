"""The hub backplane (issue 9.1): two instances on one state store and one Redis; a client whose
hub connection is on instance B sees every event, in order, of a run instance A drives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.exporter_api.conftest import create_pg_database
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD, ExportDatabase, write_catalog
from tests.exporter_api.runs.live import events, hub_watch, live_service, wait_for_type
from tests.services import PostgresCluster, RedisServer

pytestmark = pytest.mark.compat  # drives the official client from Node

ORDERS = {
    "mode": "SingleScript",
    "selection": {"groups": [{"groupId": "g-sales", "scripts": [{"scriptId": "s-orders"}]}]},
}


async def test_a_client_on_another_instance_sees_every_event_in_order(
    tmp_path: Path, export_db: ExportDatabase, pg: PostgresCluster, redis: RedisServer
) -> None:
    # One connection for the export database, leased (as by a live instance) until the client
    # has subscribed: the watched run cannot start (and send its first events) before that.
    catalog_path = write_catalog(tmp_path / "cat", export_db, max_connections=1)
    url = create_pg_database(pg, "backplane")
    data = tmp_path / "data"  # shared by both: key files and exported files
    async with (
        live_service(catalog_path, data, state_url=url, redis_url=redis.url) as a,
        live_service(catalog_path, data, state_url=url, redis_url=redis.url) as b,
    ):
        store = a.app.state.services.store
        await a.hold_slots()
        token = await a.login(USER1, USER1_PASSWORD)
        # connected to B; the run is started through A (idle: it drives the run itself) once
        # the connection is open
        async with hub_watch(b, token, create=ORDERS, api=a) as lines:
            await wait_for_type(lines, "state")
            await a.free_slots()
        run_id = lines[0]["runId"]
        driver = await store.fetch_one(
            "SELECT instance_id FROM runs WHERE run_id = :r", {"r": run_id}
        )
        engine_a = a.app.state.runs.engine.instance_id
    assert lines[0]["type"] == "created", lines
    assert driver == (engine_a,)  # A drove it; B only relayed its events
    orders = events(lines, "script.updated", scriptId="s-orders")
    assert [e["message"] for e in orders] == [
        "Executing variant 1/3",
        "Executing variant 2/3",
        "Executing variant 3/3",
        "Success",
    ]
    assert [e["status"] for e in events(lines, "run.updated")] == ["Running", "Success"]
    assert events(lines, "script.progress", scriptId="s-orders")
    assert lines[-1]["type"] == "done"
