"""The export file writer and file-name rules, on a real temporary directory."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from exporter_api.config import OutputConfig
from exporter_api.runs.errors import (
    DISK_FORBIDDEN,
    DISK_FULL,
    DISK_UNWRITABLE,
    FILE_WRITTEN_ELSEWHERE,
    PART_REMOVED_ELSEWHERE,
    ExportDiskFull,
    ExportDiskUnwritable,
    ExportFileConflict,
    disk_error,
    failure_message,
)
from exporter_api.runs.files import (
    UTF8_BOM,
    FileWriter,
    files_root,
    render_file_name,
    safe_file_name,
    unique_name,
)
from exporter_api.runs.reconcile import is_partial_name, reconcile_run_files
from exporter_api.runs.writers import CsvStyle, OutputSpec, VariantOutput
from tests.exporter_api.runs.tmpfs import mounted_tmpfs


def _listdir(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def output(directory: Path, name: str = "x.csv", spec: OutputSpec | None = None) -> VariantOutput:
    """A file written as exports write theirs: CSV bytes through a variant's output."""
    return VariantOutput(spec or OutputSpec(), directory, name)


async def sealed(out: VariantOutput) -> FileWriter:
    """``out``'s one file, complete and synced under its partial name, not committed yet."""
    await out.finish()
    [writer] = out.parts
    return writer


async def test_commit_renames_and_hashes(tmp_path: Path) -> None:
    chunks = [b"a,b\n", b"1,2\n" * 1000, b"3,4\n"]
    async with output(tmp_path / "run", "out.csv") as out:
        for chunk in chunks:
            await out.write(chunk, chunk.count(b"\n"))
        writer = await sealed(out)
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
    async with output(tmp_path, "bom.csv", OutputSpec(style=CsvStyle(encoding="utf-8-sig"))) as out:
        await out.write("имя\n".encode(), 1)
        written = await (await sealed(out)).commit()
    data = written.path.read_bytes()
    assert data == UTF8_BOM + "имя\n".encode()
    assert written.sha256 == hashlib.sha256(data).hexdigest()


async def test_failure_removes_partial_file(tmp_path: Path) -> None:
    async def fail() -> None:
        async with output(tmp_path, "boom.csv") as out:
            await out.write(b"x\n", 1)
            assert (await sealed(out)).part_path.exists()
            raise RuntimeError("query failed")

    with pytest.raises(RuntimeError):
        await fail()
    assert _listdir(tmp_path) == []


async def test_cancellation_removes_partial_file(tmp_path: Path) -> None:
    with anyio.CancelScope() as scope:

        async def written(rows: int, size: int) -> None:
            assert len(_listdir(tmp_path)) == 1  # the partial file
            scope.cancel()

        async with VariantOutput(OutputSpec(), tmp_path, "cancel.csv", written) as out:
            await out.write(b"x\n", 1)
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert _listdir(tmp_path) == []


async def test_no_commit_means_no_file(tmp_path: Path) -> None:
    async with output(tmp_path, "empty.csv") as out:
        assert await out.finish() == 0
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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o000, 0o077], ids=lambda m: f"umask{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask for one test (0o077 would strip a configured 0o640 if not undone)."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


@pytest.mark.parametrize(
    ("configured", "file_mode", "dir_mode"),
    [(False, 0o600, 0o700), (True, 0o640, 0o750)],
    ids=["default", "shared-volume"],
)
async def test_modes_whatever_the_umask(
    tmp_path: Path, umask: int, configured: bool, file_mode: int, dir_mode: int
) -> None:
    root = tmp_path / "exports"  # missing: created by the writer, with the configured mode

    def output_for(name: str) -> VariantOutput:
        if not configured:  # the defaults: private to the service's user
            return output(root / "RUN1", name)
        spec = OutputSpec(file_mode=file_mode, dir_mode=dir_mode)
        return output(root / "RUN1", name, spec)

    async with output_for("out.csv") as out:
        await out.write(b"a\n", 1)
        writer = await sealed(out)
        assert _mode(writer.part_path) == file_mode
        written = await writer.commit()
    # a second file of the run finds its directory made already
    async with output_for("two.csv") as out:
        await out.write(b"b\n", 1)
        two = await (await sealed(out)).commit()
    assert _mode(written.path) == file_mode
    assert _mode(two.path) == file_mode
    assert _mode(root / "RUN1") == dir_mode
    assert _mode(root) == dir_mode
    assert sorted(p.name for p in (root / "RUN1").iterdir()) == ["out.csv", "two.csv"]


