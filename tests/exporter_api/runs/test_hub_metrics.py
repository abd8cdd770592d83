"""Hub metrics with the official client (Node): connections per transport go up while a client
is connected and back down when it leaves; run events sent are counted."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from exporter_api.config import Settings
from tests.exporter_api.conftest import DEMO_LOGIN, SALES
from tests.exporter_api.metricskit import demo_toml_with_metrics, sample
from tests.exporter_api.runs.live import bearer, held_hub_watch, live_service, wait_for_type

pytestmark = pytest.mark.compat


async def test_hub_connections_per_transport(settings: Settings, tmp_path: Path) -> None:
    config = demo_toml_with_metrics(tmp_path)
    async with live_service(config, settings.data_dir, "db-test") as service:
        http = service.http

        async def connections() -> float:
            text = (await http.get("/metrics")).text
            return sample(text, "exporter_hub_connections", transport="WebSockets")

        assert await connections() == 0
        token = (await http.post("/api/auth/login", json=DEMO_LOGIN)).json()["accessToken"]
        run_id = (await http.post("/api/runs", json=SALES, headers=bearer(token))).json()["runId"]
        async with held_hub_watch(service, token, run_id) as (lines, _):
            with anyio.fail_after(10):
                await wait_for_type(lines, "state")
            assert await connections() == 1
        with anyio.fail_after(10):
            # The client's close reaches the server after the block: poll, bounded.
            while await connections() != 0:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        text = (await http.get("/metrics")).text
        assert sample(text, "exporter_hub_messages_sent_total", method="run.updated") >= 1
