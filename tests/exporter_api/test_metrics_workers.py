"""``serve --workers 2`` with ``[metrics] enabled``: whichever worker a scrape reaches answers
for both (prometheus-client's multiprocess files under ``<data dir>/metrics``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from exporter_api.config import Settings
from exporter_api.security.keys import JWT_KEY_ENV, VAULT_KEY_ENV, generate_key
from tests.exporter_api.conftest import DEMO_LOGIN, create_pg_database
from tests.exporter_api.metricskit import demo_toml_with_metrics, sample
from tests.services import PostgresCluster, RedisServer, free_port, wait_for_port

LOGINS = 6


def _events(log_path: Path) -> list[dict[str, Any]]:
    text = log_path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_every_worker_counts_in_one_scrape(
    settings: Settings, pg: PostgresCluster, redis: RedisServer, tmp_path: Path
) -> None:
    config = demo_toml_with_metrics(tmp_path)
    metrics_dir = settings.data_dir / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"from an earlier run")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("EXPORTER_", "PROMETHEUS_"))},
        JWT_KEY_ENV: generate_key(),
        VAULT_KEY_ENV: generate_key(),
        "EXPORTER_REDIS_URL": redis.url,
        "EXPORTER_STATE_URL": create_pg_database(pg, "state_metrics"),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "workers.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter_api",
                "serve",
                "--workers",
                "2",
                "--port",
                str(port),
                "--data-dir",
                str(settings.data_dir),
                "--config",
                str(config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            wait_for_port(port, timeout=60)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # other processes' logs: poll, bounded
                events = _events(log_path)
                if sum(e["event"] == "service_started" for e in events) == 2:
                    break
                time.sleep(0.1)
            pids = {e["pid"] for e in events if e["event"] == "worker_started"}
            assert len(pids) == 2
            base = f"http://127.0.0.1:{port}"
            for _ in range(LOGINS):  # one connection each: the kernel picks the worker
                with httpx.Client(base_url=base, timeout=10) as client:
                    assert client.post("/api/auth/login", json=DEMO_LOGIN).status_code == 200
            for _ in range(4):
                with httpx.Client(base_url=base, timeout=10) as client:
                    scraped = client.get("/metrics")
                assert scraped.status_code == 200
                succeeded = sample(
                    scraped.text, "exporter_logins_total", database="db-test", outcome="succeeded"
                )
                assert succeeded == LOGINS
            files = {p.name for p in metrics_dir.iterdir()}
            assert "counter_999999.db" not in files  # emptied before the workers started
            assert {f"counter_{pid}.db" for pid in pids} <= files
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
