"""Export throughput: each format through the service against its baseline, same run.

``python -m benchmarks.export_bench [--rows N] [--repeat K] [--sources postgres,sqlite]
[--formats csv,csv.gz,xlsx]`` (also run by ``make bench``):

- ``postgres``: a throwaway PostgreSQL cluster (``tests/services.py``) whose ``ledger`` gets N
  rows (2,000,000 by default, about 200 MB of CSV), a login role ``bench`` and a one-script
  catalog (the whole ledger, every column through a column profile). CSV goes through COPY;
  csv.gz and XLSX through the cursor (row) path.
- ``sqlite``: the bundled demo catalog and its generated database; the run exports ``g-big``
  (2,000,000 rows): CSV and csv.gz through the provider's C reader, XLSX through the DB-API row
  path.

For each source and format a fresh ``exporter-api serve`` process (so its peak RSS, VmHWM, is
that format's) runs SingleScript runs over REST (POST /api/runs, polled until the final status;
the time is the run's own ``finishedAt`` minus the POST). Baselines, each its own process:
``psql -c "\\copy (...) TO FILE CSV HEADER"`` and ``sqlite3 -csv -header`` of the same query
(for CSV K rounds, alternating; once for csv.gz), and for XLSX the same rows, fetched into a list
first, written by XlsxWriter alone (only the writing timed). Ratio = baseline time / service time
(1.0 = as fast as the baseline).

Goals: CSV >= 0.9 of psql, >= 0.8 of sqlite3 -csv; peak RSS < 150 MB.
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
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bodies import group, login_body, run_body, script
from tests.exporter_api.conftest import DEMO_LOGIN
from tests.procstat import cpu_seconds, peak_rss_bytes, rss_bytes
from tests.services import (
    PostgresCluster,
    _pg_bin,
    exporter_serve,
    postgres_cluster,
)

MIB = 1 << 20
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


RUN_BODY = run_body("SingleScript", group("g-bench", script("s-ledger")))


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


def wait_for_run(base: str, token: str, run_id: str, poll_s: float) -> dict[str, Any]:
    """The state of ``run_id`` once it has ended. A slow poll: a run's time comes from its own
    ``finishedAt``, not from here."""
    while True:
        time.sleep(poll_s)
        _, state = _request("GET", f"{base}/api/runs/{run_id}", token=token)
        if state["status"] not in ("Queued", "Running"):
            return dict(state)


def _service_export(
    base: str, token: str, body: dict[str, Any] | None = None
) -> tuple[float, dict[str, Any]]:
    started_wall = datetime.now(UTC)
    status, created = _request("POST", f"{base}/api/runs", body or RUN_BODY, token)
    if status != 201:
        raise RuntimeError(f"POST /api/runs answered {status}: {created}")
    run_id = created["runId"]
    state = wait_for_run(base, token, run_id, 0.25)
    finished = datetime.fromisoformat(state["finishedAt"].replace("Z", "+00:00"))
    elapsed = (finished - started_wall).total_seconds()
    if state["status"] != "Success":
        raise RuntimeError(f"the run ended {state['status']}: {state}")
    _, files = _request("GET", f"{base}/api/runs/{run_id}/files", token=token)
    return elapsed, {"state": state, "file": files["files"][0]}


def _with_format(body: dict[str, Any], fmt: str) -> dict[str, Any]:
    """``body`` (a SingleScript run) with ``format`` on its script selection."""
    copy: dict[str, Any] = json.loads(json.dumps(body))
    copy["selection"]["groups"][0]["scripts"][0]["format"] = fmt
    return copy


def _child(
    cmd: list[str], stdout: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, float, str, float]:
    """Run a baseline process: its wall time, its peak RSS (MB), what it printed and its CPU
    time (user + system)."""
    out = stdout.open("wb") if stdout else subprocess.PIPE
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdout=out, env=env)  # noqa: S603
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        printed = proc.stdout.read().decode() if proc.stdout else ""
    finally:
        if stdout:
            out.close()  # type: ignore[union-attr]
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024, printed, usage.ru_utime + usage.ru_stime


# The XLSX baseline: the same rows, fetched into a list first, written by XlsxWriter alone in
# constant-memory mode; only the writing is timed. argv: source, target, then the source's
# arguments (sqlite: file, query; postgres: dsn, query).
_XLSX_BASELINE = """
import asyncio, sqlite3, sys, time, xlsxwriter
source, target, where, query = sys.argv[1:5]
if source == "sqlite":
    conn = sqlite3.connect(where)
    cursor = conn.execute(query)
    header = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
