"""`GET /metrics`: off by default, guarded by an address allow-list and/or a bearer token, and
its numbers move with what happens (logins, runs, downloads, the store's shared state)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from exporter_api.app import create_app
from exporter_api.config import Settings
from exporter_api.errors import ConfigError
from exporter_api.metrics import Metrics
from tests.exporter_api.conftest import DEMO_LOGIN, SALES, ended_run, running_app
from tests.exporter_api.metricskit import metrics_config, sample

ROOT = Path(__file__).resolve().parents[2]


async def _scrape(client: httpx.AsyncClient, **headers: str) -> str:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


async def test_metrics_are_off_by_default(settings: Settings) -> None:
    async with running_app(create_app(settings)) as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_scrapers_outside_the_allow_list_get_404(settings: Settings) -> None:
    app = create_app(settings, metrics_config(allow_from=["10.0.0.0/8"]))
    async with running_app(app) as client:  # the test client is 127.0.0.1
        refused = await client.get("/metrics")
        assert refused.status_code == 404
        assert "exporter_" not in refused.text


async def test_a_token_guards_metrics_from_any_address(settings: Settings) -> None:
    app = create_app(
        dataclasses.replace(settings, metrics_token="scrape-me"), metrics_config(allow_from=[])
    )
    async with running_app(app) as client:
        assert (await client.get("/metrics")).status_code == 404
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 404
        await _scrape(client, Authorization="Bearer scrape-me")


def test_metrics_open_to_everyone_is_refused(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="allow_from"):
        create_app(settings, metrics_config(allow_from=[]))


def test_a_loopback_only_allow_list_without_proxies_or_token_is_warned_about(
    settings: Settings,
) -> None:
    # A reverse proxy on the same host makes every scraper look like 127.0.0.1.
    with capture_logs() as logs:
        create_app(settings, metrics_config())
    assert "metrics_open_behind_local_proxy" in [e["event"] for e in logs]
    with capture_logs() as logs:
        create_app(dataclasses.replace(settings, metrics_token="t"), metrics_config())
        create_app(settings, metrics_config(allow_from=["10.0.0.0/8"]))
    assert "metrics_open_behind_local_proxy" not in [e["event"] for e in logs]


async def test_numbers_move_with_logins_runs_and_downloads(settings: Settings) -> None:
    app = create_app(settings, metrics_config())
    async with running_app(app) as client:
        before = await _scrape(client)
        bad = await client.post("/api/auth/login", json={**DEMO_LOGIN, "dbPassword": "nope"})
        assert bad.status_code == 401
        login = await client.post("/api/auth/login", json=DEMO_LOGIN)
        auth = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        run_id = (await client.post("/api/runs", json=SALES, headers=auth)).json()["runId"]
        state = await ended_run(client, run_id, auth)
        file = state["files"][0]
        downloaded = await client.get(f"/api/runs/{run_id}/files/{file['fileId']}", headers=auth)
        assert downloaded.status_code == 200
        after = await _scrape(client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    db = {"database": "db-test"}
    assert delta("exporter_logins_total", outcome="failed", **db) == 1
    assert delta("exporter_logins_total", outcome="succeeded", **db) == 1
    assert delta("exporter_runs_finished_total", status="Success", **db) == 1
    rows = sum(f["rows"] for f in state["files"])
    assert delta("exporter_rows_exported_total", **db) == rows > 0
    assert delta("exporter_bytes_exported_total", **db) == sum(
        f["sizeBytes"] for f in state["files"]
    )
    assert delta("exporter_script_duration_seconds_count", script="s-orders", **db) == 1
    assert delta("exporter_run_queue_wait_seconds_count", **db) == 1
    assert delta("exporter_downloads_total", kind="file", via="token") == 1
    # Run events went to the hub (no client listens: sent to the run's group all the same).
    assert delta("exporter_hub_messages_sent_total", method="run.updated") >= 2
    assert sample(after, "exporter_store_up") == 1
    assert sample(after, "exporter_db_connections_max", **db) >= 1


async def test_shared_gauges_come_from_the_store(settings: Settings) -> None:
    app = create_app(settings, metrics_config())
    async with running_app(app) as client:
        login = await client.post("/api/auth/login", json=DEMO_LOGIN)
        auth = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        await app.state.runs.engine.drain(grace_s=0)  # new runs stay Queued
        idle = await _scrape(client)
        assert sample(idle, "exporter_runs_active", status="Queued") == 0
        for _ in range(2):
            created = await client.post("/api/runs", json=SALES, headers=auth)
            assert created.status_code == 201
        queued = await _scrape(client)
        assert sample(queued, "exporter_runs_active", status="Queued") == 2
        assert sample(queued, "exporter_runs_active", status="Running") == 0
        assert sample(queued, "exporter_db_connections_in_use", database="db-test") == 0
        # A slot lease held (a script's query running) counts as a connection in use.
        slots = app.state.runs.engine.slots
        async with slots.hold("db-test", "RUN"):
            holding = await _scrape(client)
        assert sample(holding, "exporter_db_connections_in_use", database="db-test") == 1


async def test_slow_consumer_aborts_reach_the_metrics(settings: Settings) -> None:
    app = create_app(settings, metrics_config())
    async with running_app(app) as client:
        # What signalr_core calls when it aborts a connection whose buffer is full (the abort
        # itself is tested in tests/signalr_core/test_endpoint.py).
        observer = app.state.runs.hub_endpoint.options.on_slow_consumer
        observer("LongPolling")
        text = await _scrape(client)
    assert sample(text, "exporter_hub_slow_consumer_aborts_total", transport="LongPolling") == 1


def test_the_grafana_dashboard_uses_only_metrics_we_expose() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text("utf-8"))
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\bexporter_[a-z_]+", target["expr"])
    }
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exposed = {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes[family.type]
    }
    exposed |= {"exporter_store_up", "exporter_runs_active", "exporter_db_connections_in_use"}
    exposed |= {"exporter_db_connections_max"}
    assert used, "the dashboard queries nothing"
    assert used <= exposed, used - exposed
    # Every metric has a panel (histograms through their buckets).
    shown = {n.removesuffix("_bucket") for n in used}
    every = {n.removesuffix("_bucket") for n in exposed if not n.endswith(("_count", "_sum"))}
    assert shown == every, every - shown
