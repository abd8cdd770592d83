"""File formats, names and CSV styles; a style's rows are encoded by `csvcodec.CsvEncoder`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

from exporter_api.config import FileFormat, OutputConfig
from exporter_api.csvcodec import CsvEncoder, changes_values, csv_codec
from exporter_api.errors import ExporterError

FILE_FORMATS: tuple[str, ...] = get_args(FileFormat)
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv",
    "csv.gz": "application/gzip",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def media_type(fmt: str, encoding: str) -> str:
    """What a file of ``fmt`` is served as; a CSV says its charset (cp1251 or UTF-8)."""
    if fmt != "csv":
        return MEDIA_TYPES[fmt]
    return f"text/csv; charset={'windows-1251' if csv_codec(encoding) == 'cp1251' else 'utf-8'}"


XLSX_MAX_ROWS = 1_048_576  # Excel's rows per sheet, the header row included
XLSX_MAX_COLUMNS = 16_384


class TooWideForXlsx(ExporterError):
    """A result with more columns than an Excel sheet holds."""

    status = 422
    title = "Unprocessable Content"

    def __init__(self, columns: int) -> None:
        super().__init__(
            f"the result has {columns:,} columns; an XLSX sheet holds at most "
            f"{XLSX_MAX_COLUMNS:,} (choose csv)"
        )


def format_of(name: str) -> FileFormat:
    """The format of an export file, from its name."""
    lower = name.lower()
    if lower.endswith(".csv.gz"):
        return "csv.gz"
    if lower.endswith(".xlsx"):
        return "xlsx"
    return "csv"


def with_format(name: str, fmt: FileFormat) -> str:
    """``name`` with the extension of ``fmt`` (a ``.csv`` / ``.csv.gz`` / ``.xlsx`` one replaced,
    otherwise appended)."""
    lower = name.lower()
    for ext in (".csv.gz", ".csv", ".xlsx"):
        if lower.endswith(ext):
            name = name[: -len(ext)]
            break
    return f"{name}.{fmt}"


def part_name(name: str, part: int) -> str:
    """``orders.csv`` -> ``orders_part001.csv`` (``.csv.gz`` kept whole)."""
    fmt = format_of(name)
    lower = name.lower()
    stem = name[: -len(fmt) - 1] if lower.endswith(f".{fmt}") else name
    return f"{stem}_part{part:03d}.{fmt}"


@dataclass(frozen=True)
class CsvStyle:
    """How values are written: ``[output]`` or an output profile (``[[output.profiles]]``)."""

    delimiter: str = ","
    encoding: str = "utf-8"  # utf-8 | utf-8-sig (a BOM first) | cp1251
    header: bool = True
    decimal_separator: str = "."
    date_format: str = "iso"  # iso (as the database gives it) | dd.mm.yyyy
    # Text that is an ISO date is a date (SQLite has no date type): written as one.
    text_dates: bool = False

    @property
    def codec(self) -> str:
        return csv_codec(self.encoding)

    @property
    def bom(self) -> bool:
        return self.encoding == "utf-8-sig"

    @property
    def changes_values(self) -> bool:
        return changes_values(self.decimal_separator, self.date_format)

    def encoder(self, labels: Sequence[str]) -> CsvEncoder:
        """The encoder of rows in this style (columns named ``labels``)."""
        return CsvEncoder(
            self.delimiter,
            self.encoding,
            labels,
            decimal_separator=self.decimal_separator,
            date_format=self.date_format,
            text_dates=self.text_dates,
        )

    @classmethod
    def resolve(
        cls, output: OutputConfig, profile_id: str, *, text_dates: bool = False
    ) -> tuple[str | None, CsvStyle]:
        """The output profile ``profile_id`` names (its id, or None when there is none) and
        the style it gives; without one, ``[output]``'s own delimiter, encoding and header."""
        profile = next((p for p in output.profiles if p.id == profile_id), None)
        if profile is None:
            return None, cls(
                delimiter=output.delimiter,
                encoding=output.encoding,
                header=output.header,
                text_dates=text_dates,
            )
        return profile.id, cls(
            delimiter=profile.delimiter,
            encoding=profile.encoding,
            header=profile.header,
            decimal_separator=profile.decimal_separator,
            date_format=profile.date_format,
            text_dates=text_dates,
        )


__all__ = [
    "FILE_FORMATS",
    "MEDIA_TYPES",
    "XLSX_MAX_COLUMNS",
    "XLSX_MAX_ROWS",
    "CsvStyle",
    "FileFormat",
    "TooWideForXlsx",
    "format_of",
    "media_type",
    "part_name",
    "with_format",
]
