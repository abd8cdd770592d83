"""``serve --workers 2`` with ``[metrics] enabled``: whichever worker a scrape reaches answers
for both (prometheus-client's multiprocess files under ``<data dir>/metrics``)."""

from __future__ import annotations

from pathlib import Path

import httpx

from exporter_api.config import Settings
from exporter_api.security.keys import JWT_KEY_ENV, VAULT_KEY_ENV, generate_key
from tests.exporter_api.conftest import DEMO_LOGIN, create_pg_database
from tests.exporter_api.metricskit import demo_toml_with_metrics, sample
from tests.services import PostgresCluster, RedisServer, exporter_serve, wait_for_workers

LOGINS = 6


def test_every_worker_counts_in_one_scrape(
    settings: Settings, pg: PostgresCluster, redis: RedisServer, tmp_path: Path
) -> None:
    config = demo_toml_with_metrics(tmp_path)
    metrics_dir = settings.data_dir / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"from an earlier run")
    env = {
        JWT_KEY_ENV: generate_key(),
        VAULT_KEY_ENV: generate_key(),
        "EXPORTER_REDIS_URL": redis.url,
        "EXPORTER_STATE_URL": create_pg_database(pg, "state_metrics"),
    }
    log_path = tmp_path / "workers.log"
    with exporter_serve(
        config, settings.data_dir, log_path, args=("--workers", "2"), env=env, timeout=60
    ) as (_, base):
        events = wait_for_workers(log_path)
        pids = {e["pid"] for e in events if e["event"] == "worker_started"}
        assert len(pids) == 2
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
