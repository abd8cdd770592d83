"""Export files: safe names from the configured template and a streaming, hashing writer.

A file is written under a temporary name of its own in the run's directory
(``.<name>.<random>.part``) and moved into place when it is complete; its sha256 is computed on
the way. The data is fsynced before the move and the directory after it (and the parent of a
directory just made), so a file the store records survives a power loss. Moving never
overwrites: a final name that exists already (an owner cut off from the store still writing
after its run was taken over, racing the new owner) fails that commit with
``ExportFileConflict`` and leaves the file on disk as it was (the run's owner then commits
under the next free name: see ``RunExecutor``). The data is written by the output of a
variant (`writers.output.VariantOutput`) on a worker thread of its own, batch by batch, so the
event loop never blocks and memory stays bounded whatever the size of the result.

Files and directories are created with the configured ``[output] file_mode`` / ``dir_mode``
(private to the service's user by default) whatever the process umask. A full or unwritable disk
raises ``ExportDiskFull`` / ``ExportDiskUnwritable`` (the variant's message) and the partial file
is removed. A partial file belongs to the writer of its run and variant: nothing else removes
it while that writer lives (see ``reconcile.reconcile_run_files`` for runs whose owner died).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

import anyio
import anyio.to_thread
import structlog

from exporter_api.runs.errors import (
    FILE_WRITTEN_ELSEWHERE,
    PART_REMOVED_ELSEWHERE,
    ExportFileConflict,
    disk_error,
)

if TYPE_CHECKING:
    from exporter_api.config import OutputConfig

_log = structlog.get_logger("exporter_api.runs.files")
_T = TypeVar("_T")

PART_SUFFIX = ".part"
UTF8_BOM = b"\xef\xbb\xbf"
_MAX_NAME_BYTES = 200  # well under the 255-byte limit of common file systems
_WRITEBACK_BYTES = 8 << 20  # start the kernel's writeback every 8 MiB (see FileWriter._flush)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


_FADVISE = hasattr(os, "posix_fadvise")
# O_EXCL (which also refuses a symlink): a partial file is always new, never another writer's
# or a symlink planted under the files directory.
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
# link() errors of file systems without hard links (SMB/CIFS without unix extensions, some FUSE
# volumes): the commit falls back to a rename there.
_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}
)
DEFAULT_FILE_MODE = 0o600
DEFAULT_DIR_MODE = 0o700


def files_root(data_dir: Path, output: OutputConfig) -> Path:
    """Where runs keep their files (``<root>/<runId>/``): ``[output] files_dir``, relative to
    the data directory unless absolute; empty means ``<data dir>/exports``.

    The directory may be a volume every instance mounts: a run's directory is written only by
    the instance driving the run, and cleaned up only by one taking over a dead owner's run."""
    if not output.files_dir:
        return data_dir / "exports"
    configured = Path(output.files_dir)
    return configured if configured.is_absolute() else data_dir / configured


