"""The audit trail in the state store (both backends): records, filters, pages, append-only
enforcement, retention purge, the JSON-lines sink and what a failed write does."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from exporter_api.audit import AuditTrail, JsonLinesSink
from exporter_api.audit import trail as trail_module
from exporter_api.audit.export import export_records
from exporter_api.errors import StoreUnavailable
from exporter_api.store import Store, open_store
from tests.exporter_api.runs.tmpfs import mounted_tmpfs


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def _fill(trail: AuditTrail, clock: Clock) -> None:
    for day, login in enumerate(["alice", "bob", "Alice", "carol"]):
        clock.now = START + timedelta(days=day)
        await trail.record(
            "login.succeeded",
            login=login,
            database_id="db",
            client="10.0.0.1",
            details={"day": day},
        )


async def test_records_read_back_by_period_and_login(store: Store) -> None:
    clock = Clock(START)
    trail = AuditTrail(store, now=clock)
    await _fill(trail, clock)
    everything = [r async for r in trail.query("2026-01-01", "2027-01-01")]
    assert [r.login for r in everything] == ["alice", "bob", "Alice", "carol"]
    assert everything[0].at == "2026-03-01T12:00:00.000Z"
    assert everything[0].client == "10.0.0.1"
    assert everything[0].details == {"day": 0}
    window = [r.login async for r in trail.query("2026-03-02T12:00:00.000Z", "2026-03-04")]
    assert window == ["bob", "Alice"]  # since inclusive, until exclusive
    alices = [r.details["day"] async for r in trail.query("2026", "2027", login="ALICE")]
    assert alices == [0, 2]


async def test_query_reads_page_by_page(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trail_module, "_PAGE", 2)
    clock = Clock(START)
    trail = AuditTrail(store, now=clock)
    for i in range(5):  # several records in the same millisecond: ordered by event id
        await trail.record("logout", login=f"u{i}", database_id="db")
    logins = [r.login async for r in trail.query("2026", "2027")]
    assert sorted(logins) == [f"u{i}" for i in range(5)]
    assert len(logins) == 5


async def test_audit_log_refuses_update_and_delete(store: Store) -> None:
    trail = AuditTrail(store, now=Clock(START))
    await trail.record("logout", login="alice", database_id="db")
    refused = (sqlite3.IntegrityError, asyncpg.PostgresError)
    statements = ["UPDATE audit_log SET login = 'mallory'", "DELETE FROM audit_log"]
    if store.backend == "postgres":
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        with pytest.raises(refused, match="append-only"):
            await store.execute(statement)
    assert await store.fetch_all("SELECT login FROM audit_log") == [("alice",)]


async def test_purge_deletes_only_records_past_retention(store: Store) -> None:
    clock = Clock(START)
    trail = AuditTrail(store, retention_days=2, now=clock)
    await _fill(trail, clock)  # days 0..3
    clock.now = START + timedelta(days=4, hours=1)  # cutoff: day 2, 13:00
    assert await trail.purge() == 3
    assert [r.login async for r in trail.query("2026", "2027")] == ["carol"]
    # The gate is closed again: a plain DELETE is still refused.
    with pytest.raises((sqlite3.IntegrityError, asyncpg.PostgresError), match="append-only"):
        await store.execute("DELETE FROM audit_log")
    assert await AuditTrail(store, retention_days=0).purge() == 0  # 0 keeps for ever


async def test_sink_gets_every_record_as_a_json_line(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    sink = JsonLinesSink("audit/trail.jsonl", tmp_path)
    trail = AuditTrail(store, sink=sink, now=Clock(START))
    try:
        async with trail.running():
            await trail.record("logout", login="alice", database_id="db", client="::1")
            await trail.record("run.started", login="bob", database_id="db", run_id="R1")
    finally:
        await store.aclose()
    lines = (tmp_path / "audit" / "trail.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["action"], r["login"], r["run_id"]) for r in records] == [
        ("logout", "alice", None),
        ("run.started", "bob", "R1"),
    ]
    assert records[0]["client"] == "::1"
    assert records[0]["at"] == "2026-03-01T12:00:00.000Z"


def _fill_disk(directory: Path) -> Path:
    """Every free block of ``directory``'s file system taken by one file (removed to free them)."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


