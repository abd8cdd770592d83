"""9.5: a cancel through one instance stops the query of a run another instance drives in under
a second -- two app instances on one PostgreSQL state store, signalled through LISTEN/NOTIFY
(their heartbeats, 2 s apart by default, could not make it in time)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.exporter_api.conftest import create_pg_database
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD, ExportDatabase, poll_until
from tests.exporter_api.runs.live import bearer, live_service
from tests.exporter_api.runs.test_engine import has_active_query, no_active_query
from tests.services import PostgresCluster

SLOW = {
    "mode": "SingleScript",
    "selection": {"groups": [{"groupId": "g-slow", "scripts": [{"scriptId": "s-slow"}]}]},
}


async def test_cancel_through_another_instance_stops_the_query_within_a_second(
    catalog_path: Path, tmp_path: Path, export_db: ExportDatabase, pg: PostgresCluster
) -> None:
    url = create_pg_database(pg, "cancel_across")
    data = tmp_path / "data"
    async with (
        live_service(catalog_path, data, state_url=url) as a,
        live_service(catalog_path, data, state_url=url) as b,
    ):
        auth = bearer(await a.login(USER1, USER1_PASSWORD))
        run_id = (await a.http.post("/api/runs", json=SLOW, headers=auth)).json()["runId"]
        assert a.app.state.runs.engine.is_active(run_id)  # A drives it
        await poll_until(lambda: has_active_query(export_db))
        asked = time.monotonic()
        response = await b.http.post(f"/api/runs/{run_id}/cancel", headers=auth)
        answered = time.monotonic() - asked
        await poll_until(lambda: no_active_query(export_db), limit_s=max(0.05, 1.0 - answered))
        stopped = time.monotonic() - asked
    assert response.status_code == 202
    assert response.json()["status"] == "Cancelled"  # the state after the cancel took effect
    assert stopped < 1.0
