"""The system tests' export database (PostgreSQL) and catalog (TOML + SQL files).

One table, ``ledger``, of 2,000,000 deterministic rows: row ``i`` is
``(i, 'ACC-' || lpad(i % 9973, 6, '0'), (i * 7919) % 1000000)``, so a downloaded CSV can be
checked row by row without a reference file. Every user has a login role of their own with a
password (users log in with their own database account), so a test finds its queries in
``pg_stat_activity`` by ``usename`` and per-user limits never collide between tests.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from tests import bodies
from tests.services import PostgresCluster

EXPORT_DB = "sysexport"
STATE_DB = "sysstate"
LEDGER_ROWS = 2_000_000
HEAD_ROWS = 10_000
EVENTS_ROWS = 20_000
USERS = tuple(f"sys_user{i}" for i in range(1, 13))
HEADER = "EntryId,Account,Amount"


def password(user: str) -> str:
    return f"pw-{user}-Secret"


SETUP = f"""
CREATE TABLE ledger (
    entry_id bigint PRIMARY KEY,
    account  text   NOT NULL,
    amount   bigint NOT NULL
);
INSERT INTO ledger
SELECT i, 'ACC-' || lpad((i % 9973)::text, 6, '0'), (i * 7919) % 1000000
FROM generate_series(1::bigint, {LEDGER_ROWS}) AS i;
"""

GATE_ROW = 1_000_000
GATE_LOCK = 4242
PAUSE = "WITH pause AS MATERIALIZED (SELECT pg_sleep(1.0))\n"
SQL: dict[str, str] = {
    # g-events: three variants in turn, each a second of waiting then 20,000 rows.
    **{
        f"events_v{v}.sql": f"{PAUSE}SELECT l.entry_id, l.account, l.amount\n"
        f"FROM ledger l CROSS JOIN pause\n"
        f"WHERE l.entry_id BETWEEN {(v - 1) * EVENTS_ROWS + 1} AND {v * EVENTS_ROWS};"
        for v in (1, 2, 3)
    },
    # g-big: variant 1 is quick (its file must survive a takeover), variant 2 the whole ledger,
    # slowed by 0.4 s every 100,000 rows (8 s in all) so it lasts through kills and restarts
    # (the export itself streams the 2,000,000 rows in about half a second). No ORDER BY:
    # a sort would hold every row (and every pause) back until the end; the file is checked
    # as a set of rows instead.
    "head_v1.sql": f"SELECT entry_id, account, amount FROM ledger WHERE entry_id <= {HEAD_ROWS};",
    "ledger_v2.sql": "SELECT entry_id, account, amount FROM ledger\n"
    "WHERE CASE WHEN entry_id % 100000 = 0 THEN pg_sleep(0.4) IS NOT NULL ELSE true END;",
    # g-gated: the whole ledger, held after GATE_ROW rows until the test releases the advisory
    # lock GATE_LOCK it holds: however fast the machine, the export is still under way at
    # every restart the test makes. Rows are counted as they come (row_number over the scan,
    # no sort): a synchronized scan may start anywhere in the table. The lock is
    # transaction-scoped: a cancelled attempt lets go of it at once.
    "gated_v2.sql": "SELECT entry_id, account, amount FROM (\n"
    "  SELECT l.entry_id, l.account, l.amount, row_number() OVER () AS n FROM ledger l\n"
    f") t WHERE CASE WHEN n = {GATE_ROW} THEN pg_advisory_xact_lock_shared({GATE_LOCK})::text"
    " IS NOT NULL ELSE true END;",
    # g-slow: rows trickle for hours, a query to cancel.
    "slow_v1.sql": "SELECT g AS entry_id, 'row ' || g AS account, g AS amount\n"
    "FROM generate_series(1, 100000000) AS g CROSS JOIN LATERAL (SELECT pg_sleep(0.001)) AS p;",
}

CATALOG = """
[server]
max_active_runs_per_user = 2
access_token_ttl_s = 900
login_max_failures = 100
trusted_proxies = ["127.0.0.1/32"]
heartbeat_s = 0.5
takeover_after_s = 3.0
max_run_attempts = 6
drain_grace_s = 1.0
{extra_server}

[output]
files_dir = "{files_dir}"
file_name_template = "{{run_id}}_{{script_id}}_v{{variant}}.csv"

[[databases]]
id = "db-pg"
display_name = "PostgreSQL"
provider = "postgres"
dsn = "postgresql://{host}:{port}/{db}"
max_connections = 6
statement_timeout_s = 600

