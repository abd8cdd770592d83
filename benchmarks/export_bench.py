"""Export throughput: the service's COPY path against ``psql \\copy`` on the same query.

``python -m benchmarks.export_bench [--rows N] [--repeat K]`` (also run by ``make bench``):

1. starts a throwaway PostgreSQL cluster (``tests/services.py``) and fills ``ledger`` with N
   rows (2,000,000 by default, about 200 MB of CSV); a login role ``bench`` may read it;
2. starts ``exporter-api serve`` in its own process on a catalog with one script (the whole
   ledger, every column through a column profile, as users export it);
3. K times each, alternating: ``psql -c "\\copy (SELECT ...) TO FILE CSV HEADER"`` and a
   SingleScript run through the service (POST /api/runs, until the run's final status);
4. reports the best time of each, the throughput ratio (psql time / service time; 1.0 = as fast
   as psql) and the service's peak RSS (VmHWM of the server process).

Goal: ratio >= 0.9 and peak RSS < 150 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.services import (
    PostgresCluster,
    _pg_bin,
    free_port,
    postgres_cluster,
    stop_process,
    wait_for_port,
)

DB = "benchdb"
ROLE, ROLE_PASSWORD = "bench", "bench-Password-1"

SETUP = """
CREATE ROLE bench LOGIN PASSWORD 'bench-Password-1';
CREATE TABLE ledger (
    entry_id   bigint PRIMARY KEY,
    manager_id text NOT NULL,
    stream_id  text NOT NULL,
    account    text NOT NULL,
    booked_at  timestamptz NOT NULL,
    amount     numeric(14, 2) NOT NULL,
    note       text NOT NULL
);
INSERT INTO ledger
SELECT i, 'm1', 's1', 'ACC-' || lpad((i % 9973)::text, 6, '0'),
       timestamptz '2025-01-01 00:00:00+00' + i * interval '7 seconds',
       ((i * 7919) % 1000000) / 100.0,
       'entry ' || i || ' ' || md5(i::text)
FROM generate_series(1::bigint, :rows) AS i;
GRANT SELECT ON ledger TO bench;
"""

COLUMNS = ["entry_id", "manager_id", "stream_id", "account", "booked_at", "amount", "note"]
QUERY = "SELECT * FROM ledger WHERE manager_id = :manager_id ORDER BY entry_id"
_SELECT_LIST = ", ".join(f'"{c}" AS "{c}"' for c in COLUMNS)
# What the service runs: the script wrapped by the column profile (identifiers quoted).
PSQL_QUERY = "SELECT %s FROM (SELECT * FROM ledger WHERE manager_id = 'm1' ORDER BY entry_id) q"
PSQL_QUERY %= _SELECT_LIST

CATALOG = """
[server]
max_active_runs_per_user = {max_runs}
{server}
{output}

[[databases]]
id = "db-bench"
display_name = "Bench"
provider = "postgres"
dsn = "postgresql://{host}:{port}/{db}"
max_connections = {max_connections}
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