else:
    import asyncpg
    async def fetch():
        conn = await asyncpg.connect(where)
        stmt = await conn.prepare(query)
        return [a.name for a in stmt.get_attributes()], [tuple(r) for r in await stmt.fetch()]
    header, rows = asyncio.run(fetch())
started = time.perf_counter()
book = xlsxwriter.Workbook(target, {"constant_memory": True, "remove_timezone": True,
                                    "strings_to_numbers": False, "strings_to_formulas": False,
                                    "strings_to_urls": False})
sheet, r = None, 1048576
for row in rows:
    if r == 1048576:
        sheet = book.add_worksheet()
        sheet.write_row(0, 0, header)
        r = 1
    sheet.write_row(r, 0, row)
    r += 1
book.close()
print(f"{time.perf_counter() - started:.3f}")
"""


# What Python's sqlite3 module alone costs to fetch the same query's rows (``fetchmany(5000)``,
# thrown away, no formatting): the service's CSV does not go through it (its C reader formats
# the rows), its XLSX does. argv: file, query; prints "wall cpu".
_SQLITE_FETCH = """
import sqlite3, sys, time
where, query = sys.argv[1:3]
conn = sqlite3.connect(where)
wall, cpu = time.perf_counter(), time.process_time()
cursor = conn.execute(query)
while cursor.fetchmany(5000):
    pass
print(f"{time.perf_counter() - wall:.3f} {time.process_time() - cpu:.3f}")
"""


def _sqlite_fetch_floor(database: Path, query: str) -> str:
    """`_SQLITE_FETCH` in a process of its own: the part of the line after the service's."""
    _, _, printed, _ = _child([sys.executable, "-c", _SQLITE_FETCH, str(database), query])
    rows_s, rows_cpu = map(float, printed.split())
    return f"; Python sqlite3 fetch only: {rows_s:.2f} s (CPU {rows_cpu:.2f} s)"


def _xlsx_baseline(source: str, target: Path, where: str, query: str) -> tuple[float, float]:
    _, rss, printed, _ = _child(
        [sys.executable, "-c", _XLSX_BASELINE, source, str(target), where, query]
    )
    return float(printed.strip()), rss


