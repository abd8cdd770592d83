"""``serve --workers 2`` with ``[metrics] enabled``: whichever worker a scrape reaches answers
for both (prometheus-client's multiprocess files, in a private directory of the supervisor's on a
RAM-backed filesystem, or in the operator's ``PROMETHEUS_MULTIPROC_DIR``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import httpx

from exporter_api.config import Settings
from exporter_api.metrics import MULTIPROC_DIR_ENV
from exporter_api.security.keys import JWT_KEY_ENV, VAULT_KEY_ENV, generate_key
from exporter_api.workers import METRICS_DIR_PREFIX, RAM_DIR
from tests.exporter_api.conftest import DEMO_LOGIN, create_pg_database
from tests.exporter_api.metricskit import demo_toml_with_metrics, sample
from tests.services import (
    PostgresCluster,
    RedisServer,
    exporter_serve,
    free_port,
    serve_command,
    service_env,
    wait_for_workers,
)

LOGINS = 6


def _env(pg: PostgresCluster, redis: RedisServer, database: str) -> dict[str, str]:
    return {
        JWT_KEY_ENV: generate_key(),
        VAULT_KEY_ENV: generate_key(),
        "EXPORTER_REDIS_URL": redis.url,
        "EXPORTER_STATE_URL": create_pg_database(pg, database),
    }


def test_every_worker_counts_in_one_scrape(
    settings: Settings, pg: PostgresCluster, redis: RedisServer, tmp_path: Path
) -> None:
    config = demo_toml_with_metrics(tmp_path)
    metrics_dir = tmp_path / "metrics"  # the operator's
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"from an earlier run")
    env = {**_env(pg, redis, "state_metrics"), MULTIPROC_DIR_ENV: str(metrics_dir)}
    log_path = tmp_path / "workers.log"
    with exporter_serve(
        config, settings.data_dir, log_path, args=("--workers", "2"), env=env, timeout=60
    ) as (proc, base):
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
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert {f"counter_{pid}.db" for pid in pids} <= {p.name for p in metrics_dir.iterdir()}


def test_the_metrics_dir_is_private_off_the_data_disk_and_removed_at_exit(
    settings: Settings, pg: PostgresCluster, redis: RedisServer, tmp_path: Path
) -> None:
    # A full data disk must not reach the memory-mapped files (SIGBUS in every worker).
    config = demo_toml_with_metrics(tmp_path)
    log_path = tmp_path / "workers.log"
    env = _env(pg, redis, "state_metrics_dir")
    with exporter_serve(
        config, settings.data_dir, log_path, args=("--workers", "2"), env=env, timeout=60
    ) as (proc, base):
        events = wait_for_workers(log_path)
        (chosen,) = (e for e in events if e["event"] == "metrics_dir")
        path = Path(chosen["path"])
        assert chosen["own"] is True
        ram = RAM_DIR.is_dir() and os.access(RAM_DIR, os.W_OK | os.X_OK)
        assert path.parent == (RAM_DIR if ram else Path(tempfile.gettempdir()))
        assert not path.resolve().is_relative_to(settings.data_dir.resolve())
        assert path.name.startswith(f"{METRICS_DIR_PREFIX}{proc.pid}-")
        assert path.stat().st_mode & 0o777 == 0o700
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.post("/api/auth/login", json=DEMO_LOGIN).status_code == 200
            assert client.get("/metrics").status_code == 200
        pids = {e["pid"] for e in events if e["event"] == "worker_started"}
        assert {p.name for p in path.glob("counter_*.db")} & {f"counter_{p}.db" for p in pids}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert not path.exists()


def test_the_metrics_dir_is_removed_when_the_workers_fail_to_start(
    settings: Settings, pg: PostgresCluster, redis: RedisServer, tmp_path: Path
) -> None:
    config = demo_toml_with_metrics(tmp_path)
    env = {**_env(pg, redis, "state_unused"), "EXPORTER_STATE_URL": pg.dsn(db="no_such_db")}
    command = [*serve_command(), "serve", "--config", str(config), "--port", str(free_port())]
    done = subprocess.run(
        [*command, "--data-dir", str(settings.data_dir), "--workers", "2"],
        env=service_env(env),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 1  # a start-up failure: the workers died, the supervisor gave up
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(e["event"] == "worker_exited" for e in events)
    (chosen,) = (e for e in events if e["event"] == "metrics_dir")
    assert not Path(chosen["path"]).exists()
