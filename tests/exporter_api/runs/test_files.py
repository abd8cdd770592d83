"""The export file writer and file-name rules, on a real temporary directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest

from exporter_api.runs.files import (
    UTF8_BOM,
    FileWriter,
    remove_partial_files,
    render_file_name,
    safe_file_name,
    unique_name,
)


def _listdir(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def test_commit_renames_and_hashes(tmp_path: Path) -> None:
    chunks = [b"a,b\n", b"1,2\n" * 1000, b"3,4\n"]
    async with FileWriter(tmp_path / "run", "out.csv", flush_bytes=1024) as writer:
        for chunk in chunks:
            await writer.write(chunk, chunk.count(b"\n"))
        # only the temporary name exists before the commit
        assert not (tmp_path / "run" / "out.csv").exists()
        assert writer.part_path.exists()
        written = await writer.commit()
    data = b"".join(chunks)
    assert written.path.read_bytes() == data
    assert written.size_bytes == len(data)
    assert written.rows == 1002
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert not writer.part_path.exists()


async def test_bom_is_written_first_and_hashed(tmp_path: Path) -> None:
    async with FileWriter(tmp_path, "bom.csv", bom=True) as writer:
        await writer.write("имя\n".encode(), 1)
        written = await writer.commit()
    data = written.path.read_bytes()
    assert data == UTF8_BOM + "имя\n".encode()
    assert written.sha256 == hashlib.sha256(data).hexdigest()


async def test_failure_removes_partial_file(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path, "boom.csv", flush_bytes=1)

    async def fail() -> None:
        async with writer:
            await writer.write(b"x\n", 1)
            assert writer.part_path.exists()
            raise RuntimeError("query failed")

    with pytest.raises(RuntimeError):
        await fail()
    assert _listdir(tmp_path) == []


async def test_cancellation_removes_partial_file(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path, "cancel.csv", flush_bytes=1)
    with anyio.move_on_after(0.2):
        async with writer:
            await writer.write(b"x\n", 1)
            await anyio.sleep(5)
    assert _listdir(tmp_path) == []


async def test_no_commit_means_no_file(tmp_path: Path) -> None:
    async with FileWriter(tmp_path, "empty.csv"):
        pass
    assert _listdir(tmp_path) == []


def test_safe_file_name_keeps_letters_and_drops_separators() -> None:
    assert safe_file_name("Отчёт по заказам.csv") == "Отчёт по заказам.csv"
    assert safe_file_name("../../etc/passwd") == "_.._etc_passwd"
    assert "/" not in safe_file_name("a/b\\c:d.csv")
    assert safe_file_name("..") == "export.csv"
    assert safe_file_name("a\x00b\nc.csv") == "a_b_c.csv"
    long = safe_file_name("я" * 300 + ".csv")
    assert long.endswith(".csv")
    assert len(long.encode()) <= 200


def test_render_template() -> None:
    fields = {"run_id": "R", "group_id": "g", "script_id": "s", "variant": "2"}
    assert render_file_name("{run_id}_{group_id}_{script_id}_v{variant}.csv", fields) == (
        "R_g_s_v2.csv"
    )
    # unknown placeholders fall back to the default template instead of failing the run
    assert render_file_name("{nope}.csv", fields) == "R_g_s_v2.csv"
    assert render_file_name("{script_id}/../{variant}.csv", fields) == "s_.._2.csv"


def test_unique_name() -> None:
    # Pure bookkeeping in memory (no file system look-up on the event loop).
    taken: set[str] = set()
    assert unique_name("a.csv", taken) == "a.csv"
    assert unique_name("a.csv", taken) == "a (2).csv"
    assert unique_name("a.csv", taken) == "a (3).csv"
    # names differing only in case would collide on a case-insensitive file system
    assert unique_name("A.CSV", taken) == "A (4).CSV"
    assert unique_name("Отчёт", taken) == "Отчёт"
    assert unique_name("отчЁт", taken) == "отчЁт (2)"


def test_remove_partial_files(tmp_path: Path) -> None:
    run = tmp_path / "RUN1"
    run.mkdir()
    (run / ".x.csv.part").write_bytes(b"partial")
    (run / "done.csv").write_bytes(b"ok")
    assert remove_partial_files(tmp_path) == 1
    assert [p.name for p in run.iterdir()] == ["done.csv"]


def test_render_names_and_dates_safely() -> None:
    fields = {
        "run_id": "R",
        "group_id": "g",
        "script_id": "s",
        "variant": "1",
        "group_name": "Продажи/2026",
        "script_name": "../etc/passwd {run_id}",
        "date": "20260123",
        "time": "123456",
    }
    name = render_file_name("{group_name}_{script_name}_{date}_{time}_v{variant}.csv", fields)
    assert name == "Продажи_2026_.._etc_passwd {run_id}_20260123_123456_v1.csv"
    assert render_file_name("{script_name}.csv", fields) == "_etc_passwd {run_id}.csv"
    assert render_file_name("{group_name:>300}.csv", fields).endswith("Продажи_2026.csv")