def make_dirs(directory: Path, mode: int) -> list[Path]:
    """Create ``directory`` and its missing parents with exactly ``mode`` (blocking); the
    directories created here, outermost first.

    Only directories created here get ``mode``: an existing one (a shared volume's root, a run
    directory another lane made first) is left as it is."""
    missing: list[Path] = []
    path = directory
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    created: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir(mode=mode)
        except FileExistsError:  # another lane or instance made it meanwhile
            continue
        os.chmod(path, mode)  # mkdir's mode is filtered by the umask; the configured one is not
        created.append(path)
    return created


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` durable (blocking): a file linked or a directory made
    in it survives a power loss only once its parent directory is synced too."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_call(fn: Callable[[], _T]) -> _T:
    """Run blocking file work, turning a full or failing disk into the domain error."""
    try:
        return fn()
    except OSError as exc:
        error = disk_error(exc)
        if error is None:
            raise
        raise error from None


def _publish(part: Path, final: Path) -> None:
    """Give the complete ``part`` its ``final`` name, never replacing a file (blocking)."""
    try:
        os.link(part, final)
    except FileExistsError:
        raise ExportFileConflict(FILE_WRITTEN_ELSEWHERE) from None
    except FileNotFoundError:
        # Our partial file is gone: the instance that took the run over removed it.
        raise ExportFileConflict(PART_REMOVED_ELSEWHERE) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # No hard links on this volume (SMB without unix extensions): rename, which replaces,
        # after checking the name is free. Two writers can still both pass the check; the
        # window is the few microseconds between the two calls, not a whole export.
        if os.path.lexists(final):
            raise ExportFileConflict(FILE_WRITTEN_ELSEWHERE) from None
        try:
            os.rename(part, final)
        except FileNotFoundError:
            raise ExportFileConflict(PART_REMOVED_ELSEWHERE) from None
        return
    try:
        part.unlink()
    except OSError as exc:  # the file is in place; the stray link is reconciled as partial
        _log.warning("partial_file_not_removed", run_id=part.parent.name, errno=exc.errno)


class _StrictFields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def safe_file_name(name: str) -> str:
    """A single path component: no separators, control or reserved characters, no leading dots,
    NFC-normalised, at most 200 bytes in UTF-8 (Cyrillic and other letters are kept)."""
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE.sub("_", name).strip().lstrip(".")
    if not name:
        name = "export.csv"
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 10:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    while len((stem + suffix).encode("utf-8")) > _MAX_NAME_BYTES and stem:
        stem = stem[:-1]
    return (stem or "export") + suffix


def render_file_name(template: str, fields: dict[str, str]) -> str:
    """Fill the template with ``fields`` (ids, ``group_name``, ``script_name``, ``date``,
    ``time``, ...; unknown placeholders fall back to the default template's shape) and make the
    result safe."""
    # Each value is made safe on its own first: a display name such as "Sales/2026" or "../x"
    # stays inside its own placeholder and can never add a path separator.
    values = _StrictFields({k: _UNSAFE.sub("_", v) for k, v in fields.items()})
    try:
        rendered = template.format_map(values)
    except (KeyError, ValueError, IndexError, AttributeError):
        rendered = "{run_id}_{group_id}_{script_id}_v{variant}.csv".format_map(values)
    return safe_file_name(rendered)


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``stem (2).ext`` ... when a file of this run already uses it.

    ``taken`` holds the run's names so far, case-folded (a run's directory is its own and only
    gets names from here, so no file system look-up is needed -- and case-insensitive file
    systems cannot make two names collide either)."""
    candidate = name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    n = 2
    while candidate.casefold() in taken:
        candidate = f"{stem} ({n}).{ext}" if ext else f"{stem} ({n})"
        n += 1
    taken.add(candidate.casefold())
    return candidate


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    name: str
    size_bytes: int
    rows: int
    sha256: str


class FileWriter:
    """One export file, written under a partial name of its own and committed into place.

    The blocking steps (``open_sync``, ``write_sync``, ``seal_sync``, ``discard_sync``) run on
    the worker thread of the `VariantOutput` that owns the writer; ``commit()`` keeps the file,
    and the output discards every part it did not commit (error, cancellation, zero rows).
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        file_mode: int = DEFAULT_FILE_MODE,
        dir_mode: int = DEFAULT_DIR_MODE,
    ) -> None:
        self.directory = directory
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self.name = name
        self.final_path = directory / name
        # One name per writer: an old owner still alive at a takeover and the new owner never
        # write (or remove) the same partial file.
        self.part_path = directory / f".{name}.{secrets.token_hex(8)}{PART_SUFFIX}"
        self._hash = hashlib.sha256()
        self._file: IO[bytes] | None = None
        self._written = 0  # bytes handed to the file
        self._writeback_from = 0
        self.rows = 0
        self.bytes_written = 0  # payload bytes received (BOM included; before compression)
        self._size: int | None = None  # once the data is complete and synced
        self._committed: WrittenFile | None = None

    def open_sync(self) -> None:
        """Create the partial file (blocking; the worker thread of a `VariantOutput`)."""
        for created in make_dirs(self.directory, self.dir_mode):
            fsync_dir(created.parent)  # the new directory's own entry
        fd = os.open(self.part_path, _OPEN_FLAGS, self.file_mode)
        try:
            os.fchmod(fd, self.file_mode)  # open's mode is filtered by the umask
            self._file = os.fdopen(fd, "wb")  # closed in commit/discard
        except BaseException:
            os.close(fd)
            self.part_path.unlink(missing_ok=True)
            raise

    @property
    def file(self) -> IO[bytes]:
        """The open partial file (for a writer of its own, such as XlsxWriter's ZIP)."""
        assert self._file is not None
        return self._file

    def write_sync(self, data: bytes) -> None:
        """Hash and write ``data`` now (blocking: a worker thread)."""
        file = self._file
        assert file is not None
        self._hash.update(data)
        file.write(data)
        self._written += len(data)
        if self._written - self._writeback_from >= _WRITEBACK_BYTES and _FADVISE:
            # Ask the kernel to start writing what we have so far (without waiting): the
            # fsync at commit then has little left to do, and the page cache stays small.
            file.flush()
            os.posix_fadvise(
                file.fileno(),
                self._writeback_from,
                self._written - self._writeback_from,
                os.POSIX_FADV_DONTNEED,
            )
            self._writeback_from = self._written

    def rehash_sync(self) -> None:
        """Hash the file as it is on disk (blocking): for content another writer put there
        with seeks (a ZIP), not through :meth:`write_sync`."""
        file = self._file
        assert file is not None
        file.flush()
        digest = hashlib.sha256()
        with open(self.part_path, "rb") as copy:
            while block := copy.read(1 << 20):
                digest.update(block)
        self._hash = digest
        self._written = self.bytes_written = os.fstat(file.fileno()).st_size

    @property
    def committed(self) -> bool:
        return self._committed is not None

    @property
    def size(self) -> int:
        """Bytes in the file so far (all of it once sealed)."""
        return self._size if self._size is not None else self._written

    def seal_sync(self) -> None:
        """Flush, fsync and close the complete partial file (blocking); commit links it."""
        if self._size is not None:
            return
        file = self._file
        assert file is not None
        file.flush()
        os.fsync(file.fileno())
        self._size = os.fstat(file.fileno()).st_size
        file.close()
        self._file = None

    def rename(self, name: str) -> None:
        """Commit under ``name`` instead (after ``commit()`` met a final name in place)."""
        if self._committed is not None:
            raise RuntimeError("the file is committed already")
        self.name = name
        self.final_path = self.directory / name

    async def commit(self) -> WrittenFile:
        """Flush, fsync, close and link into place; after an ``ExportFileConflict`` for a name
        in place, ``rename()`` and ``commit()`` again (the data is kept)."""
        if self._size is None:
            await anyio.to_thread.run_sync(disk_call, self.seal_sync)
        assert self._size is not None
        final = self.final_path

        def _finish() -> None:
            # Once the final name exists, only its durability is left: the store records the
            # file next, so its directory entry must survive a power loss as well as its data.
            _publish(self.part_path, final)
            try:
                fsync_dir(self.directory)
            except BaseException:
                # Not durable, so not committed: the name goes, the variant fails.
                with contextlib.suppress(OSError):
                    final.unlink()
                raise

        await anyio.to_thread.run_sync(disk_call, _finish)
        self._committed = WrittenFile(
            final, self.name, self._size, self.rows, self._hash.hexdigest()
        )
        return self._committed

    def discard_sync(self) -> None:
        """Close and remove the partial file (blocking; idempotent)."""
        file, self._file = self._file, None
        if file is not None:
            # Closing flushes what is still buffered, which fails on a full disk; the
            # descriptor is closed either way and the data is not wanted.
            with contextlib.suppress(OSError):
                file.close()
        try:
            self.part_path.unlink(missing_ok=True)
        except OSError as exc:  # a read-only or failing disk: the run's cleanup gets it later
            _log.warning("partial_file_not_removed", run_id=self.directory.name, errno=exc.errno)
