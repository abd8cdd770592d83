"""Errors of the export files: what a user can act on when the export disk fails.

They are ``ExporterError``s, so the engine turns one raised while a variant is exported into
that variant's ``Failed`` message (their ``detail``); they never carry a path or an OS message.
"""

from __future__ import annotations

import errno

from exporter_api.errors import ExporterError

DISK_FULL = "the export disk is full"
DISK_UNWRITABLE = "the export disk cannot be written"

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNWRITABLE = frozenset({errno.EROFS, errno.EIO})


class ExportDiskError(ExporterError):
    """The files directory cannot take the export (base of the disk errors)."""

    status = 507
    title = "Insufficient Storage"


class ExportDiskFull(ExportDiskError):
    """No space (or quota) left on the files directory's disk."""

    def __init__(self, detail: str = DISK_FULL) -> None:
        super().__init__(detail)


class ExportDiskUnwritable(ExportDiskError):
    """The files directory's disk is read-only or failing (EROFS, EIO)."""

    def __init__(self, detail: str = DISK_UNWRITABLE) -> None:
        super().__init__(detail)


def disk_error(exc: OSError) -> ExportDiskError | None:
    """The domain error for an ``OSError`` of the export disk, or None for any other."""
    if exc.errno in _FULL:
        return ExportDiskFull()
    if exc.errno in _UNWRITABLE:
        return ExportDiskUnwritable()
    return None
