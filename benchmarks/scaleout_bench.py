"""Scale-out: total export throughput of concurrent large runs, one process vs ``--workers 2``.

``python -m benchmarks.scaleout_bench [--rows N] [--runs K]`` (also run by ``make bench``):

1. starts a throwaway PostgreSQL cluster (the export database *and* the service's state store)
   and a redis-server (the hub backplane), and fills ``ledger`` with N rows (2,000,000 by
   default, about 200 MB of CSV per run) — the same table and query as ``export_bench``;
2. for each configuration — the baseline ``exporter-api serve`` (one process), then
   ``exporter-api serve --workers 2`` (two instances on one port) — starts the service on a fresh
   state database and files directory, logs in, POSTs K runs at once (6 by default; the runs go
   to the shared queue and whichever instance claims them executes them) and waits for all;
3. reports each configuration's wall time (first POST to the last ``finishedAt``), total
   throughput (MB/s of CSV written) and the ratio against the one-process baseline.

Both configurations use the PostgreSQL state store and Redis, so the only difference is the
number of processes.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.export_bench import COLUMNS, DB, QUERY, ROLE, ROLE_PASSWORD, SETUP, _request
from tests.services import (
    PostgresCluster,
    RedisServer,
    free_port,
    postgres_cluster,
    redis_server,
    stop_process,
    wait_for_port,
)

CATALOG = """
[server]
max_active_runs_per_user = {runs}
heartbeat_s = 1.0
takeover_after_s = 5.0

[output]
files_dir = "{files_dir}"

[[databases]]
id = "db-bench"
display_name = "Bench"
provider = "postgres"
dsn = "postgresql://{host}:{port}/{db}"
max_connections = {runs}
statement_timeout_s = 600

[[managers]]
id = "m1"
display_name = "Manager 1"
streams = [{{ id = "s1", display_name = "Stream 1" }}]

[[columns_profiles]]
id = "ledger_cols"
items = [{items}]

[[groups]]
id = "g-bench"
display_name = "Bench"

[[groups.scripts]]
id = "s-ledger"
display_name = "Ledger"
execution_lane = 0
columns_profile_id = "ledger_cols"
variants = ["ledger.sql"]
"""

RUN_BODY = {
    "mode": "SingleScript",
    "selection": {
        "groups": [
            {
                "groupId": "g-bench",
                "enabled": True,
                "scripts": [{"scriptId": "s-ledger", "enabled": True, "exportMode": "AllColumns"}],
            }
        ]
    },
}


def _key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _measure(
    cluster: PostgresCluster, redis: RedisServer, work: Path, workers: int, runs: int, rows: int
) -> tuple[float, int]:
    """Wall seconds for ``runs`` concurrent runs and the bytes they wrote."""
    name = f"w{workers}"
    state_db = f"state_{name}"
    cluster.psql(f"CREATE DATABASE {state_db}")
    catalog = work / name
    catalog.mkdir()
    files_dir = work / f"files-{name}"
    (catalog / "ledger.sql").write_text(QUERY + "\n")
    items = ", ".join(f'{{ id = "{c}", label = "{c}", source = "{c}" }}' for c in COLUMNS)
    (catalog / "exporter.toml").write_text(
        CATALOG.format(
            runs=runs,
            files_dir=files_dir,
            host=cluster.host,
            port=cluster.port,
            db=DB,
            items=items,
        )
    )
    port = free_port()
    env = {
        **os.environ,
        "EXPORTER_JWT_KEY": _key(),
        "EXPORTER_VAULT_KEY": _key(),
        "EXPORTER_STATE_URL": cluster.dsn(db=state_db),
        "EXPORTER_REDIS_URL": redis.url,
    }
    server = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "exporter_api",
            "serve",
            "--config",
            str(catalog / "exporter.toml"),
            "--data-dir",
            str(work / f"data-{name}"),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 60)
        base = f"http://127.0.0.1:{port}"
        time.sleep(1.0)  # let every worker finish its start-up before the clock starts
        status, login = _request(
            "POST",
            f"{base}/api/auth/login",
            {
                "dbUsername": ROLE,
                "dbPassword": ROLE_PASSWORD,
                "databaseId": "db-bench",
                "managerId": "m1",
                "streamId": "s1",
            },
        )
        if status != 200:
            raise RuntimeError(f"login answered {status}: {login}")
        token = login["accessToken"]
        started = datetime.now(UTC)
        with ThreadPoolExecutor(runs) as pool:
            created = list(
                pool.map(
                    lambda _: _request("POST", f"{base}/api/runs", RUN_BODY, token), range(runs)
                )
            )
        run_ids = []
        for status, body in created:
            if status != 201:
                raise RuntimeError(f"POST /api/runs answered {status}: {body}")
            run_ids.append(body["runId"])
        finished: list[datetime] = []
        total_bytes = total_rows = 0
        for run_id in run_ids:
            state: dict[str, Any] = {}
            while True:  # a slow poll: the time comes from the runs' own finishedAt
                _, state = _request("GET", f"{base}/api/runs/{run_id}", token=token)
                if state["status"] not in ("Queued", "Running"):
                    break
                time.sleep(0.5)
            if state["status"] != "Success":
                raise RuntimeError(f"run {run_id} ended {state['status']}: {state}")
            finished.append(datetime.fromisoformat(state["finishedAt"].replace("Z", "+00:00")))
            total_bytes += sum(f["sizeBytes"] for f in state["files"])
            total_rows += sum(f["rows"] for f in state["files"])
        if total_rows != rows * runs:
            raise RuntimeError(f"exported {total_rows:,} rows, expected {rows * runs:,}")
        return (max(finished) - started).total_seconds(), total_bytes
    finally:
        stop_process(server, 30)
        shutil.rmtree(files_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args(argv if argv is not None else [])

    work = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    try:
        with postgres_cluster() as cluster, redis_server() as redis:
            print(f"filling ledger with {args.rows:,} rows ...", flush=True)
            cluster.psql(f"CREATE DATABASE {DB}")
            cluster.psql(SETUP.replace(":rows", str(args.rows)), db=DB)
            cluster.psql("VACUUM ANALYZE ledger", db=DB)
            results: dict[int, tuple[float, int]] = {}
            for workers in (1, 2):
                elapsed, size = _measure(cluster, redis, work, workers, args.runs, args.rows)
                results[workers] = (elapsed, size)
                print(
                    f"  {'serve' if workers == 1 else f'serve --workers {workers}':<20}"
                    f" {args.runs} runs x {args.rows:,} rows: {elapsed:6.1f} s,"
                    f" {size / 1e6 / elapsed:6.1f} MB/s",
                    flush=True,
                )
            base_elapsed, _ = results[1]
            for workers, (elapsed, _) in results.items():
                if workers != 1:
                    print(
                        f"throughput with --workers {workers}: {base_elapsed / elapsed:.2f}x"
                        " the one-process baseline",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
