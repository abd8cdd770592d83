"""Reconciling a run's directory with its recorded files, on a real temporary directory."""

from __future__ import annotations

import io
from pathlib import Path

import anyio

from exporter_api.runs.reconcile import Reconciled, reconcile_run_files
from exporter_api.runs.writers import OutputSpec, VariantOutput
from exporter_api.runs.writers.xlsx import XlsxBook


def _names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def test_unrecorded_and_partial_files_go_recorded_ones_stay(tmp_path: Path) -> None:
    run = tmp_path / "RUN1"
    run.mkdir()
    (run / "kept.csv").write_bytes(b"a\n")
    (run / "orphan.csv").write_bytes(b"renamed, never recorded\n")  # SIGKILL before the save
    (run / ".next.csv.part").write_bytes(b"half")
    result = await reconcile_run_files(run, ["kept.csv"])
    assert result == Reconciled(partial=(".next.csv.part",), unrecorded=("orphan.csv",))
    assert set(result.removed) == {".next.csv.part", "orphan.csv"}
    assert _names(run) == ["kept.csv"]


async def test_recorded_files_missing_on_disk_are_reported(tmp_path: Path) -> None:
    run = tmp_path / "RUN1"
    run.mkdir()
    (run / "a.csv").write_bytes(b"a\n")
    result = await reconcile_run_files(run, ["a.csv", "lost.csv", "Отчёт.csv"])
    assert result == Reconciled(missing=("lost.csv", "Отчёт.csv"))
    assert not result.clean
    assert _names(run) == ["a.csv"]


async def test_absent_directory_means_every_recorded_file_is_missing(tmp_path: Path) -> None:
    assert await reconcile_run_files(tmp_path / "gone", []) == Reconciled()
    assert (await reconcile_run_files(tmp_path / "gone", ["x.csv"])).missing == ("x.csv",)
    assert not (tmp_path / "gone").exists()  # reconciling never creates anything


async def test_a_recorded_name_is_never_mistaken_for_a_partial_one(tmp_path: Path) -> None:
    run = tmp_path / "RUN1"
    run.mkdir()
    (run / "weird.part").write_bytes(b"a template may end in .part\n")
    result = await reconcile_run_files(run, ["weird.part"])
    assert result.clean
    assert _names(run) == ["weird.part"]


async def test_other_runs_and_a_live_writer_are_never_touched(tmp_path: Path) -> None:
    root = tmp_path / "exports"  # a volume several instances share
    dead = root / "DEAD"
    dead.mkdir(parents=True)
    (dead / ".x.csv.part").write_bytes(b"half")
    (root / "stray.csv").write_bytes(b"not in any run directory\n")
    (dead / "sub").mkdir()  # never recursed into or removed
    async with VariantOutput(OutputSpec(), root / "LIVE", "live.csv") as out:
        await out.write(b"header\n", 0)  # another instance's export, in progress
        result = await reconcile_run_files(dead, [])
        await out.write(b"row\n", 1)  # it goes on writing after the sweep
        await out.finish()
        [live] = out.parts
        assert live.part_path.exists()
        written = await live.commit()
    assert result.partial == (".x.csv.part",)
    assert _names(dead) == ["sub"]
    assert written.path.read_bytes() == b"header\nrow\n"
    assert _names(root) == ["DEAD", "LIVE", "stray.csv"]


async def test_a_huge_directory_is_examined_up_to_the_bound(tmp_path: Path) -> None:
    run = tmp_path / "RUN1"
    run.mkdir()
    for i in range(30):
        (run / f"f{i:02}.csv").write_bytes(b"x")
    recorded = ["f00.csv", "f01.csv", "gone.csv"]
    limiter = anyio.CapacityLimiter(1)
    result = await reconcile_run_files(run, recorded, limiter=limiter, max_entries=10)
    assert result.truncated
    assert len(result.unrecorded) <= 10
    assert result.missing == ("gone.csv",)  # looked up one by one past the bound
    assert {"f00.csv", "f01.csv"} <= set(_names(run))
    again = await reconcile_run_files(run, recorded, limiter=limiter)  # no bound: finishes it
    assert not again.truncated
    assert _names(run) == ["f00.csv", "f01.csv"]


async def test_xlsx_temporary_files_of_a_killed_export_go(tmp_path: Path) -> None:
    # A process killed while writing an XLSX leaves the workbook's scratch directory (with
    # XlsxWriter's row file in it) beside its partial file: both are partial, so both go.
    run = tmp_path / "RUN1"
    run.mkdir()
    (run / "kept.xlsx").write_bytes(b"PK")
    partial = ".out.xlsx.0123456789abcdef.part"
    (run / partial).write_bytes(b"PK")
    book = XlsxBook(io.BytesIO(), ["Id"], tmpdir=str(run))
    book.add([(1,), (2,)])  # never closed nor aborted: the process died here
    [scratch] = [n for n in _names(run) if n not in ("kept.xlsx", partial)]
    assert scratch.startswith(".xlsx-")
    assert len(list((run / scratch).iterdir())) == 1  # the sheet's rows
    result = await reconcile_run_files(run, ["kept.xlsx"])
    book.abort()  # only closes the dead process's handle here: the directory is gone
    assert sorted(result.partial) == sorted([partial, scratch])  # in the directory's order
    assert result.unrecorded == result.missing == ()
    assert _names(run) == ["kept.xlsx"]
