"""Errors of the run domain. They know nothing of HTTP or SignalR: the REST edge
(`exporter_api.runs.api.http_error`) and the hub (`exporter_api.runs.hub`) each map the run
errors in one place.

The export-disk errors are ``ExporterError``s, so the engine turns one raised while a variant is
exported into that variant's ``Failed`` message (their ``detail``); they never carry a path or
an OS message.
"""

from __future__ import annotations

import errno

from exporter_api.errors import ExporterError

DISK_FULL = "the export disk is full"
DISK_UNWRITABLE = "the export disk cannot be written"
DISK_FORBIDDEN = "the service may not write to the export directory"
FILE_WRITTEN_ELSEWHERE = "the file was written by another instance"
PART_REMOVED_ELSEWHERE = "the partial file was removed by an instance that took the run over"

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNWRITABLE = frozenset({errno.EROFS, errno.EIO})
# Ownership or mode of the files directory (or a volume mounted with other ids): an operator's
# fix, so the message says what to look at rather than "internal error (PermissionError)".
_FORBIDDEN = frozenset({errno.EACCES, errno.EPERM})


class ExportDiskError(ExporterError):
    """The files directory cannot take the export (base of the disk errors)."""

    status = 507
    title = "Insufficient Storage"


class ExportDiskFull(ExportDiskError):
    """No space (or quota) left on the files directory's disk."""

    def __init__(self, detail: str = DISK_FULL) -> None:
        super().__init__(detail)


class ExportDiskUnwritable(ExportDiskError):
    """The files directory's disk is read-only or failing (EROFS, EIO), or the service may not
    write there (EACCES, EPERM: ``DISK_FORBIDDEN``)."""

    def __init__(self, detail: str = DISK_UNWRITABLE) -> None:
        super().__init__(detail)


class ExportFileConflict(ExporterError):
    """Another writer of the same file got there first: a cut-off owner still writing after
    its run was taken over (or the new owner, when the old one committed first). The file on
    disk is left as it is; this writer's partial file is removed."""

    status = 409
    title = "Conflict"

    def __init__(self, detail: str = FILE_WRITTEN_ELSEWHERE) -> None:
        super().__init__(detail)


def disk_error(exc: OSError) -> ExportDiskError | None:
    """The domain error for an ``OSError`` of the export disk, or None for any other."""
    if exc.errno in _FULL:
        return ExportDiskFull()
    if exc.errno in _UNWRITABLE:
        return ExportDiskUnwritable()
    if exc.errno in _FORBIDDEN:
        return ExportDiskUnwritable(DISK_FORBIDDEN)
    return None


class RunError(Exception):
    """Base of the run domain's errors; ``detail`` is safe to show to the user."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RunNotFound(RunError):
    """No such run, or not the caller's (the two are never told apart)."""

    def __init__(self, detail: str = "run not found") -> None:
        super().__init__(detail)


class RunAlreadyFinished(RunError):
    """A cancel of a run that has already ended."""

    def __init__(self, status: str) -> None:
        super().__init__(f"run already ended with status {status}")
        self.status = status


class TooManyActiveRuns(RunError):
    """The user already has ``limit`` runs Queued or Running."""

    def __init__(self, limit: int, retry_after_s: int = 5) -> None:
        super().__init__(f"at most {limit} active runs per user; wait for one to finish")
        self.limit = limit
        self.retry_after_s = retry_after_s


class DatabaseNotConfigured(RunError):
    """The user's database is not (or no longer) in the catalog."""

    def __init__(self, database_id: str) -> None:
        super().__init__(f"database {database_id!r} is not configured")
        self.database_id = database_id


def root_cause(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (what a run's task group raised), else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def failure_message(exc: BaseException) -> str:
    """What a run that crashed is reported as: our errors carry a message fit for the user (a
    full state store says so), anything else only its type (its text may hold anything)."""
    cause = root_cause(exc)
    if isinstance(cause, ExporterError) and cause.detail:
        return cause.detail
    return f"internal error ({type(cause).__name__})"


__all__ = [
    "DISK_FORBIDDEN",
    "DISK_FULL",
    "DISK_UNWRITABLE",
    "FILE_WRITTEN_ELSEWHERE",
    "PART_REMOVED_ELSEWHERE",
    "DatabaseNotConfigured",
    "ExportDiskError",
    "ExportDiskFull",
    "ExportDiskUnwritable",
    "ExportFileConflict",
    "RunAlreadyFinished",
    "RunError",
    "RunNotFound",
    "TooManyActiveRuns",
    "disk_error",
    "failure_message",
    "root_cause",
]
