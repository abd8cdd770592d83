"""A streaming ZIP writer with no I/O: it is fed file data and returns the bytes to send.

Theory of operation
-------------------
An archive is written front to back, never seeking, so it can go straight to a socket:

    begin(name, ...)  -> local file header (sizes and CRC unknown yet: flag bit 3)
    feed(data)        -> deflated bytes (may be empty while zlib buffers)
    end()             -> the rest of the deflate stream + a data descriptor (CRC, sizes)
    ... more members ...
    finish()          -> central directory + (ZIP64 end record + locator) + end record

Names are UTF-8 (flag bit 11). A member is written in ZIP64 form when its size hint could
reach the 32-bit limit once deflated (the local header then carries a ZIP64 extra field and the
data descriptor 8-byte sizes, as APPNOTE 4.3.9 asks). Offsets, sizes and counts that do not fit
the central directory's 32/16-bit fields go to ZIP64 extra fields and the ZIP64 end record.

The writer holds no buffer of its own beyond zlib's window: memory stays flat whatever the
archive's size. It is not thread-safe; one caller drives it at a time (it may be a worker
thread for `feed`, since deflate is CPU work).
"""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass

__all__ = ["ZIP64_LIMIT", "ZipError", "ZipWriter", "compress_bound"]

ZIP64_LIMIT = 0xFFFFFFFF
"""Sizes and offsets at or above this value need ZIP64 fields."""
_MAX_ENTRIES = 0xFFFF
_DEFLATED = 8
_FLAGS = 0x0008 | 0x0800  # sizes in a data descriptor; names in UTF-8
_VERSION_DEFLATE = 20
_VERSION_ZIP64 = 45
_MADE_BY = (3 << 8) | _VERSION_ZIP64  # Unix: external attributes are a st_mode
_FILE_MODE = 0o100644 << 16

_LOCAL = struct.Struct("<4sHHHHHLLLHH")
_CENTRAL = struct.Struct("<4sHHHHHHLLLHHHHHLL")
_DESCRIPTOR32 = struct.Struct("<4sLLL")
_DESCRIPTOR64 = struct.Struct("<4sLQQ")
_END = struct.Struct("<4sHHHHLLH")
_END64 = struct.Struct("<4sQHHLLQQQQ")
_LOCATOR64 = struct.Struct("<4sLQL")
_EXTRA_HEADER = struct.Struct("<HH")
_ZIP64_EXTRA_ID = 0x0001


class ZipError(Exception):
    """The writer was misused, or a member outgrew the size it was announced with."""


def compress_bound(size: int) -> int:
    """The most bytes deflate can produce for ``size`` input bytes (zlib's compressBound)."""
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 13