async def test_existing_directories_keep_their_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"  # a volume's root, made by its administrator
    shared.mkdir()
    os.chmod(shared, 0o775)  # noqa: S103 - a shared volume's root, on purpose
    async with output(shared / "RUN1") as out:
        await out.write(b"x\n", 1)
        await (await sealed(out)).commit()
    assert _mode(shared) == 0o775
    assert _mode(shared / "RUN1") == 0o700


async def test_writer_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    run = tmp_path / "RUN1"
    run.mkdir()
    target = tmp_path / "victim"
    target.write_bytes(b"keep")
    (run / "x.csv").symlink_to(target)  # where the export is about to land
    async with output(run) as out:
        await out.write(b"data\n", 1)
        writer = await sealed(out)
        with pytest.raises(ExportFileConflict):
            await writer.commit()
    assert target.read_bytes() == b"keep"
    assert (run / "x.csv").is_symlink()
    assert _listdir(run) == ["x.csv"]


async def test_each_writer_has_a_partial_file_of_its_own(tmp_path: Path) -> None:
    async with output(tmp_path) as first, output(tmp_path) as second:
        for out in (first, second):
            await out.write(b"x\n", 1)
        one, two = await sealed(first), await sealed(second)
        assert one.part_path != two.part_path
        assert one.part_path.name.startswith(".x.csv.")
        assert is_partial_name(one.part_path.name)
        assert is_partial_name(two.part_path.name)
        assert len(_listdir(tmp_path)) == 2


async def test_an_old_owner_never_publishes_over_the_new_owner(tmp_path: Path) -> None:
    # The owner of a run, cut off from the store but still alive, goes on writing while another
    # instance takes the run over: clears the run's directory, then writes the same variant.
    run = tmp_path / "RUN1"
    async with output(run) as old_output:
        await old_output.write(b"old-complete\n", 1)
        old = await sealed(old_output)
        taken_over = await reconcile_run_files(run, [])  # removes the old partial file
        assert taken_over.partial == (old.part_path.name,)
        async with output(run) as new_output:
            await new_output.write(b"new-half", 1)
            with pytest.raises(ExportFileConflict) as lost:
                await old.commit()
            assert not (run / "x.csv").exists()  # nothing half-written went into place
            await new_output.write(b"-rest\n", 1)
            written = await (await sealed(new_output)).commit()
    assert lost.value.detail == PART_REMOVED_ELSEWHERE
    assert written.path.read_bytes() == b"new-half-rest\n"
    assert written.sha256 == hashlib.sha256(b"new-half-rest\n").hexdigest()
    assert _listdir(run) == ["x.csv"]