def serve(
    config: Path, data_dir: Path, *, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> AbstractContextManager[tuple[subprocess.Popen[bytes], str]]:
    """``exporter-api serve`` logging warnings only (to ``<data dir>.log``) until the block
    ends; a first start on the demo builds its 2,000,000-row database first."""
    log_path = data_dir.with_name(f"{data_dir.name}.log")
    args = ("--log-level", "warning", *args)
    return exporter_serve(config, data_dir, log_path, args=args, env=env, timeout=120)


def login(base: str, credentials: dict[str, str]) -> str:
    status, login = _request("POST", f"{base}/api/auth/login", credentials)
    if status != 200:
        raise RuntimeError(f"login answered {status}: {login}")
    return str(login["accessToken"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sources", default="postgres,sqlite")
    parser.add_argument("--formats", default="csv,csv.gz,xlsx")
    args = parser.parse_args(argv if argv is not None else [])
    sources = args.sources.split(",")
    formats = args.formats.split(",")

    work = Path(tempfile.mkdtemp(prefix="export-bench-"))
    try:
        if "postgres" in sources:
            with postgres_cluster() as cluster:
                _run(cluster, work, args.rows, args.repeat, formats)
        if "sqlite" in sources:
            _run_sqlite(work, args.repeat, formats)
    finally:
        shutil.rmtree(work, ignore_errors=True)


_LONG_TOKENS = "access_token_ttl_s = 3600"
PG_CREDENTIALS = login_body(ROLE, ROLE_PASSWORD, "db-bench")


def _run(
    cluster: PostgresCluster, work: Path, rows: int, repeat: int, formats: list[str] | None = None
) -> None:
    formats = formats or ["csv"]
    print(f"filling ledger with {rows:,} rows ...", flush=True)
    cluster.psql(f"CREATE DATABASE {DB}")
    cluster.psql(SETUP.replace(":rows", str(rows)), db=DB)
    cluster.psql("VACUUM ANALYZE ledger", db=DB)
    # An XLSX of 2,000,000 rows takes minutes: the bench's token must outlive one run.
    config = write_catalog(work / "catalog", cluster, server=_LONG_TOKENS)
    psql_file = work / "psql.csv"
    psql_times: list[float] = []
    for fmt in formats:
        data_dir = work / f"data-pg-{fmt}"
        with serve(config, data_dir) as (server, base):
            token = login(base, PG_CREDENTIALS)
            idle_rss = rss_bytes(server.pid) / MIB
            body = _with_format(RUN_BODY, fmt)
            times: list[float] = []
            result: dict[str, Any] = {}
            for i in range(repeat if fmt == "csv" else 1):
                if fmt == "csv" or not psql_times:
                    psql_times.append(_psql_copy(cluster, psql_file))
                elapsed, result = _service_export(base, token, body)
                times.append(elapsed)
                print(
                    f"  postgres {fmt} round {i + 1}: psql {psql_times[-1]:.2f} s,"
                    f" service {elapsed:.2f} s",
                    flush=True,
                )
            peak = peak_rss_bytes(server.pid) / MIB
        size = psql_file.stat().st_size
        line, best = _result_line(
            "postgres", fmt, times, result, data_dir, (_pg_dsn(cluster), PSQL_QUERY)
        )
        if fmt != "xlsx":
            base_s = min(psql_times)
            line += (
                f"; psql \\copy best {base_s:.2f} s ({size / 1e6:.1f} MB) -> {base_s / best:.2f}x"
            )
            if fmt == "csv":
                line += f", identical to psql: {_identical(psql_file, result)}"
        print(line + f"; service RSS idle/peak {idle_rss:.0f}/{peak:.0f} MB", flush=True)


def _result_line(
    source: str,
    fmt: str,
    times: list[float],
    result: dict[str, Any],
    data_dir: Path,
    xlsx_from: tuple[str, str],
) -> tuple[str, float]:
    """The start of a result line (the service's best time, rows and size) and that best time;
    for XLSX, with XlsxWriter alone on the same rows (``xlsx_from``: where, query; its file next
    to ``data_dir``) after it."""
    exported = data_dir / "exports" / result["state"]["runId"] / result["file"]["name"]
    best = min(times)
    rows, size = result["file"]["rows"], exported.stat().st_size / 1e6
    line = f"{source} {fmt:6}: service best {best:.2f} s ({rows:,} rows, {size:.1f} MB)"
    if fmt == "xlsx":
        baseline, rss = _xlsx_baseline(source, data_dir.parent / "baseline.xlsx", *xlsx_from)
        line += (
            f"; XlsxWriter alone {baseline:.2f} s -> {baseline / best:.2f}x"
            f" (baseline RSS {rss:.0f} MB, its list of rows included)"
        )
    return line, best


def _identical(baseline: Path, result: dict[str, Any]) -> bool:
    """The baseline's file has the bytes of the service's (by its recorded SHA-256)."""
    return bool(hashlib.sha256(baseline.read_bytes()).hexdigest() == result["file"]["sha256"])


def _pg_dsn(cluster: PostgresCluster) -> str:
    return f"postgresql://{cluster.host}:{cluster.port}/{DB}?user={ROLE}&password={ROLE_PASSWORD}"


DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"
DEMO_BODY = run_body("SingleScript", group("g-big", script("s-ledger")))
# The demo's ledger script as the service runs it: wrapped by the column profile, the user's
# manager and stream inlined.
DEMO_LABELS = [
    ("entry_id", "EntryId"),
    ("manager_id", "Manager"),
    ("stream_id", "Stream"),
    ("account", "Account"),
    ("booked_at", "BookedAt"),
    ("amount", "Amount"),
]


def _demo_query() -> str:
    sql = (DEMO / "sql" / "ledger_v1.sql").read_text("utf-8").strip().rstrip(";")
    sql = sql.replace(":manager_id", "'m1'").replace(":stream_id", "'s1'")
    select = ", ".join(f'"{s}" AS "{label}"' for s, label in DEMO_LABELS)
    return f"SELECT {select} FROM (\n{sql}\n) q"  # noqa: S608 - the demo's own SQL


def _run_sqlite(work: Path, repeat: int, formats: list[str]) -> None:
    """The demo's g-big (2,000,000 rows, the DB-API row path) against ``sqlite3 -csv -header``."""
    query = _demo_query()
    demo = work / "demo" / "exporter.toml"
    shutil.copytree(DEMO, demo.parent)
    text = demo.read_text("utf-8")
    demo.write_text(text.replace("access_token_ttl_s = 300 ", _LONG_TOKENS + " "), "utf-8")
    cli_file = work / "sqlite3.csv"
    cli_times: list[float] = []
    cli_cpu: list[float] = []
    cli_rss = 0.0
    database: Path | None = None
    for fmt in formats:
        data_dir = work / f"data-sqlite-{fmt}"
        if database is not None:  # the demo database is built once (at the first start)
            (data_dir / "demo").mkdir(parents=True)
            shutil.copy(database, data_dir / "demo" / database.name)
        database = data_dir / "demo" / "db-test.sqlite3"
        with serve(demo, data_dir) as (server, base):
            token = login(base, DEMO_LOGIN)
            idle_rss = rss_bytes(server.pid) / MIB
            body = _with_format(DEMO_BODY, fmt)
            times: list[float] = []
            cpu: list[float] = []
            result: dict[str, Any] = {}
            for i in range(repeat if fmt == "csv" else 1):
                if fmt == "csv" or not cli_times:
                    seconds, cli_rss, _, used = _child(
                        ["sqlite3", "-csv", "-header", str(database), query], stdout=cli_file
                    )
                    cli_times.append(seconds)
                    cli_cpu.append(used)
                # The service's CPU time over the run (all its threads): what a busy shared
                # machine disturbs less than the wall time (a service run uses three threads).
                before = cpu_seconds(server.pid)
                elapsed, result = _service_export(base, token, body)
                cpu.append(cpu_seconds(server.pid) - before)
                times.append(elapsed)
                print(
                    f"  sqlite {fmt} round {i + 1}: sqlite3 {cli_times[-1]:.2f} s"
                    f" (CPU {cli_cpu[-1]:.2f} s), service {elapsed:.2f} s (CPU {cpu[-1]:.2f} s)",
                    flush=True,
                )
            peak = peak_rss_bytes(server.pid) / MIB
        line, best = _result_line("sqlite", fmt, times, result, data_dir, (str(database), query))
        if fmt != "xlsx":
            base_s = min(cli_times)
            line += (
                f"; sqlite3 -csv best {base_s:.2f} s (RSS {cli_rss:.0f} MB) -> {base_s / best:.2f}x"
                f"; CPU time best {min(cli_cpu):.2f} s vs {min(cpu):.2f} s"
                f" -> {min(cli_cpu) / min(cpu):.2f}x"
            )
            if fmt == "csv":
                line += f", identical to sqlite3: {_identical(cli_file, result)}"
                line += _sqlite_fetch_floor(database, query)
        print(line + f"; service RSS idle/peak {idle_rss:.0f}/{peak:.0f} MB", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