def dos_datetime(mtime: float) -> tuple[int, int]:
    """(time, date) in MS-DOS form, local time, clamped to the range it can express."""
    tm = time.localtime(mtime)
    if tm.tm_year < 1980:
        return 0, (0 << 9) | (1 << 5) | 1
    if tm.tm_year > 2107:
        return (23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31
    dos_time = (tm.tm_hour << 11) | (tm.tm_min << 5) | (tm.tm_sec // 2)
    dos_date = ((tm.tm_year - 1980) << 9) | (tm.tm_mon << 5) | tm.tm_mday
    return dos_time, dos_date


@dataclass
class Entry:
    """One member as the central directory records it."""

    name: bytes
    dos_time: int
    dos_date: int
    offset: int
    zip64: bool  # written in ZIP64 form (local header extra, 8-byte data descriptor)
    crc: int = 0
    compressed_size: int = 0
    size: int = 0


def central_record(entry: Entry, limit: int = ZIP64_LIMIT) -> bytes:
    """The central directory header of ``entry`` (a ZIP64 extra for what exceeds ``limit``)."""
    extra = b""
    size, compressed, offset = entry.size, entry.compressed_size, entry.offset
    if entry.zip64 or size >= limit or compressed >= limit:
        extra += struct.pack("<QQ", size, compressed)
        size = compressed = ZIP64_LIMIT
    if offset >= limit:
        extra += struct.pack("<Q", offset)
        offset = ZIP64_LIMIT
    if extra:
        extra = _EXTRA_HEADER.pack(_ZIP64_EXTRA_ID, len(extra)) + extra
    version = _VERSION_ZIP64 if extra else _VERSION_DEFLATE
    header = _CENTRAL.pack(
        b"PK\x01\x02",
        _MADE_BY,
        version,
        _FLAGS,
        _DEFLATED,
        entry.dos_time,
        entry.dos_date,
        entry.crc,
        compressed,
        size,
        len(entry.name),
        len(extra),
        0,  # comment length
        0,  # disk number
        0,  # internal attributes
        _FILE_MODE,
        offset,
    )
    return header + entry.name + extra


def end_records(count: int, cd_offset: int, cd_size: int, limit: int = ZIP64_LIMIT) -> bytes:
    """The end of the archive for a central directory of ``count`` entries written at
    ``cd_offset`` (``cd_size`` bytes long): ZIP64 end record and locator when needed."""
    out = b""
    zip64 = count >= _MAX_ENTRIES or cd_offset >= limit or cd_size >= limit
    if zip64:
        end64_offset = cd_offset + cd_size
        out += _END64.pack(
            b"PK\x06\x06",
            _END64.size - 12,  # size of the rest of the record
            _MADE_BY,
            _VERSION_ZIP64,
            0,
            0,
            count,
            count,
            cd_size,
            cd_offset,
        )
        out += _LOCATOR64.pack(b"PK\x06\x07", 0, end64_offset, 1)
    small_count = min(count, _MAX_ENTRIES)
    out += _END.pack(
        b"PK\x05\x06",
        0,
        0,
        small_count,
        small_count,
        ZIP64_LIMIT if cd_size >= limit else cd_size,
        ZIP64_LIMIT if cd_offset >= limit else cd_offset,
        0,
    )
    return out


class ZipWriter:
    """Writes one ZIP archive, member after member; every method returns the bytes to send.

    Args:
        compress_level: deflate level (1 is fast and still shrinks CSV several times).
        zip64_limit: sizes and offsets at or above it use ZIP64 fields. Only tests lower it,
            to check the ZIP64 paths without writing 4 GiB.
    """

    def __init__(self, *, compress_level: int = 1, zip64_limit: int = ZIP64_LIMIT) -> None:
        if not 0 < zip64_limit <= ZIP64_LIMIT:
            raise ValueError("zip64_limit must be in 1..0xFFFFFFFF")
        self._level = compress_level
        self._limit = zip64_limit
        self._offset = 0
        self._entries: list[Entry] = []
        self._current: Entry | None = None
        self._deflate: zlib._Compress | None = None
        self._finished = False

    @property
    def offset(self) -> int:
        """Bytes of archive returned so far."""
        return self._offset

    def _out(self, data: bytes) -> bytes:
        self._offset += len(data)
        return data

    def begin(self, name: str, *, mtime: float, size_hint: int) -> bytes:
        """Start a member named ``name`` (any Unicode; ``/`` separates folders).

        ``size_hint`` is the expected uncompressed size: it decides the ZIP64 form, and a
        member that grows past what that form can hold fails in `end` with `ZipError`.
        """
        if self._finished or self._current is not None:
            raise ZipError("begin() while a member is open or after finish()")
        encoded = name.encode("utf-8")
        if not encoded or len(encoded) > 0xFFFF:
            raise ZipError("a member name must be 1 to 65535 bytes of UTF-8")
        dos_time, dos_date = dos_datetime(mtime)
        zip64 = compress_bound(size_hint) >= self._limit
        entry = Entry(encoded, dos_time, dos_date, self._offset, zip64)
        self._current = entry
        self._deflate = zlib.compressobj(self._level, zlib.DEFLATED, -zlib.MAX_WBITS)
        extra = b""
        if zip64:
            # Both sizes must be present in a local ZIP64 extra; they are zero until the
            # data descriptor tells them.
            extra = _EXTRA_HEADER.pack(_ZIP64_EXTRA_ID, 16) + struct.pack("<QQ", 0, 0)
        header = _LOCAL.pack(
            b"PK\x03\x04",
            _VERSION_ZIP64 if zip64 else _VERSION_DEFLATE,
            _FLAGS,
            _DEFLATED,
            dos_time,
            dos_date,
            0,  # CRC: in the data descriptor
            ZIP64_LIMIT if zip64 else 0,
            ZIP64_LIMIT if zip64 else 0,
            len(encoded),
            len(extra),
        )
        return self._out(header + encoded + extra)

    def feed(self, data: bytes) -> bytes:
        """Add ``data`` to the open member; returns deflated bytes (often empty)."""
        entry, deflate = self._current, self._deflate
        if entry is None or deflate is None:
            raise ZipError("feed() without begin()")
        entry.crc = zlib.crc32(data, entry.crc)
        entry.size += len(data)
        out = deflate.compress(data)
        entry.compressed_size += len(out)
        return self._out(out)

    def end(self) -> bytes:
        """Close the open member: the end of its deflate stream and its data descriptor."""
        entry, deflate = self._current, self._deflate
        if entry is None or deflate is None:
            raise ZipError("end() without begin()")
        tail = deflate.flush()
        entry.compressed_size += len(tail)
        self._current = self._deflate = None
        if entry.zip64:
            descriptor = _DESCRIPTOR64.pack(
                b"PK\x07\x08", entry.crc, entry.compressed_size, entry.size
            )
        elif entry.size >= self._limit or entry.compressed_size >= self._limit:
            raise ZipError("a member outgrew its size hint past the ZIP64 limit")
        else:
            descriptor = _DESCRIPTOR32.pack(
                b"PK\x07\x08", entry.crc, entry.compressed_size, entry.size
            )
        self._entries.append(entry)
        return self._out(tail + descriptor)

    def finish(self) -> bytes:
        """The central directory and end records; the archive is complete after these."""
        if self._finished or self._current is not None:
            raise ZipError("finish() while a member is open or twice")
        self._finished = True
        cd_offset = self._offset
        directory = b"".join(central_record(entry, self._limit) for entry in self._entries)
        end = end_records(len(self._entries), cd_offset, len(directory), self._limit)
        return self._out(directory + end)
