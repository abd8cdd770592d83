"""File formats, CSV styles and the batch encoder: rows of a DB-API cursor to CSV bytes.

A batch is formatted in one call of ``csv.writer.writerows`` (a C loop) and encoded in one
``str.encode``; only a style that changes values (a decimal comma, ``dd.mm.yyyy`` dates) adds a
per-value step, in Python, for that style alone. A character the target encoding cannot hold
is never replaced: the batch fails with :class:`UnencodableValue`, naming the row and column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import get_args

from exporter_api.config import FileFormat, OutputConfig
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
    return f"text/csv; charset={'windows-1251' if encoding == 'cp1251' else 'utf-8'}"


XLSX_MAX_ROWS = 1_048_576  # Excel's rows per sheet, the header row included
XLSX_MAX_COLUMNS = 16_384

Row = Sequence[object]
# ``2025-01-31``, ``2025-01-31 10:20:30`` (``T`` too, fractions allowed): how SQLite keeps dates.
_ISO_DATE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?$"
)


def record_ends(data: bytes, limit: int = 0) -> list[int]:
    """The offsets just past each record of CSV ``data`` that starts outside quotes: its line
    ends outside double quotes (a doubled quote toggles twice); the first ``limit`` only,
    when given. Only ASCII bytes are looked at, so UTF-8 and cp1251 alike."""
    ends: list[int] = []
    pos, size = 0, len(data)
    while pos < size:
        quote = data.find(b'"', pos)
        stop = size if quote < 0 else quote
        line = data.find(b"\n", pos, stop)
        while line >= 0:
            ends.append(line + 1)
            if len(ends) == limit:
                return ends
            line = data.find(b"\n", line + 1, stop)
        if quote < 0:
            break
        closing = data.find(b'"', quote + 1)
        if closing < 0:
            break
        pos = closing + 1
    return ends


class UnencodableValue(ExporterError):
    """A value holds a character the target encoding cannot represent (the variant fails)."""

    status = 422
    title = "Unprocessable Content"


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


def iso_text_date(value: str) -> date | datetime | None:
    """The date of an ISO date text (``2025-01-31``, ``2025-01-31 10:20:30``), else None."""
    m = _ISO_DATE.match(value)
    if m is None:
        return None
    try:
        y, mo, d = int(m[1]), int(m[2]), int(m[3])
        if m[4] is None:
            return date(y, mo, d)
        micro = int((m[7] or "0").ljust(6, "0"))
        return datetime(y, mo, d, int(m[4]), int(m[5]), int(m[6] or 0), micro)
    except ValueError:
        return None


def date_columns(batch: Sequence[Row]) -> frozenset[int]:
    """Columns whose every non-null value in ``batch`` is an ISO date text (SQLite's dates)."""
    if not batch:
        return frozenset()
    found: set[int] = set()
    for col in range(len(batch[0])):
        values = [row[col] for row in batch if row[col] is not None]
        if values and all(isinstance(v, str) and iso_text_date(v) is not None for v in values):
            found.add(col)
    return frozenset(found)


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
        return "cp1251" if self.encoding == "cp1251" else "utf-8"

    @property
    def bom(self) -> bool:
        return self.encoding == "utf-8-sig"

    @property
    def changes_values(self) -> bool:
        return self.decimal_separator != "." or self.date_format != "iso"

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


class RowEncoder:
    """Batches of rows to CSV bytes in one style (minimal quoting, ``\\n`` line ends)."""

    def __init__(self, style: CsvStyle, labels: Sequence[str]) -> None:
        self.style = style
        self.labels = list(labels)
        self._buffer = io.StringIO()
        self._writer = csv.writer(
            self._buffer,
            delimiter=style.delimiter,
            quoting=csv.QUOTE_MINIMAL,
            lineterminator="\n",
        )
        self._convert: list[Callable[[object], object]] | None = None

    def header(self) -> bytes:
        return self._encode([self.labels], 0, header=True)

    def encode(self, batch: Sequence[Row], first_row: int) -> bytes:
        """``batch`` as CSV; ``first_row`` is the 1-based number of its first data row."""
        if self.style.changes_values:
            if self._convert is None:
                self._convert = self._converters(batch)
            convert = self._convert
            batch = [[f(v) for f, v in zip(convert, row, strict=False)] for row in batch]
        return self._encode(batch, first_row)

    def _encode(self, rows: Sequence[Row], first_row: int, *, header: bool = False) -> bytes:
        self._writer.writerows(rows)
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        try:
            return text.encode(self.style.codec)
        except UnicodeEncodeError:
            raise self._unencodable(rows, first_row, header) from None

    def _unencodable(self, rows: Sequence[Row], first_row: int, header: bool) -> UnencodableValue:
        codec = self.style.codec
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                text = value if isinstance(value, str) else str(value)
                try:
                    text.encode(codec)
                except UnicodeEncodeError as exc:
                    bad = exc.object[exc.start : exc.end]
                    column = self.labels[c] if c < len(self.labels) else str(c + 1)
                    where = "the header" if header else f"row {first_row + r}"
                    return UnencodableValue(
                        f"{where}, column {column!r} holds {bad!r}, which cannot be written "
                        f"in {codec}"
                    )
        return UnencodableValue(f"a value cannot be written in {codec}")

    def _converters(self, batch: Sequence[Row]) -> list[Callable[[object], object]]:
        style = self.style
        comma = style.decimal_separator
        ru = style.date_format == "dd.mm.yyyy"
        texts = date_columns(batch) if style.text_dates and ru else frozenset()

        def value(v: object) -> object:
            if comma != "." and isinstance(v, float | Decimal) and not isinstance(v, bool):
                return str(v).replace(".", comma)
            if ru and isinstance(v, datetime):
                return v.strftime("%d.%m.%Y %H:%M:%S")
            if ru and isinstance(v, date):
                return v.strftime("%d.%m.%Y")
            return v

        def text_date(v: object) -> object:
            if isinstance(v, str):
                parsed = iso_text_date(v)
                if parsed is not None:
                    return value(parsed)
            return value(v)

        width = len(batch[0]) if batch else len(self.labels)
        return [text_date if c in texts else value for c in range(width)]


__all__ = [
    "FILE_FORMATS",
    "MEDIA_TYPES",
    "XLSX_MAX_COLUMNS",
    "XLSX_MAX_ROWS",
    "CsvStyle",
    "FileFormat",
    "Row",
    "RowEncoder",
    "TooWideForXlsx",
    "UnencodableValue",
    "date_columns",
    "format_of",
    "iso_text_date",
    "media_type",
    "part_name",
    "record_ends",
    "with_format",
]
