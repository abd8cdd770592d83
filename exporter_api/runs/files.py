"""Export files: safe names from the configured template and a streaming, hashing writer.

A file is written under a temporary ``.part`` name in the run's directory and renamed when it is
complete; its sha256 is computed on the way. Disk writes run on a worker thread in batches of
about ``flush_bytes`` so the event loop never blocks and memory stays bounded whatever the size
of the result.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio
import anyio.to_thread

PART_SUFFIX = ".part"
UTF8_BOM = b"\xef\xbb\xbf"
_MAX_NAME_BYTES = 200  # well under the 255-byte limit of common file systems
_WRITEBACK_BYTES = 8 << 20  # start the kernel's writeback every 8 MiB (see FileWriter._flush)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


_FADVISE = hasattr(os, "posix_fadvise")


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
    """An ``ExportSink`` writing one export file.

    Use as ``async with FileWriter(...) as writer``; call ``commit()`` to keep the file. Leaving
    the block without a commit (error, cancellation, zero rows) removes the partial file.
    """

    def __init__(
        self, directory: Path, name: str, *, bom: bool = False, flush_bytes: int = 1 << 20
    ) -> None:
        self.directory = directory
        self.name = name
        self.final_path = directory / name
        self.part_path = directory / f".{name}{PART_SUFFIX}"
        self._bom = bom
        self._flush_bytes = flush_bytes
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._hash = hashlib.sha256()
        self._file: IO[bytes] | None = None
        self._written = 0  # bytes handed to the file
        self._writeback_from = 0
        self.rows = 0
        self.bytes_written = 0  # payload bytes received (BOM included)
        self._committed: WrittenFile | None = None

    async def __aenter__(self) -> FileWriter:
        def _open() -> IO[bytes]:
            self.directory.mkdir(parents=True, exist_ok=True)
            return open(self.part_path, "wb")  # closed in commit/discard

        self._file = await anyio.to_thread.run_sync(_open)
        if self._bom:
            self._buffer(UTF8_BOM)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._committed is None:
            with anyio.CancelScope(shield=True):
                await self.discard()

    def _buffer(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        self.bytes_written += len(chunk)

    async def write(self, chunk: bytes, rows: int) -> None:
        """Append CSV bytes for ``rows`` rows (the provider's ``ExportSink.write``)."""
        self._buffer(chunk)
        self.rows += rows
        if self._pending_size >= self._flush_bytes:
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        self._pending_size = 0
        file, digest = self._file, self._hash
        assert file is not None

        def _write() -> None:
            digest.update(data)
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

        await anyio.to_thread.run_sync(_write)

    async def commit(self) -> WrittenFile:
        """Flush, fsync, close and rename into place."""
        await self._flush()
        file = self._file
        assert file is not None

        def _finish() -> int:
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(self.part_path, self.final_path)
            return self.final_path.stat().st_size

        size = await anyio.to_thread.run_sync(_finish)
        self._file = None
        self._committed = WrittenFile(
            self.final_path, self.name, size, self.rows, self._hash.hexdigest()
        )
        return self._committed

    async def discard(self) -> None:
        """Close and remove the partial file (idempotent)."""
        self._pending.clear()
        file, self._file = self._file, None

        def _remove() -> None:
            if file is not None:
                file.close()
            self.part_path.unlink(missing_ok=True)

        await anyio.to_thread.run_sync(_remove)


def remove_partial_files(directory: Path) -> int:
    """Remove ``.part`` files a dead process left under ``directory`` (blocking: use a thread)."""
    removed = 0
    if not directory.is_dir():
        return 0
    for path in directory.glob(f"*/.*{PART_SUFFIX}"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
