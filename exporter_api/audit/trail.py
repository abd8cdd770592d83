"""The audit trail: append-only records in the state store, and an optional JSON-lines sink.

Theory of operation
-------------------
`AuditTrail.record` writes one row of ``audit_log`` (migration 0006) and, when a sink is
configured (``[audit] sink``: ``stdout`` or a file), the same record as one JSON line for a SIEM.
The store refuses UPDATE and DELETE of ``audit_log`` (triggers); the one way to delete is the
retention purge (`purge`), which opens the gate for the records older than its cutoff inside its
own transaction (SQLite: ``audit_purge_gate``; PostgreSQL: the ``audit_purge()`` function).
Retention of records (``[audit] retention_days``) is independent of the runs': there is no
foreign key from ``audit_log`` to ``runs``, so deleting a run and its files keeps its records.

What happens when the store cannot take a record: the request it describes has usually already
taken effect (a run started, a session revoked), so ``record`` does not undo it; the record is
then logged whole (``audit_record_unsaved``, error level: the log stream keeps it) and counted
(``exporter_audit_write_failures``). Where nothing has happened yet -- a download, before its
first byte -- the caller passes ``required=True`` and the request fails (503) instead.

What happens when the sink cannot take a record (a full disk): the request goes on and the
store's copy is kept; the failure is logged (``audit_sink_write_failed``, its target and errno)
and whatever part of the line reached the file is cut off again, so the file stays whole JSON
lines and the next record, once there is space, is a line of its own.
"""

from __future__ import annotations

import errno
import os
import sys
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
import msgspec
import structlog
from ulid import ULID

from exporter_api.audit.records import AuditRecord
from exporter_api.errors import StoreUnavailable
from exporter_api.store.base import Store
from exporter_api.timestamps import format_time as _iso

_log = structlog.get_logger("exporter_api.audit")

_WRITE_TIMEOUT_S = 10.0  # a record's store write, shielded from the request's cancellation
_PAGE = 500  # rows read at a time by `query`
_encoder = msgspec.json.Encoder()


class MonotonicIds:
    """ULIDs that also sort in the order they were made within one process: records written
    in the same millisecond (a failed login and the lock-out it caused) keep their order."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> str:
        # python-ulid is monotonic within a millisecond; this also when the clock steps back.
        value = max(int(ULID()), self._last + 1)
        self._last = value
        return str(ULID.from_int(value))


class JsonLinesSink:
    """Records as JSON lines on stdout or appended to a file (opened by `AuditTrail.running`).

    Each line is written and flushed in a worker thread; writes are serialised, so lines never
    interleave, and a slow disk slows the recording request rather than growing a queue.
    """

    def __init__(self, target: str, base_dir: Path) -> None:
        self.target = target
        self.path = None if target == "stdout" else (base_dir / target)
        self._file: BinaryIO | None = None
        self._lock = anyio.Lock()
        self._torn = False  # a failed write's fragment could not be cut off

    async def open(self) -> None:
        if self.path is None:
            self._file = sys.stdout.buffer
            return
        path = self.path

        def open_file() -> BinaryIO:
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("ab", buffering=0)

        self._file = await anyio.to_thread.run_sync(open_file)

    async def aclose(self) -> None:
        file, self._file = self._file, None
        if file is not None and self.path is not None:
            await anyio.to_thread.run_sync(file.close)

    async def write(self, record: AuditRecord) -> None:
        """Append ``record`` as one whole line, or raise `OSError` leaving the file as it was.

        The file is unbuffered, so one ``write`` may take only part of the line (a disk that
        fills up): the rest is written in a loop. When a write fails, what went out of the line
        is cut off again (the file is truncated back to its previous end), so a record written
        once space returns starts a line of its own: the file stays whole JSON lines.
        """
        file = self._file
        if file is None:
            return
        line = _encoder.encode(record) + b"\n"
        is_file = self.path is not None

        def write() -> None:
            data = b"\n" + line if self._torn else line  # end a fragment left by a failed cut
            start = os.fstat(file.fileno()).st_size if is_file else 0
            try:
                _write_all(file, data)
            except OSError:
                if is_file:
                    self._cut_back(file, start)
                raise
            self._torn = False

        async with self._lock:
            await anyio.to_thread.run_sync(write)

    def _cut_back(self, file: BinaryIO, size: int) -> None:
        """Truncate the sink file back to ``size`` after a failed write (in the worker thread)."""
        try:
            os.ftruncate(file.fileno(), size)
        except OSError as exc:
            # The fragment stays: the next record starts on a new line after it.
            self._torn = True
            _log.error("audit_sink_truncate_failed", target=self.target, errno=exc.errno)


def _write_all(file: BinaryIO, data: bytes) -> None:
    """``data`` written whole: an unbuffered file's ``write`` may take only part of it."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:  # nothing taken (and no error): do not spin
            raise OSError(errno.EIO, "the audit sink took no bytes")
        view = view[written:]
    file.flush()


_QUIET_KEYS = 10_000