@pytest.mark.parametrize("cut_fails", [False, True])
async def test_a_full_disk_never_leaves_a_torn_line_in_the_sink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut_fails: bool
) -> None:
    # A real full disk (tmpfs): the record larger than what is left of the file's last block is
    # written in part by write(2) with no error, then ENOSPC.
    store = await open_store(tmp_path)  # outside the full disk: the store's copy is kept
    sink = JsonLinesSink("audit/trail.jsonl", tmp_path)
    trail = AuditTrail(store, sink=sink, now=Clock(START))
    big = {"note": "x" * 20_000}
    try:
        with mounted_tmpfs(tmp_path / "audit", size="1m") as disk:
            async with trail.running():
                await trail.record("logout", login="alice", database_id="db")
                before = (disk / "trail.jsonl").read_bytes()
                filler = _fill_disk(disk)
                if cut_fails:

                    def refuse(fd: int, size: int) -> None:
                        raise OSError(errno.EIO, "no")

                    monkeypatch.setattr(os, "ftruncate", refuse)
                with capture_logs() as logs:
                    await trail.record("run.started", login="bob", database_id="db", details=big)
                monkeypatch.undo()
                failed = [e for e in logs if e["event"] == "audit_sink_write_failed"]
                assert failed == [
                    {
                        "event": "audit_sink_write_failed",
                        "log_level": "error",
                        "target": "audit/trail.jsonl",
                        "errno": errno.ENOSPC,
                    }
                ]
                if not cut_fails:
                    assert (disk / "trail.jsonl").read_bytes() == before  # cut back
                else:
                    assert "audit_sink_truncate_failed" in [e["event"] for e in logs]
                filler.unlink()  # space returns
                await trail.record("logout", login="carol", database_id="db")
            lines = (disk / "trail.jsonl").read_bytes().splitlines()
        in_store = [r.login async for r in trail.query("2026", "2027")]
    finally:
        await store.aclose()
    assert in_store == ["alice", "bob", "carol"]  # the store's copy is unaffected
    if cut_fails:  # the fragment that could not be cut off is a line of its own
        assert len(lines) == 3
        assert lines[1].startswith(b'{"event_id"')
        with pytest.raises(json.JSONDecodeError):
            json.loads(lines[1])
        del lines[1]
    assert [json.loads(line)["login"] for line in lines] == ["alice", "carol"]


async def test_an_unsaved_record_is_logged_whole_and_counted(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.aclose()  # every write now fails as StoreUnavailable
    failures: list[int] = []
    trail = AuditTrail(store, on_failure=lambda: failures.append(1), now=Clock(START))
    with capture_logs() as logs:
        record = await trail.record("logout", login="alice", database_id="db", client="::1")
    assert failures == [1]
    unsaved = [e for e in logs if e["event"] == "audit_record_unsaved"]
    assert len(unsaved) == 1
    assert unsaved[0]["event_id"] == record.event_id
    assert unsaved[0]["login"] == "alice"
    with pytest.raises(StoreUnavailable):
        await trail.record("download.file", login="alice", database_id="db", required=True)


async def test_csv_export_never_writes_a_formula(store: Store) -> None:
    # A failed login's name comes from anyone; an auditor opens the CSV in Excel.
    trail = AuditTrail(store)
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "plain"]
    for name in hostile:
        await trail.record("login.failed", login=name, database_id="db")
    out = io.StringIO()
    assert await export_records(store, out, since="2000", until="2100", fmt="csv") == 5
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    logins = [row[3] for row in rows[1:]]
    assert logins == ['\'=HYPERLINK("http://x")', "'+1+1", "'-2", "'@SUM(A1)", "plain"]


def test_a_refusal_is_recorded_once_per_window_and_the_memory_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(START)
    trail = AuditTrail(None, now=clock)  # type: ignore[arg-type]  # no store needed here
    assert trail.first_in_window("k", 60)
    assert not trail.first_in_window("k", 60)
    assert trail.first_in_window("other", 60)
    clock.now += timedelta(seconds=61)
    assert trail.first_in_window("k", 60)
    monkeypatch.setattr(trail_module, "_QUIET_KEYS", 3)
    for i in range(10):
        trail.first_in_window(f"key{i}", 60)
    assert len(trail._quiet) == 3