def _request(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _psql_copy(cluster: PostgresCluster, target: Path) -> float:
    env = {**os.environ, "PGPASSWORD": ROLE_PASSWORD}
    started = time.perf_counter()
    subprocess.run(  # noqa: S603
        [
            _pg_bin("psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            cluster.host,
            "-p",
            str(cluster.port),
            "-U",
            ROLE,
            "-d",
            DB,
            "-c",
            f"\\copy ({PSQL_QUERY}) TO '{target}' CSV HEADER",
        ],
        env=env,
        check=True,
    )
    return time.perf_counter() - started


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


def write_catalog(
    directory: Path,
    cluster: PostgresCluster,
    *,
    max_runs: int = 1,
    max_connections: int = 2,
    server: str = "",
    output: str = "",
) -> Path:
    """The one-script ledger catalog (and its SQL file) in ``directory``; its exporter.toml.

    ``server`` and ``output`` are extra TOML lines for those sections (``output`` includes its
    ``[output]`` header)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ledger.sql").write_text(QUERY + "\n")
    items = ", ".join(f'{{ id = "{c}", label = "{c}", source = "{c}" }}' for c in COLUMNS)
    config = directory / "exporter.toml"
    config.write_text(
        CATALOG.format(
            max_runs=max_runs,
            server=server,
            output=output,
            host=cluster.host,
            port=cluster.port,
            db=DB,
            max_connections=max_connections,
            items=items,
        )
    )
    return config


def _service_export(base: str, token: str) -> tuple[float, dict[str, Any]]:
    body = RUN_BODY
    started_wall = datetime.now(UTC)
    status, created = _request("POST", f"{base}/api/runs", body, token)
    if status != 201:
        raise RuntimeError(f"POST /api/runs answered {status}: {created}")
    run_id = created["runId"]
    while True:  # a slow poll: the time comes from the run's own finishedAt, not from here
        time.sleep(0.25)
        _, state = _request("GET", f"{base}/api/runs/{run_id}", token=token)
        if state["status"] not in ("Queued", "Running"):
            break
    finished = datetime.fromisoformat(state["finishedAt"].replace("Z", "+00:00"))
    elapsed = (finished - started_wall).total_seconds()
    if state["status"] != "Success":
        raise RuntimeError(f"the run ended {state['status']}: {state}")
    _, files = _request("GET", f"{base}/api/runs/{run_id}/files", token=token)
    return elapsed, {"state": state, "file": files["files"][0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv if argv is not None else [])

    work = Path(tempfile.mkdtemp(prefix="export-bench-"))
    try:
        with postgres_cluster() as cluster:
            _run(cluster, work, args.rows, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(cluster: PostgresCluster, work: Path, rows: int, repeat: int) -> None:
    print(f"filling ledger with {rows:,} rows ...", flush=True)
    cluster.psql(f"CREATE DATABASE {DB}")
    cluster.psql(SETUP.replace(":rows", str(rows)), db=DB)
    cluster.psql("VACUUM ANALYZE ledger", db=DB)

    config = write_catalog(work / "catalog", cluster)
    port = free_port()
    data_dir = work / "data"
    server = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "exporter_api",
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 60)
        base = f"http://127.0.0.1:{port}"
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
        idle_rss = _rss_mb(server.pid)

        psql_times: list[float] = []
        service_times: list[float] = []
        result: dict[str, Any] = {}
        psql_file = work / "psql.csv"
        for i in range(repeat):
            psql_times.append(_psql_copy(cluster, psql_file))
            elapsed, result = _service_export(base, token)
            service_times.append(elapsed)
            print(
                f"  round {i + 1}: psql {psql_times[-1]:.2f} s, service {elapsed:.2f} s", flush=True
            )
        peak = _peak_rss_mb(server.pid)
        size = psql_file.stat().st_size
        exported = data_dir / "exports" / result["state"]["runId"] / result["file"]["name"]
        same = hashlib.sha256(psql_file.read_bytes()).hexdigest() == result["file"]["sha256"]
        best_psql, best_service = min(psql_times), min(service_times)
        ratio = best_psql / best_service
        print(f"rows exported:          {result['file']['rows']:,}")
        print(
            f"CSV size:               {size / 1e6:.1f} MB (service file "
            f"{exported.stat().st_size / 1e6:.1f} MB, identical to psql: {same})"
        )
        print(f"psql \\copy best:        {best_psql:.2f} s ({size / 1e6 / best_psql:.0f} MB/s)")
        print(
            f"service best:           {best_service:.2f} s ({size / 1e6 / best_service:.0f} MB/s)"
        )
        paired = sorted(p / v for p, v in zip(psql_times, service_times, strict=True))
        median = paired[len(paired) // 2]
        print(f"throughput ratio:       {ratio:.2f} of psql, best vs best (goal >= 0.9)")
        print(
            f"ratio per round:        {', '.join(f'{r:.2f}' for r in paired)} (median {median:.2f})"
        )
        print(f"service RSS idle/peak:  {idle_rss:.0f} MB / {peak:.0f} MB (goal peak < 150 MB)")
    finally:
        stop_process(server, 15)


if __name__ == "__main__":
    main(sys.argv[1:])
