"""``exporter-api audit``: the records of a period as CSV or JSON lines, read from the store.

The service may be running: the SQLite store is opened read-only (WAL lets a reader in beside
the writer) without the data directory's lock; PostgreSQL is read like any client.
"""

from __future__ import annotations

import csv
from datetime import UTC
from typing import TextIO

import msgspec

from exporter_api.audit.records import COLUMNS, AuditRecord
from exporter_api.audit.trail import AuditTrail
from exporter_api.store import Store
from exporter_api.timestamps import format_time, parse_time

FORMATS = ("csv", "json")


def parse_moment(text: str) -> str:
    """``2026-01-23``, ``2026-01-23T12:00`` or ``...Z`` / ``+02:00`` -> the store's UTC text.
    A time without an offset is UTC."""
    moment = parse_time(text.strip())
    return format_time(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


# A cell starting with one of these is a formula to Excel and LibreOffice; login names of failed
# logins come from anyone, so the CSV that auditors open must not run them.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _csv_row(record: AuditRecord) -> list[str]:
    details = msgspec.json.encode(record.details).decode()
    return [
        _cell(v)
        for v in (
            record.event_id,
            record.at,
            record.action,
            record.login,
            record.database_id,
            record.client,
            record.run_id or "",
            details,
        )
    ]


async def export_records(
    store: Store,
    out: TextIO,
    *,
    since: str,
    until: str,
    login: str | None = None,
    fmt: str = "csv",
) -> int:
    """Write the records with ``since <= at < until`` to ``out``; returns how many."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    trail = AuditTrail(store)
    count = 0
    writer = None
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
    async for record in trail.query(since, until, login=login):
        if writer is not None:
            writer.writerow(_csv_row(record))
        else:
            out.write(msgspec.json.encode(record).decode() + "\n")
        count += 1
    out.flush()
    return count


__all__ = ["FORMATS", "export_records", "parse_moment"]