[[managers]]
id = "m1"
display_name = "Manager 1"
streams = [{{ id = "s1", display_name = "Stream 1" }}]

[[columns_profiles]]
id = "ledger_cols"
items = [
    {{ id = "entry_id", label = "EntryId", source = "entry_id" }},
    {{ id = "account", label = "Account", source = "account" }},
    {{ id = "amount", label = "Amount", source = "amount" }},
]

[[groups]]
id = "g-events"
display_name = "Events"
[[groups.scripts]]
id = "s-events"
display_name = "Three slow variants"
execution_lane = 0
columns_profile_id = "ledger_cols"
variants = ["sql/events_v1.sql", "sql/events_v2.sql", "sql/events_v3.sql"]

[[groups]]
id = "g-big"
display_name = "Big ledger"
[[groups.scripts]]
id = "s-ledger"
display_name = "Head, then the whole ledger (2,000,000 rows)"
execution_lane = 0
columns_profile_id = "ledger_cols"
variants = ["sql/head_v1.sql", "sql/ledger_v2.sql"]

[[groups]]
id = "g-gated"
display_name = "Gated ledger"
[[groups.scripts]]
id = "s-gated"
display_name = "Head, then the whole ledger, held halfway until released"
execution_lane = 0
columns_profile_id = "ledger_cols"
variants = ["sql/head_v1.sql", "sql/gated_v2.sql"]

[[groups]]
id = "g-slow"
display_name = "Slow"
[[groups.scripts]]
id = "s-slow"
display_name = "A query to cancel"
execution_lane = 0
columns_profile_id = "ledger_cols"
variants = ["sql/slow_v1.sql"]
"""

SCRIPTS = {
    "g-events": "s-events",
    "g-big": "s-ledger",
    "g-gated": "s-gated",
    "g-slow": "s-slow",
}


def run_body(group_id: str) -> dict[str, object]:
    """``POST /api/runs`` for the one script of ``group_id``, every column."""
    return bodies.run_body("SingleGroup", bodies.group(group_id, bodies.script(SCRIPTS[group_id])))


def create_export_database(pg: PostgresCluster) -> None:
    pg.psql(f"CREATE DATABASE {EXPORT_DB}")
    pg.psql(f"CREATE DATABASE {STATE_DB}")
    # Seq scans of a big table may start mid-table when another one is under way; keep the
    # physical order so two exports of one query look alike (the checks do not depend on it).
    pg.psql(f"ALTER DATABASE {EXPORT_DB} SET synchronize_seqscans = off")
    pg.psql(SETUP, db=EXPORT_DB)
    for user in USERS:
        pg.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{password(user)}'")
        pg.psql(f"GRANT SELECT ON ledger TO {user}", db=EXPORT_DB)


def write_catalog(
    directory: Path, pg: PostgresCluster, files_dir: Path, extra_server: str = ""
) -> Path:
    """The catalog and its SQL files in ``directory``; ``extra_server`` goes under [server]."""
    (directory / "sql").mkdir(parents=True, exist_ok=True)
    for name, sql in SQL.items():
        (directory / "sql" / name).write_text(sql, encoding="utf-8")
    path = directory / "exporter.toml"
    path.write_text(
        CATALOG.format(
            files_dir=files_dir,
            host=pg.host,
            port=pg.port,
            db=EXPORT_DB,
            extra_server=extra_server,
        ),
        encoding="utf-8",
    )
    return path


def events_ids(variant: int) -> range:
    return range((variant - 1) * EVENTS_ROWS + 1, variant * EVENTS_ROWS + 1)


def ledger_row(i: int) -> str:
    return f"{i},ACC-{i % 9973:06d},{(i * 7919) % 1000000}"


def check_rows(data: bytes, ids: range) -> None:
    """``data`` is the CSV of exactly the ledger rows ``ids`` (any order), each row intact."""
    lines = data.decode("utf-8").split("\n")
    assert lines[0].rstrip("\r") == HEADER, lines[0]
    assert lines[-1] == "", "the file does not end with a line break"
    rows = lines[1:-1]
    assert len(rows) == len(ids), f"{len(rows)} rows instead of {len(ids)}"
    seen = bytearray(ids.stop)
    for line in rows:
        entry = int(line.split(",", 1)[0])
        assert entry in ids, f"unexpected row {line!r}"
        assert not seen[entry], f"repeated row {line!r}"
        seen[entry] = 1
        assert line.rstrip("\r") == ledger_row(entry), f"damaged row {line!r}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}