async def test_a_commit_never_replaces_a_file_already_in_place(tmp_path: Path) -> None:
    # The new owner committed (and recorded) the variant first; the old owner finishes later.
    run = tmp_path / "RUN1"
    async with output(run) as old_output:
        await old_output.write(b"old\n", 1)
        old = await sealed(old_output)
        async with output(run) as new_output:
            await new_output.write(b"new\n", 1)
            recorded = await (await sealed(new_output)).commit()
        with pytest.raises(ExportFileConflict) as refused:
            await old.commit()
    assert refused.value.detail == FILE_WRITTEN_ELSEWHERE
    assert recorded.path.read_bytes() == b"new\n"
    assert _listdir(run) == ["x.csv"]  # the old owner's partial file is gone too


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP])
async def test_volumes_without_hard_links_fall_back_to_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    # SMB/CIFS without unix extensions refuses link(); no such volume can be mounted here.
    def no_links(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", no_links)
    run = tmp_path / "RUN1"
    async with output(run) as first:
        await first.write(b"first\n", 1)
        written = await (await sealed(first)).commit()
    async with output(run) as second:
        await second.write(b"second\n", 1)
        with pytest.raises(ExportFileConflict):
            await (await sealed(second)).commit()
    assert written.path.read_bytes() == b"first\n"
    assert _listdir(run) == ["x.csv"]


async def test_full_disk_is_a_domain_error_and_leaves_no_partial_file(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "small", size="256k") as disk:

        async def export() -> None:
            async with output(disk / "RUN1", "big.csv") as out:
                for _ in range(64):  # 1 MiB into 256 KiB
                    await out.write(b"x" * (16 << 10) + b"\n", 1)
                await (await sealed(out)).commit()

        with pytest.raises(ExportDiskFull) as caught:
            await export()
        assert caught.value.detail == DISK_FULL == "the export disk is full"
        assert caught.value.__cause__ is None  # no OS message (or path) travels with it
        assert list((disk / "RUN1").iterdir()) == []
        # the space is back: the next export on this disk works
        async with output(disk / "RUN1", "small.csv") as again:
            await again.write(b"ok\n", 1)
            assert (await (await sealed(again)).commit()).size_bytes == 3


async def test_read_only_disk_cannot_be_written(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "ro", read_only=True) as disk:
        async with output(disk / "RUN1") as out:
            await out.write(b"x\n", 1)
            with pytest.raises(ExportDiskUnwritable) as caught:
                await out.finish()
        assert caught.value.detail == DISK_UNWRITABLE
        assert list(disk.iterdir()) == []


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_permission_errors_say_the_service_may_not_write(code: int) -> None:
    # A files directory owned by another user (or a volume mounted with other ids): the
    # variant's message names the problem instead of "internal error (PermissionError)".
    error = disk_error(PermissionError(code, os.strerror(code), "/srv/exports/RUN1/.x.csv.part"))
    assert isinstance(error, ExportDiskUnwritable)
    assert error.detail == DISK_FORBIDDEN == "the service may not write to the export directory"
    assert failure_message(error) == DISK_FORBIDDEN


def test_other_os_errors_are_not_disk_errors() -> None:
    assert disk_error(OSError(errno.ENAMETOOLONG, "File name too long")) is None


def test_files_root_from_the_output_config(tmp_path: Path) -> None:
    assert files_root(tmp_path, OutputConfig()) == tmp_path / "exports"
    assert files_root(tmp_path, OutputConfig(files_dir="shared/out")) == tmp_path / "shared/out"
    assert files_root(tmp_path, OutputConfig(files_dir="/mnt/exports")) == Path("/mnt/exports")


async def test_new_entries_are_made_durable_by_syncing_their_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A power loss must not lose a file the store lists: the link into place (and the run's new
    # directory) is only durable once the directory holding the entry is fsynced, after it.
    synced: list[tuple[str, list[str]]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        entries = sorted(os.listdir(target)) if os.path.isdir(target) else []
        synced.append((target, entries))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    root = tmp_path / "exports"
    run = root / "RUN1"
    async with output(run) as out:
        await out.write(b"x\n", 1)
        writer = await sealed(out)
        targets = [t for t, _ in synced]
        assert targets[:2] == [str(tmp_path), str(root)]  # the new directories
        assert targets[2:] == [str(writer.part_path)]  # the data, under its partial name
        await writer.commit()
    assert synced[3] == (str(run), ["x.csv"])  # then the entry, once linked into place
    assert len(synced) == 4


async def test_a_file_whose_entry_cannot_be_synced_is_not_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def failing_dir_fsync(fd: int) -> None:
        if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    run = tmp_path / "RUN1"
    run.mkdir()
    monkeypatch.setattr(os, "fsync", failing_dir_fsync)
    async with output(run) as out:
        await out.write(b"x\n", 1)
        with pytest.raises(ExportDiskUnwritable):
            await (await sealed(out)).commit()
    assert _listdir(run) == []


async def test_a_commit_refused_for_a_name_in_place_goes_through_under_another(
    tmp_path: Path,
) -> None:
    run = tmp_path / "RUN1"
    run.mkdir()
    (run / "x.csv").write_bytes(b"stale\n")
    async with output(run) as out:
        await out.write(b"mine\n", 1)
        writer = await sealed(out)
        with pytest.raises(ExportFileConflict):
            await writer.commit()
        writer.rename("x (2).csv")
        written = await writer.commit()
        with pytest.raises(RuntimeError):
            writer.rename("x (3).csv")
    assert written.name == "x (2).csv"
    assert written.path.read_bytes() == b"mine\n"
    assert written.sha256 == hashlib.sha256(b"mine\n").hexdigest()
    assert (run / "x.csv").read_bytes() == b"stale\n"
    assert _listdir(run) == ["x (2).csv", "x.csv"]
