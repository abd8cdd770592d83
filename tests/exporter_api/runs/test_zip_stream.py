"""The sans-I/O ZIP writer: round trips through `zipfile` and `unzip -t`, and its ZIP64 logic."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import pytest

from exporter_api.runs.zipstream import (
    ZIP64_LIMIT,
    Entry,
    ZipError,
    ZipWriter,
    central_record,
    compress_bound,
    end_records,
)

FILES = {
    "a.csv": b"order_id,customer\n" + b"1,Acme\n" * 5000,
    "Отчёт по заказам.csv": "id;Клиент\n1;ООО Ромашка\n".encode(),
    "пусто.csv": b"",
    "random.bin": os.urandom(200_000),  # incompressible: deflate output > input
    "dir/nested.csv": b"x\n",
}
_MTIME = 1_767_225_600.0  # 2026-01-01


def _archive(files: dict[str, bytes], *, limit: int = ZIP64_LIMIT, step: int = 4096) -> bytes:
    writer = ZipWriter(zip64_limit=limit)
    out = bytearray()
    for name, data in files.items():
        out += writer.begin(name, mtime=_MTIME, size_hint=len(data))
        for i in range(0, len(data), step):
            out += writer.feed(data[i : i + step])
        out += writer.end()
    out += writer.finish()
    assert writer.offset == len(out)
    return bytes(out)


def _unzip_test(tmp_path: Path, archive: bytes) -> str:
    unzip = shutil.which("unzip")
    assert unzip is not None, "Info-ZIP unzip is required (apt-get install unzip)"
    path = tmp_path / "t.zip"
    path.write_bytes(archive)
    result = subprocess.run([unzip, "-t", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _check(archive: bytes, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        assert z.testzip() is None
        assert z.namelist() == list(files)
        for info in z.infolist():
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert info.flag_bits & 0x800  # UTF-8 names
            assert info.date_time[0] == 2026
            assert z.read(info) == files[info.filename]
            assert info.file_size == len(files[info.filename])


def test_round_trip_through_zipfile_and_unzip(tmp_path: Path) -> None:
    archive = _archive(FILES)
    _check(archive, FILES)
    assert len(archive) < len(FILES["a.csv"]) // 5 + len(FILES["random.bin"]) + 4096  # deflated
    out = _unzip_test(tmp_path, archive)
    assert "No errors detected" in out
    assert "Отчёт по заказам.csv" in out


def test_empty_archive() -> None:
    writer = ZipWriter()
    with zipfile.ZipFile(io.BytesIO(writer.finish())) as z:
        assert z.namelist() == []


@pytest.mark.parametrize("limit", [1, 100, 150_000])
def test_zip64_forms_round_trip(tmp_path: Path, limit: int) -> None:
    """A lowered limit drives every ZIP64 path (local extra, 8-byte descriptors, central
    extras for sizes and offsets, ZIP64 end record) on small data; real readers accept it."""
    archive = _archive(FILES, limit=limit)
    _check(archive, FILES)
    assert b"PK\x06\x06" in archive  # the central directory's offset is past the limit
    assert "No errors detected" in _unzip_test(tmp_path, archive)


def test_large_member_gets_a_zip64_local_header() -> None:
    size = 5 * 2**30
    header = ZipWriter().begin("big.csv", mtime=_MTIME, size_hint=size)
    (sig, version, flags, method, _, _, crc, csize, usize, name_len, extra_len) = struct.unpack(
        "<4sHHHHHLLLHH", header[:30]
    )
    assert (sig, version, method, crc) == (b"PK\x03\x04", 45, 8, 0)
    assert flags & 0x08  # sizes follow in a data descriptor
    assert (csize, usize) == (0xFFFFFFFF, 0xFFFFFFFF)
    extra = header[30 + name_len :]
    assert extra_len == 20
    assert struct.unpack("<HHQQ", extra) == (0x0001, 16, 0, 0)


def test_small_member_stays_in_the_32_bit_form() -> None:
    header = ZipWriter().begin("a.csv", mtime=_MTIME, size_hint=2**31)
    assert struct.unpack("<H", header[4:6]) == (20,)
    assert struct.unpack("<H", header[28:30]) == (0,)  # no extra field
    # the threshold is deflate's worst case, not the input size
    assert compress_bound(ZIP64_LIMIT - 2**20) >= ZIP64_LIMIT
    near = ZipWriter().begin("a.csv", mtime=_MTIME, size_hint=ZIP64_LIMIT - 2**20)
    assert struct.unpack("<H", near[4:6]) == (45,)


def test_zip64_data_descriptor_has_8_byte_sizes() -> None:
    writer = ZipWriter()
    writer.begin("big.csv", mtime=_MTIME, size_hint=5 * 2**30)
    writer.feed(b"abc")
    tail = writer.end()
    descriptor = tail[-24:]
    sig, crc, csize, usize = struct.unpack("<4sLQQ", descriptor)
    assert sig == b"PK\x07\x08"
    assert crc == zlib.crc32(b"abc")
    assert usize == 3
    assert csize == len(tail) - 24  # everything deflate produced came out here


def test_central_record_of_a_member_past_4_gib() -> None:
    entry = Entry(b"big.csv", 0, 33, offset=6 * 2**30, zip64=True)
    entry.crc, entry.size, entry.compressed_size = 0x1234, 5 * 2**30, 2**30
    record = central_record(entry)
    fields = struct.unpack("<4sHHHHHHLLLHHHHHLL", record[:46])
    assert fields[0] == b"PK\x01\x02"
    assert fields[2] == 45  # version needed
    assert fields[7:10] == (0x1234, 0xFFFFFFFF, 0xFFFFFFFF)
    assert fields[16] == 0xFFFFFFFF  # offset
    assert record[46 : 46 + fields[10]] == b"big.csv"
    extra = record[46 + fields[10] :]
    assert struct.unpack("<HHQQQ", extra) == (1, 24, 5 * 2**30, 2**30, 6 * 2**30)


def test_central_record_with_only_the_offset_past_4_gib() -> None:
    entry = Entry(b"a.csv", 0, 33, offset=5 * 2**30, zip64=False)
    entry.size, entry.compressed_size = 10, 12
    record = central_record(entry)
    fields = struct.unpack("<4sHHHHHHLLLHHHHHLL", record[:46])
    assert fields[8:10] == (12, 10)
    assert fields[16] == 0xFFFFFFFF
    assert struct.unpack("<HHQ", record[46 + 5 :]) == (1, 8, 5 * 2**30)


def test_end_records_past_4_gib() -> None:
    end = end_records(3, cd_offset=5 * 2**30, cd_size=300)
    assert len(end) == 56 + 20 + 22
    record = struct.unpack("<4sQHHLLQQQQ", end[:56])
    assert record[0] == b"PK\x06\x06"
    assert record[1] == 44
    assert record[6:] == (3, 3, 300, 5 * 2**30)
    locator = struct.unpack("<4sLQL", end[56:76])
    assert locator == (b"PK\x06\x07", 0, 5 * 2**30 + 300, 1)
    eocd = struct.unpack("<4sHHHHLLH", end[76:])
    assert eocd == (b"PK\x05\x06", 0, 0, 3, 3, 300, 0xFFFFFFFF, 0)
    # below every limit: the plain end record alone
    assert len(end_records(3, cd_offset=1000, cd_size=300)) == 22
    # too many entries for 16 bits
    many = end_records(70_000, cd_offset=1000, cd_size=300)
    assert many.startswith(b"PK\x06\x06")
    assert struct.unpack("<HH", many[-14:-10]) == (0xFFFF, 0xFFFF)


def test_member_outgrowing_its_hint_fails() -> None:
    writer = ZipWriter(zip64_limit=1000)
    writer.begin("a.bin", mtime=_MTIME, size_hint=10)
    writer.feed(os.urandom(2000))
    with pytest.raises(ZipError):
        writer.end()


def test_misuse_is_a_zip_error() -> None:
    writer = ZipWriter()
    with pytest.raises(ZipError):
        writer.feed(b"x")
    with pytest.raises(ZipError):
        writer.end()
    writer.begin("a", mtime=_MTIME, size_hint=0)
    with pytest.raises(ZipError):
        writer.begin("b", mtime=_MTIME, size_hint=0)
    with pytest.raises(ZipError):
        writer.finish()
    writer.end()
    writer.finish()
    with pytest.raises(ZipError):
        writer.begin("c", mtime=_MTIME, size_hint=0)
    with pytest.raises(ZipError):
        ZipWriter().begin("", mtime=_MTIME, size_hint=0)


def test_old_and_far_future_times_are_clamped() -> None:
    files = {"old.csv": b"1", "future.csv": b"2"}
    writer = ZipWriter()
    out = writer.begin("old.csv", mtime=0, size_hint=1) + writer.feed(b"1") + writer.end()
    out += writer.begin("future.csv", mtime=2**33, size_hint=1) + writer.feed(b"2") + writer.end()
    out += writer.finish()
    with zipfile.ZipFile(io.BytesIO(out)) as z:
        assert z.getinfo("old.csv").date_time[0] == 1980
        assert z.getinfo("future.csv").date_time[0] == 2107
        assert {n: z.read(n) for n in z.namelist()} == files
