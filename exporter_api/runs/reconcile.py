"""Reconcile a run's file directory with the files its run recorded in the store.

A process killed while exporting leaves files behind that no store row lists: a ``.part`` it
was writing, or a complete file renamed into place just before the row that records it was
saved (the window between ``FileWriter.commit()`` and the store's save). The reverse happens
too: a recorded file lost from disk (a volume restored from an older snapshot, a manual
clean-up).

Only the instance that takes over a dead owner's run (or records the end of an orphaned run)
calls ``reconcile_run_files``, and only on that run's own directory: a partial file always
belongs to the run and variant writing it, so nothing here may ever touch another run's
directory -- on a volume shared by several instances, that run may be live elsewhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import structlog

from exporter_api.runs.files import PART_SUFFIX

_log = structlog.get_logger("exporter_api.runs.reconcile")

# A run has one file per exported variant; far more entries than this in its directory means
# it is not (only) ours: stop there instead of scanning without end.
MAX_ENTRIES = 10_000
_BATCH = 256  # removals per worker-thread call, so a cancellation is never held up for long


@dataclass(frozen=True)
class Reconciled:
    """What reconciling one run's directory did.

    Attributes:
        partial: ``.part`` files (and workbook scratch directories) removed: writes a dead
            process never finished.
        unrecorded: complete files removed because no store row lists them.
        missing: recorded file names with no file on disk (the caller decides what the run
            shows for them).
        truncated: the directory held more than ``MAX_ENTRIES`` entries and was only partly
            examined.
    """

    partial: tuple[str, ...] = ()
    unrecorded: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    truncated: bool = False

    @property
    def removed(self) -> tuple[str, ...]:
        """Every file name removed, partial or complete."""
        return self.partial + self.unrecorded

    @property
    def clean(self) -> bool:
        """Directory and store agreed already."""
        return not (self.partial or self.unrecorded or self.missing)


def is_partial_name(name: str) -> bool:
    """A ``FileWriter`` temporary name: ``.<final name>.<random>.part`` (and the older
    ``.<final name>.part``). Final names never start with a dot, so a partial name can never
    equal a recorded one."""
    return name.startswith(".") and name.endswith(PART_SUFFIX)


def _list_files(run_dir: Path, limit: int) -> tuple[list[str], bool]:
    """The names of the regular files (and symlinks) directly in ``run_dir`` (blocking)."""
    names: list[str] = []
    try:
        with os.scandir(run_dir) as entries:
            for entry in entries:
                if len(names) >= limit:
                    return names, True
                # Never recurse. The engine's only subdirectories are a workbook's scratch
                # directories, named as partial files (removed whole, see ``_remove``).
                if (
                    entry.is_symlink()
                    or entry.is_file(follow_symlinks=False)
                    or (entry.is_dir(follow_symlinks=False) and is_partial_name(entry.name))
                ):
                    names.append(entry.name)
    except FileNotFoundError:
        pass
    return names, False


def _remove(run_dir: Path, names: list[str]) -> list[str]:
    """Unlink ``names`` in ``run_dir`` (blocking); the names actually removed."""
    removed: list[str] = []
    for name in names:
        path = run_dir / name
        try:
            if path.is_dir() and not path.is_symlink():  # a workbook's scratch directory
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


def _absent(run_dir: Path, names: list[str]) -> list[str]:
    """Those of ``names`` that do not exist in ``run_dir`` (blocking)."""
    return [n for n in names if not os.path.lexists(run_dir / n)]


async def reconcile_run_files(
    run_dir: Path,
    recorded: Collection[str],
    *,
    limiter: anyio.CapacityLimiter | None = None,
    max_entries: int = MAX_ENTRIES,
) -> Reconciled:
    """Make ``run_dir`` hold exactly the run's recorded files, as far as the disk allows.

    Removes ``.part`` files and complete files whose names are not in ``recorded`` (the names
    of the run's files in the store) and reports recorded names missing on disk. Call it only
    for a run no live process writes any more: the one taking over a dead owner's run.

    Args:
        run_dir: the run's directory (``<files root>/<runId>``); absent means no file on disk.
        recorded: names of the run's files as the store lists them.
        limiter: worker-thread slots for the file-system calls; a dedicated limiter of one slot
            when not given (never the shared default pool, which requests use).
        max_entries: stop examining the directory after this many entries.

    Returns:
        What was removed and what is missing.
    """
    limiter = limiter or anyio.CapacityLimiter(1)
    names, truncated = await anyio.to_thread.run_sync(
        _list_files, run_dir, max_entries, limiter=limiter
    )
    wanted = set(recorded)
    stray = [n for n in names if n not in wanted]
    removed: list[str] = []
    for start in range(0, len(stray), _BATCH):
        removed += await anyio.to_thread.run_sync(
            _remove, run_dir, stray[start : start + _BATCH], limiter=limiter
        )
    on_disk = set(names)
    unseen = sorted(n for n in wanted if n not in on_disk)
    if truncated and unseen:  # the listing stopped early: look the rest up one by one
        unseen = await anyio.to_thread.run_sync(_absent, run_dir, unseen, limiter=limiter)
    missing = tuple(unseen)
    result = Reconciled(
        partial=tuple(n for n in removed if is_partial_name(n)),
        unrecorded=tuple(n for n in removed if not is_partial_name(n)),
        missing=missing,
        truncated=truncated,
    )
    if not result.clean or truncated:
        _log.warning(
            "run_files_reconciled",
            run_id=run_dir.name,
            partial_removed=len(result.partial),
            unrecorded_removed=len(result.unrecorded),
            missing=len(result.missing),
            truncated=truncated,
        )
    return result
