"""Export writers on a real disk: CSV styles, csv.gz, XLSX and split parts through
`VariantOutput` (the sink the executor hands every variant to)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from exporter_api.csvcodec import CsvEncoder, UnencodableValue, record_ends
from exporter_api.runs.errors import DISK_FULL, ExportDiskFull
from exporter_api.runs.files import WrittenFile
from exporter_api.runs.writers import (
    CsvStyle,
    OutputSpec,
    TooWideForXlsx,
    VariantOutput,
    format_of,
    part_name,
    with_format,
)
from exporter_api.runs.writers.formats import XLSX_MAX_COLUMNS
from exporter_api.runs.writers.xlsx import ValueTooLongForXlsx
from tests.exporter_api.runs.tmpfs import mounted_tmpfs
from tests.exporter_api.runs.xlsxread import read_xlsx

LABELS = ["Id", "Name", "Amount", "Day"]


def rows(n: int, start: int = 1) -> list[tuple[object, ...]]:
    return [(i, f"name {i}", i * 1.5, f"2025-01-{1 + i % 28:02d}") for i in range(start, start + n)]


async def export(
    directory: Path,
    spec: OutputSpec,
    batches: Sequence[Sequence[tuple[object, ...]]],
    name: str = "out.csv",
    labels: Sequence[str] = LABELS,
) -> list[WrittenFile]:
    progress: list[tuple[int, int]] = []

    async def on_progress(count: int, size: int) -> None:
        progress.append((count, size))

    async with VariantOutput(spec, directory, name, on_progress) as out:
        for batch in batches:
            await out.write_rows(labels, batch)
        total = await out.finish()
        written = []
        for writer in out.parts:
            written.append(await writer.commit())
    assert total == sum(len(b) for b in batches)
    assert [c for c, _ in progress] == sorted(c for c, _ in progress)  # in order, once a batch
    return written


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def check_hash(w: WrittenFile) -> None:
    data = w.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == w.sha256
    assert len(data) == w.size_bytes


def test_names_of_formats_and_parts() -> None:
    assert with_format("a_v1.csv", "xlsx") == "a_v1.xlsx"
    assert with_format("a_v1.csv", "csv.gz") == "a_v1.csv.gz"
    assert with_format("a_v1", "xlsx") == "a_v1.xlsx"
    assert part_name("a_v1.csv.gz", 2) == "a_v1_part002.csv.gz"
    assert part_name("a_v1.xlsx", 12) == "a_v1_part012.xlsx"
    assert [format_of(n) for n in ("x.csv", "x.CSV.GZ", "x.xlsx", "x")] == [
        "csv",
        "csv.gz",
        "xlsx",
        "csv",
    ]


async def test_csv_batches_are_written_in_order_with_one_header(tmp_path: Path) -> None:
    [w] = await export(tmp_path, OutputSpec(), [rows(3), rows(2, start=4)])
    check_hash(w)
    assert w.rows == 5
    lines = w.path.read_text("utf-8").splitlines()
    assert lines[0] == "Id,Name,Amount,Day"
    assert lines[1:] == [f"{i},name {i},{i * 1.5},2025-01-{1 + i % 28:02d}" for i in range(1, 6)]


async def test_csv_gz_is_one_gzip_stream_of_the_same_csv(tmp_path: Path) -> None:
    plain_dir, gz_dir = tmp_path / "plain", tmp_path / "gz"
    batches = [rows(1000), rows(1000, start=1001)]
    [plain] = await export(plain_dir, OutputSpec(), batches)
    [packed] = await export(gz_dir, OutputSpec(format="csv.gz"), batches, "out.csv.gz")
    check_hash(packed)
    assert gzip.decompress(packed.path.read_bytes()) == plain.path.read_bytes()
    assert packed.size_bytes < plain.size_bytes / 3


async def test_a_split_result_that_fits_one_file_has_no_part_number(tmp_path: Path) -> None:
    [written] = await export(tmp_path, OutputSpec(max_rows_per_file=4), [rows(3)])
    assert written.name == "out.csv"
    assert names(tmp_path) == ["out.csv"]


async def test_rows_limit_splits_into_parts_each_with_its_header(tmp_path: Path) -> None:
    spec = OutputSpec(max_rows_per_file=4)
    written = await export(tmp_path, spec, [rows(3), rows(7, start=4)])
    assert [w.name for w in written] == ["out_part001.csv", "out_part002.csv", "out_part003.csv"]
    assert [w.rows for w in written] == [4, 4, 2]
    ids: list[str] = []
    for w in written:
        check_hash(w)
        lines = w.path.read_text("utf-8").splitlines()
        assert lines[0] == "Id,Name,Amount,Day"
        ids += [line.split(",")[0] for line in lines[1:]]
    assert ids == [str(i) for i in range(1, 11)]
    assert names(tmp_path) == [w.name for w in written]  # no .part


async def test_bytes_limit_keeps_every_part_within_it(tmp_path: Path) -> None:
    limit = 4096
    written = await export(tmp_path, OutputSpec(max_bytes_per_file=limit), [rows(500)])
    assert len(written) > 3
    got: list[list[str]] = []
    for w in written:
        assert w.size_bytes <= limit
        parsed = list(csv.reader(io.StringIO(w.path.read_text("utf-8"))))
        assert parsed[0] == LABELS
        got += parsed[1:]
    assert [r[0] for r in got] == [str(i) for i in range(1, 501)]


async def test_excel_ru_style(tmp_path: Path) -> None:
    style = CsvStyle(
        delimiter=";",
        encoding="utf-8-sig",
        decimal_separator=",",
        date_format="dd.mm.yyyy",
        text_dates=True,
    )
    batch = [
        (1, "Иванов; И.", 1234.5, "2025-03-07", Decimal("10.20"), date(2024, 12, 31)),
        (2, "2025-01-01x", -0.25, None, Decimal("3"), datetime(2024, 1, 2, 3, 4, 5)),
    ]
    labels = ["Id", "Name", "Amount", "Day", "Price", "When"]
    [w] = await export(tmp_path, OutputSpec(style=style), [batch], labels=labels)
    data = w.path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    assert data[3:].decode("utf-8").splitlines() == [
        "Id;Name;Amount;Day;Price;When",
        '1;"Иванов; И.";1234,5;07.03.2025;10,20;31.12.2024',
        "2;2025-01-01x;-0,25;;3;02.01.2024 03:04:05",
    ]


async def test_cp1251_holds_cyrillic(tmp_path: Path) -> None:
    [w] = await export(
        tmp_path, OutputSpec(style=CsvStyle(encoding="cp1251")), [[(1, "Привет", 1.0, None)]]
    )
    assert w.path.read_bytes().decode("cp1251").splitlines()[1] == "1,Привет,1.0,"


async def test_a_character_cp1251_cannot_hold_names_row_and_column(tmp_path: Path) -> None:
    bad: list[tuple[object, ...]] = [(6, "ok", 1.0, None), (7, "snow ☃ man", 2.0, None)]
    batches = [rows(5), bad]
    with pytest.raises(UnencodableValue) as caught:
        await export(tmp_path, OutputSpec(style=CsvStyle(encoding="cp1251")), batches)
    assert caught.value.detail == (
        "row 7, column 'Name' holds '☃', which cannot be written in cp1251"
    )
    assert names(tmp_path) == []  # the partial file is gone


async def test_xlsx_cells_are_typed_with_a_frozen_bold_header(tmp_path: Path) -> None:
    batch = [
        (1, "00123", 2.5, "2025-03-07", Decimal("10.25"), datetime(2024, 1, 2, 3, 4, 5)),
        (2**60, "=1+1", None, "2025-03-08", True, date(2024, 12, 31)),
    ]
    labels = ["Id", "Code", "Amount", "Day", "Price", "When"]
    spec = OutputSpec(format="xlsx", style=CsvStyle(text_dates=True))
    [w] = await export(tmp_path, spec, [batch], "out.xlsx", labels)
    check_hash(w)
    [sheet], formats = read_xlsx(w.path)
    assert sheet.name == "Data_001"
    assert sheet.frozen_rows == 1
    assert [c.value for c in sheet.rows[0] if c] == labels
    cell = sheet.cell
    assert cell(1, 0) == ("n", "1")
    assert cell(1, 1) == ("s", "00123")  # text stays text
    assert cell(1, 2) == ("n", "2.5")
    assert cell(1, 3) == ("n", "45723")  # 2025-03-07
    assert formats[sheet.rows[1][3].style if sheet.rows[1][3] else 0] == "yyyy-mm-dd"
    assert cell(1, 4) == ("n", "10.25")
    when = sheet.rows[1][5]
    assert when is not None
    assert formats[when.style] == "yyyy-mm-dd hh:mm:ss"
    assert float(when.value) == pytest.approx(45293 + (3 * 3600 + 4 * 60 + 5) / 86400)
    assert cell(2, 0) == ("s", str(2**60))  # too big for a double
    assert cell(2, 1) == ("s", "=1+1")  # never a formula
    assert cell(2, 2) is None
    assert cell(2, 4) == ("b", "1")
    assert sheet.widths[1] >= len("00123")


async def test_xlsx_rows_beyond_a_sheet_go_on_in_the_next_sheet(tmp_path: Path) -> None:
    spec = OutputSpec(format="xlsx", xlsx_rows_per_sheet=3)
    [w] = await export(tmp_path, spec, [rows(4), rows(3, start=5)], "out.xlsx")
    sheets, _ = read_xlsx(w.path)
    assert [s.name for s in sheets] == ["Data_001", "Data_002", "Data_003"]
    for s in sheets:
        assert s.values()[0] == LABELS
        assert s.frozen_rows == 1
    ids = [row[0] for s in sheets for row in s.values()[1:]]
    assert ids == [str(i) for i in range(1, 8)]
    assert w.rows == 7


async def test_xlsx_split_into_files_by_rows(tmp_path: Path) -> None:
    spec = OutputSpec(format="xlsx", max_rows_per_file=5)
    written = await export(tmp_path, spec, [rows(12)], "out.xlsx")
    assert [w.name for w in written] == ["out_part001.xlsx", "out_part002.xlsx", "out_part003.xlsx"]
    assert [len(read_xlsx(w.path)[0][0].rows) - 1 for w in written] == [5, 5, 2]


async def test_xlsx_refuses_more_columns_than_excel_has(tmp_path: Path) -> None:
    labels = [f"c{i}" for i in range(XLSX_MAX_COLUMNS + 1)]
    with pytest.raises(TooWideForXlsx) as caught:
        await export(
            tmp_path, OutputSpec(format="xlsx"), [[tuple(range(len(labels)))]], labels=labels
        )
    assert "16,385 columns" in caught.value.detail
    assert "at most 16,384" in caught.value.detail
    assert names(tmp_path) == []


@pytest.mark.parametrize("fmt", ["csv.gz", "xlsx"])
async def test_a_full_disk_fails_and_leaves_no_file(tmp_path: Path, fmt: str) -> None:
    # Random text barely compresses: a few MB for a 1 MiB disk in either format.
    import secrets

    batch = [(i, secrets.token_hex(64), float(i), None) for i in range(20_000)]
    with mounted_tmpfs(tmp_path / "disk", size="1m") as disk:
        with pytest.raises(ExportDiskFull) as caught:
            await export(disk / "run", OutputSpec(format=fmt), [batch], f"out.{fmt}")  # type: ignore[arg-type]
        left = sorted(p.name for p in (disk / "run").iterdir())
    assert caught.value.detail == DISK_FULL
    assert left == []


async def test_a_disk_that_fills_while_the_xlsx_zip_is_written_leaves_no_file(
    tmp_path: Path,
) -> None:
    # The rows fit; the XML parts XlsxWriter writes out while it builds the ZIP do not. Those
    # temporary files went in the run directory and stayed there until retention.
    batch = [(j, f"text value {j} " * 3, j * 1.5, None) for j in range(3_000)]
    with mounted_tmpfs(tmp_path / "disk", size="1m") as disk:
        with pytest.raises(ExportDiskFull):
            await export(disk / "run", OutputSpec(format="xlsx"), [batch], "out.xlsx")
        left = sorted(p.name for p in (disk / "run").iterdir())
    assert left == []


async def test_an_xlsx_export_that_fails_leaves_no_temporary_file(tmp_path: Path) -> None:
    # constant-memory XlsxWriter keeps each sheet's rows in a file of its own until the end
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    spec = OutputSpec(format="xlsx", max_rows_per_file=300, xlsx_tmpdir=str(scratch))
    written = anyio.Event()
    seen: list[str] = []

    async def on_progress(count: int, size: int) -> None:
        if count == 510:
            written.set()

    async def fail_half_way() -> None:
        async with VariantOutput(spec, tmp_path / "run", "out.xlsx", on_progress) as out:
            await out.write_rows(LABELS, rows(500))
            await out.write_rows(LABELS, rows(10, start=501))
            await written.wait()  # part 1 sealed, part 2 open with 210 rows
            seen.extend(names(scratch))
            raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError, match="the database went away"):
        await fail_half_way()
    assert len(seen) == 1  # part 2's sheet rows, on disk
    assert names(scratch) == []
    assert names(tmp_path / "run") == []


async def test_xlsx_fails_on_a_text_longer_than_a_cell_holds(tmp_path: Path) -> None:
    # XlsxWriter would cut it to 32,767 characters and only say so by a return code.
    labels = ["Id", "Note"]
    first = [(i, "short") for i in range(1, 4)]
    second = [(4, "x" * 32_767), (5, "y" * 32_768)]
    with pytest.raises(ValueTooLongForXlsx) as caught:
        await export(tmp_path, OutputSpec(format="xlsx"), [first, second], "out.xlsx", labels)
    assert caught.value.detail == (
        "row 5, column 'Note' holds a value longer than Excel's 32,767 characters; "
        "export this script as csv"
    )
    assert names(tmp_path) == []  # no partial file left


async def test_xlsx_writes_as_text_what_excel_would_change(tmp_path: Path) -> None:
    inf = float("inf")
    batch = [
        (
            10**15 - 1,
            1234567812345678,
            date(1900, 3, 1),
            float("nan"),
            Decimal("NaN"),
            "1899-12-31",
        ),
        (-(10**15) + 1, -(10**15), date(1, 1, 1), inf, Decimal("-Infinity"), "1900-03-01"),
        (0, 2**53, date(1900, 2, 28), -inf, Decimal("1.5"), "1900-01-01"),
        (1, 10**15, datetime(1899, 12, 31, 10, 20, 30), 0.5, Decimal("Infinity"), None),
    ]
    labels = ["Small", "Big", "Day", "Float", "Dec", "TextDay"]
    spec = OutputSpec(format="xlsx", style=CsvStyle(text_dates=True))
    [w] = await export(tmp_path, spec, [batch], "out.xlsx", labels)
    [sheet], formats = read_xlsx(w.path)
    assert sheet.values()[1:] == [
        [str(10**15 - 1), "1234567812345678", "61", "nan", "NaN", "1899-12-31"],
        [str(-(10**15) + 1), str(-(10**15)), "0001-01-01", "inf", "-Infinity", "61"],
        ["0", str(2**53), "1900-02-28", "-inf", "1.5", "1900-01-01"],
        ["1", str(10**15), "1899-12-31 10:20:30", "0.5", "Infinity"],  # no cell for None
    ]
    kinds = [[c.kind if c else None for c in row] for row in sheet.rows[1:]]
    assert kinds == [
        ["n", "s", "n", "s", "s", "s"],
        ["n", "s", "s", "s", "s", "n"],
        ["n", "s", "s", "s", "n", "s"],
        ["n", "s", "s", "n", "s"],
    ]
    day = sheet.rows[1][2]
    assert day is not None
    assert formats[day.style] == "yyyy-mm-dd"


async def test_xlsx_temporary_files_go_to_the_run_directory(tmp_path: Path) -> None:
    # They hold export data: on the export volume (its space, its permissions), never /tmp.
    run = tmp_path / "run"
    seen: list[list[str]] = []

    async def on_progress(count: int, size: int) -> None:
        seen.append(names(run))

    async with VariantOutput(OutputSpec(format="xlsx"), run, "out.xlsx", on_progress) as out:
        await out.write_rows(LABELS, rows(10))
        await out.finish()
        [writer] = out.parts
        await writer.commit()
    [during] = seen
    assert writer.part_path.name in during
    temporary = [n for n in during if n != writer.part_path.name]
    assert len(temporary) == 1  # the sheet's rows (constant-memory mode)
    assert names(run) == ["out.xlsx"]  # nothing left behind


def test_record_ends_skip_line_breaks_inside_quotes() -> None:
    records = [["a", 'b "q"\nc', ""], ["", "x\n\ny", '""'], ["ООО, 1", "2\r\n", "z"]]
    whole = io.StringIO()
    csv.writer(whole, lineterminator="\n").writerows(records)
    text = whole.getvalue().encode()
    lengths = []
    for record in records:
        one = io.StringIO()
        csv.writer(one, lineterminator="\n").writerow(record)
        lengths.append(len(one.getvalue().encode()))
    ends = [sum(lengths[: k + 1]) for k in range(len(records))]
    assert record_ends(text) == ends
    assert record_ends(text, 2) == ends[:2]
    assert record_ends(b"") == []


def test_bytes_values_are_written_in_hex_as_postgresql_copy_does() -> None:
    # Not csv.writer's b'...'; text that merely looks like bytes stays as it is.
    encoder = CsvEncoder(",", "utf-8", ["a", "b", "c"])
    assert encoder.encode([["Bob's", "b'x'", None]], 1) == b"Bob's,b'x',\n"
    batch: list[list[object]] = [
        [b"AB", bytearray(b"\x00\xff"), memoryview(b"z")],
        ["Bob's", b"", None],
    ]
    assert encoder.encode(batch, 1) == b"\\x4142,\\x00ff,\\x7a\nBob's,\\x,\n"
