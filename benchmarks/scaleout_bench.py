"""Scale-out: total export throughput of concurrent large runs, one process vs ``--workers 2``.

``python -m benchmarks.scaleout_bench [--rows N] [--runs K] [--sources postgres,sqlite]``
(also run by ``make bench``):

1. starts a throwaway PostgreSQL cluster (the service's state store, and the export database of
   the ``postgres`` source) and a redis-server (the hub backplane);
2. for each source — ``postgres``: the ``export_bench`` ledger of N rows (2,000,000 by default,
   about 200 MB of CSV per run) through the COPY path; ``sqlite``: the demo's 2,000,000-row
   ledger (``g-big``) through the SQLite provider's C reader — and for each configuration — the
   baseline ``exporter-api serve`` (one process), then ``exporter-api serve --workers 2`` (two
   instances on one port) — starts the service on a fresh state database and files directory,
   logs in, POSTs K runs at once (6 by default; whichever instance claims a run executes it)
   and waits for all;
3. reports each configuration's wall time (first POST to the last ``finishedAt``), total
   throughput (MB/s of CSV written) and the ratio against the one-process baseline.

Both configurations use the PostgreSQL state store and Redis, so the only difference is the
number of processes.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.export_bench import (
    DB,
    ROLE,
    ROLE_PASSWORD,
    RUN_BODY,
    SETUP,
    _request,
    login,
    serve,
    wait_for_run,
    write_catalog,
)
from exporter_api.security.keys import generate_key
from tests.bodies import group, run_body, script
from tests.services import (
    PostgresCluster,
    RedisServer,
    postgres_cluster,
    redis_server,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Source:
    name: str
    config: Path  # the catalog to serve
    login: dict[str, str]
    body: dict[str, Any]


def _postgres_source(cluster: PostgresCluster, work: Path, runs: int, files_dir: Path) -> Source:
    config = write_catalog(
        work / "catalog-postgres",
        cluster,
        max_runs=runs,
        max_connections=runs,
        server="heartbeat_s = 1.0\ntakeover_after_s = 5.0",
        output=f'[output]\nfiles_dir = "{files_dir}"',
    )
    login = {"dbUsername": ROLE, "dbPassword": ROLE_PASSWORD, "databaseId": "db-bench"}
    return Source("postgres", config, login, RUN_BODY)


def _sqlite_source(work: Path, runs: int, files_dir: Path) -> Source:
    """The demo catalog with its database built once, up front, at an absolute path."""
    catalog = work / "catalog-sqlite"
    if not catalog.exists():
        shutil.copytree(ROOT / "examples" / "demo", catalog)
    database = work / "demo.sqlite3"
    if not database.exists():
        init_sql = (catalog / "sql" / "init_demo.sql").read_text(encoding="utf-8")
        with contextlib.closing(sqlite3.connect(database)) as conn:
            conn.executescript(init_sql)
    text = (ROOT / "examples" / "demo" / "exporter.toml").read_text(encoding="utf-8")
    for old, new in (
        ("max_active_runs_per_user = 3", f"max_active_runs_per_user = {runs}"),
        ('dsn = "demo/db-test.sqlite3"', f'dsn = "{database}"'),
        ('init_sql = "sql/init_demo.sql"', ""),
        ("max_connections = 4", f"max_connections = {runs}"),
        ("[output]\n", f'[output]\nfiles_dir = "{files_dir}"\n'),
        ("[server]\n", "[server]\nheartbeat_s = 1.0\ntakeover_after_s = 5.0\n"),
    ):
        if old not in text:
            raise RuntimeError(f"examples/demo/exporter.toml no longer has {old!r}")
        text = text.replace(old, new, 1)
    config = catalog / "exporter.toml"
    config.write_text(text, encoding="utf-8")
    body = run_body("SingleGroup", group("g-big", script("s-ledger")))
    return Source(
        "sqlite",
        config,
        {"dbUsername": "USER1", "dbPassword": "demo", "databaseId": "db-test"},
        body,
    )


def _measure(
    cluster: PostgresCluster,
    redis: RedisServer,
    work: Path,
    source_name: str,
    workers: int,
    runs: int,
    rows: int,
) -> tuple[float, int, int]:
    """Wall seconds for ``runs`` concurrent runs, the bytes and the rows they wrote."""
    name = f"{source_name}_w{workers}"
    state_db = f"state_{name}"
    cluster.psql(f"CREATE DATABASE {state_db}")
    files_dir = work / f"files-{name}"
    source = (
        _postgres_source(cluster, work, runs, files_dir)
        if source_name == "postgres"
        else _sqlite_source(work, runs, files_dir)
    )
    env = {
        "EXPORTER_JWT_KEY": generate_key(),
        "EXPORTER_VAULT_KEY": generate_key(),
        "EXPORTER_STATE_URL": cluster.dsn(db=state_db),
        "EXPORTER_REDIS_URL": redis.url,
    }
    try:
        with serve(
            source.config, work / f"data-{name}", args=("--workers", str(workers)), env=env
        ) as (_, base):
            time.sleep(1.0)  # let every worker finish its start-up before the clock starts
            token = login(base, {**source.login, "managerId": "m1", "streamId": "s1"})
            started = datetime.now(UTC)
            with ThreadPoolExecutor(runs) as pool:
                created = list(
                    pool.map(
                        lambda _: _request("POST", f"{base}/api/runs", source.body, token),
                        range(runs),
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
                state = wait_for_run(base, token, run_id, 0.5)
                if state["status"] != "Success":
                    raise RuntimeError(f"run {run_id} ended {state['status']}: {state}")
                finished.append(datetime.fromisoformat(state["finishedAt"].replace("Z", "+00:00")))
                total_bytes += sum(f["sizeBytes"] for f in state["files"])
                total_rows += sum(f["rows"] for f in state["files"])
            if source_name == "postgres" and total_rows != rows * runs:
                raise RuntimeError(f"exported {total_rows:,} rows, expected {rows * runs:,}")
            return (max(finished) - started).total_seconds(), total_bytes, total_rows
    finally:
        shutil.rmtree(files_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--sources", default="postgres,sqlite")
    args = parser.parse_args(argv if argv is not None else [])
    sources = [s for s in args.sources.split(",") if s]
    if not set(sources) <= {"postgres", "sqlite"}:
        parser.error("--sources takes postgres and/or sqlite")

    work = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    try:
        with postgres_cluster() as cluster, redis_server() as redis:
            print(f"filling ledger with {args.rows:,} rows ...", flush=True)
            cluster.psql(f"CREATE DATABASE {DB}")
            cluster.psql(SETUP.replace(":rows", str(args.rows)), db=DB)
            cluster.psql("VACUUM ANALYZE ledger", db=DB)
            for source in sources:
                results: dict[int, float] = {}
                for workers in (1, 2):
                    elapsed, size, total_rows = _measure(
                        cluster, redis, work, source, workers, args.runs, args.rows
                    )
                    results[workers] = size / elapsed
                    label = "serve" if workers == 1 else f"serve --workers {workers}"
                    print(
                        f"  {source:<9} {label:<18}"
                        f" {args.runs} runs, {total_rows:,} rows: {elapsed:6.1f} s,"
                        f" {size / 1e6 / elapsed:6.1f} MB/s",
                        flush=True,
                    )
                print(
                    f"{source}: throughput with --workers 2 is {results[2] / results[1]:.2f}x"
                    " the one-process baseline",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