class AuditTrail:
    def __init__(
        self,
        store: Store,
        *,
        retention_days: int = 0,
        sink: JsonLinesSink | None = None,
        on_failure: Callable[[], None] | None = None,
        new_id: Callable[[], str] | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self.sink = sink
        self._on_failure = on_failure
        self._new_id = new_id or MonotonicIds()
        self._now = now or (lambda: datetime.now(UTC))
        # Refusals already recorded: key -> until when another one is not recorded again.
        self._quiet: OrderedDict[str, datetime] = OrderedDict()

    def first_in_window(self, key: str, window_s: float) -> bool:
        """True for the first refusal of ``key`` in ``window_s`` (per process): a client
        hammering a locked login leaves one record per lock-out, not one per request.
        Bounded to the most recent ``_QUIET_KEYS`` keys."""
        now = self._now()
        until = self._quiet.get(key)
        if until is not None and until > now:
            return False
        self._quiet[key] = now + timedelta(seconds=max(window_s, 1.0))
        self._quiet.move_to_end(key)
        while len(self._quiet) > _QUIET_KEYS:
            self._quiet.popitem(last=False)
        return True

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the sink for as long as the app runs."""
        if self.sink is not None:
            await self.sink.open()
        try:
            yield
        finally:
            if self.sink is not None:
                with anyio.CancelScope(shield=True):
                    await self.sink.aclose()

    async def record(
        self,
        action: str,
        *,
        login: str,
        database_id: str,
        client: str = "",
        run_id: str | None = None,
        details: dict[str, Any] | None = None,
        required: bool = False,
    ) -> AuditRecord:
        """Append one record (see the module's docstring for what a failed write does)."""
        record = AuditRecord(
            event_id=self._new_id(),
            at=_iso(self._now()),
            action=action,
            login=login,
            database_id=database_id,
            client=client,
            run_id=run_id,
            details=details or {},
        )
        saved = False
        with anyio.move_on_after(_WRITE_TIMEOUT_S, shield=True):
            try:
                await self.store.execute(
                    "INSERT INTO audit_log (event_id, at, action, login, database_id, client,"
                    " run_id, details) VALUES (:event_id, :at, :action, :login, :database_id,"
                    " :client, :run_id, :details)",
                    {
                        "event_id": record.event_id,
                        "at": record.at,
                        "action": record.action,
                        "login": record.login,
                        "database_id": record.database_id,
                        "client": record.client,
                        "run_id": record.run_id,
                        "details": _encoder.encode(record.details).decode(),
                    },
                )
                saved = True
            except StoreUnavailable:
                pass
        if self.sink is not None:
            try:
                with anyio.CancelScope(shield=True):
                    await self.sink.write(record)
            except OSError as exc:
                _log.error("audit_sink_write_failed", target=self.sink.target, errno=exc.errno)
        if not saved:
            if self._on_failure is not None:
                self._on_failure()
            _log.error("audit_record_unsaved", **msgspec.structs.asdict(record))
            if required:
                raise StoreUnavailable()
        return record

    async def query(
        self, since: str, until: str, *, login: str | None = None
    ) -> AsyncIterator[AuditRecord]:
        """Records with ``since <= at < until`` (ISO-8601 UTC text), oldest first, read a page
        at a time; ``login`` compares case-insensitively."""
        after_at, after_id = "", ""
        who = "" if login is None else " AND lower(login) = lower(:login)"
        while True:
            rows = await self.store.fetch_all(
                "SELECT event_id, at, action, login, database_id, client, run_id, details"  # noqa: S608 - no user input
                " FROM audit_log WHERE at >= :since AND at < :until"
                " AND (at > :after_at OR (at = :after_at AND event_id > :after_id))"
                f"{who} ORDER BY at, event_id LIMIT {_PAGE}",
                {
                    "since": since,
                    "until": until,
                    "after_at": after_at,
                    "after_id": after_id,
                    **({} if login is None else {"login": login}),
                },
            )
            for row in rows:
                yield AuditRecord(
                    event_id=row[0],
                    at=row[1],
                    action=row[2],
                    login=row[3],
                    database_id=row[4],
                    client=row[5],
                    run_id=row[6],
                    details=msgspec.json.decode(row[7]),
                )
            if len(rows) < _PAGE:
                return
            after_at, after_id = rows[-1][1], rows[-1][0]

    async def purge(self) -> int:
        """Delete the records older than ``retention_days`` (0: keep them for ever)."""
        if self.retention_days <= 0:
            return 0
        cutoff = _iso(self._now() - timedelta(days=self.retention_days))
        with self.store.maintenance():  # the first purge after a long while may be large
            purged = await self._purge_before(cutoff)
        if purged:
            _log.info("audit_records_purged", count=purged, before=cutoff)
        return purged

    async def _purge_before(self, cutoff: str) -> int:
        if self.store.backend == "postgres":
            row = await self.store.fetch_one("SELECT audit_purge(:cutoff)", {"cutoff": cutoff})
            purged = int(row[0]) if row is not None else 0
        else:
            async with self.store.transaction():
                await self.store.execute(
                    "UPDATE audit_purge_gate SET cutoff = :cutoff WHERE id = 1", {"cutoff": cutoff}
                )
                purged = await self.store.execute(
                    "DELETE FROM audit_log WHERE at < :cutoff", {"cutoff": cutoff}
                )
                await self.store.execute("UPDATE audit_purge_gate SET cutoff = '' WHERE id = 1")
        return purged

    async def purge_loop(self, every_s: float = 3600.0) -> None:
        while True:
            try:
                await self.purge()
            except Exception as exc:  # the store may be briefly unavailable: next round
                _log.warning("audit_purge_failed", error_type=type(exc).__name__)
            await anyio.sleep(every_s)


__all__ = ["AuditTrail", "JsonLinesSink", "MonotonicIds"]
