"""CSV as the export writes it: rows of a DB-API cursor to bytes, one rule for every writer.

The output of a variant (rows formatted on its own thread: XLSX aside, styles and split files)
and the SQLite provider without its C reader use the one `CsvEncoder`: minimal quoting, ``\\n``
line ends, the encoding named by `csv_codec`. A batch is formatted in one call of
``csv.writer.writerows`` (a C loop) and encoded in one ``str.encode``; a field holding a
carriage return is quoted too (as COPY and the SQLite C reader do), at the cost of a second
pass over the rare batch with one. Only a style that changes values (a decimal comma,
``dd.mm.yyyy`` dates) adds a per-value step, in Python, for that style alone. A character the
target encoding cannot hold is never replaced: the batch fails with :class:`UnencodableValue`,
naming the row and column. CSV bytes (a provider's own, PostgreSQL COPY) are split into records
by `record_ends` / counted by `record_count`.

This module sits below both the providers and the runs package (it imports neither).
"""

from __future__ import annotations

import csv
import io
import re
import types
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal

from exporter_api.errors import QueryFailed

Row = Sequence[object]
# ``2025-01-31``, ``2025-01-31 10:20:30`` (``T`` too, fractions allowed): how SQLite keeps dates.
_ISO_DATE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?$"
)


def _unquoted(data: bytes) -> Iterator[tuple[int, int]]:
    """The spans (start, stop) of CSV ``data`` outside double quotes, ``data`` starting
    outside them (a doubled quote toggles twice). Only ASCII bytes are looked at, so UTF-8 and
    cp1251 alike."""
    pos, size = 0, len(data)
    while pos < size:
        quote = data.find(b'"', pos)
        stop = size if quote < 0 else quote
        yield pos, stop
        if quote < 0:
            return
        closing = data.find(b'"', quote + 1)
        if closing < 0:
            return
        pos = closing + 1


def record_ends(data: bytes, limit: int = 0) -> list[int]:
    """The offsets just past each record of CSV ``data`` (whole records, as a provider hands
    them over): its line ends outside double quotes; the first ``limit`` only, when given."""
    ends: list[int] = []
    for pos, stop in _unquoted(data):
        line = data.find(b"\n", pos, stop)
        while line >= 0:
            ends.append(line + 1)
            if len(ends) == limit:
                return ends
            line = data.find(b"\n", line + 1, stop)
    return ends


def record_count(data: bytes) -> int:
    """How many records CSV ``data`` holds: ``len(record_ends(data))``, counted in C."""
    return sum(data.count(b"\n", pos, stop) for pos, stop in _unquoted(data))


def csv_codec(encoding: str) -> str:
    """The Python codec of a configured CSV encoding: ``cp1251`` (or ``windows-1251``), else
    UTF-8 (``utf-8-sig``'s BOM is the file's, written once before the first byte)."""
    return "cp1251" if encoding.lower() in {"cp1251", "windows-1251"} else "utf-8"


def changes_values(decimal_separator: str, date_format: str) -> bool:
    """Whether a CSV style writes values otherwise than as the database gives them (a decimal
    comma, dates other than ISO)."""
    return decimal_separator != "." or date_format != "iso"


class UnencodableValue(QueryFailed):
    """A value holds a character the target encoding cannot represent (the variant fails).

    A `QueryFailed`: the query's result cannot be written as asked, whoever formats it."""

    status = 422
    title = "Unprocessable Content"


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


def bytes_text(value: bytes | bytearray | memoryview) -> str:
    """How a bytes value (a BLOB, Oracle's RAW) is written: ``\\x`` and its lowercase hex, as
    PostgreSQL's COPY writes a bytea (and the SQLite C reader a BLOB)."""
    return "\\x" + bytes(value).hex()


def _hex_bytes(rows: Sequence[Row]) -> list[Row] | None:
    """``rows`` with every bytes value as its `bytes_text`; None when no value is bytes."""
    binary = (bytes, bytearray, memoryview)
    if not any(isinstance(v, binary) for row in rows for v in row):
        return None
    return [[bytes_text(v) if isinstance(v, binary) else v for v in row] for row in rows]


class CsvEncoder:
    """Batches of rows to CSV bytes (minimal quoting, ``\\n`` line ends) in ``encoding``
    (see `csv_codec`); ``labels`` name the columns of a value that cannot be encoded.

    ``decimal_separator`` / ``date_format`` (``iso``: as the driver gives them, or
    ``dd.mm.yyyy``) change values; with ``text_dates`` a column of ISO date texts (SQLite has
    no date type) is a date column too."""

    def __init__(
        self,
        delimiter: str,
        encoding: str,
        labels: Sequence[str] = (),
        *,
        decimal_separator: str = ".",
        date_format: str = "iso",
        text_dates: bool = False,
    ) -> None:
        self.codec = csv_codec(encoding)
        self.labels = list(labels)
        self._decimal = decimal_separator
        self._date_format = date_format
        self._text_dates = text_dates
        self._buffer = io.StringIO()
        self._writer = csv.writer(
            self._buffer, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\n"
        )
        self._convert: list[Callable[[object], object]] | None = None

    @property
    def changes_values(self) -> bool:
        return changes_values(self._decimal, self._date_format)

    def header(self) -> bytes:
        """The header line of ``labels``."""
        return self._encode([self.labels], 0, header=True)

    def encode(self, batch: Sequence[Row], first_row: int) -> bytes:
        """``batch`` as CSV; ``first_row`` is the 1-based number of its first data row."""
        if self.changes_values:
            if self._convert is None:
                self._convert = self._converters(batch)
            convert = self._convert
            batch = [[f(v) for f, v in zip(convert, row, strict=False)] for row in batch]
        return self._encode(batch, first_row)

    def encode_text(self, text: str, rows: Callable[[], Sequence[Row]], first_row: int) -> bytes:
        """CSV ``text`` already formatted; ``rows()`` gives its values when a character
        cannot be encoded (to name where it is)."""
        try:
            return text.encode(self.codec)
        except UnicodeEncodeError:
            raise self._unencodable(rows(), first_row, header=False) from None

    def _encode(self, rows: Sequence[Row], first_row: int, *, header: bool = False) -> bytes:
        text = self._write(rows)
        # bytes (a BLOB, Oracle's RAW) come out of csv.writer as b'...' (a memoryview as
        # <memory at ...>): rare, so one scan in C of the batch's text, and only then a look
        # at its values
        if ("b'" in text or 'b"' in text or "<memory" in text) and (
            hexed := _hex_bytes(rows)
        ) is not None:
            rows = hexed
            text = self._write(rows)
        if "\r" in text:  # rare: one scan in C of the batch's text
            text = self._quoting_cr(rows)
        try:
            return text.encode(self.codec)
        except UnicodeEncodeError:
            raise self._unencodable(rows, first_row, header=header) from None

    def _write(self, rows: Sequence[Row]) -> str:
        self._writer.writerows(rows)
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text

    def _quoting_cr(self, rows: Sequence[Row]) -> str:
        """``rows`` with a field that holds a carriage return quoted too (a reader takes a lone
        one for a line end; PostgreSQL's COPY and the SQLite C reader quote it): csv.writer
        quotes only the characters of its line terminator, so the rows are written with
        ``\r\n`` ones, each cut back to ``\n``."""
        lines: list[str] = []
        target = types.SimpleNamespace(write=lines.append)  # one call per row
        writer = csv.writer(target, delimiter=self._writer.dialect.delimiter, lineterminator="\r\n")
        writer.writerows(rows)
        return "".join([line[:-2] + "\n" for line in lines])

    def _unencodable(
        self, rows: Sequence[Row], first_row: int, *, header: bool
    ) -> UnencodableValue:
        codec = self.codec
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
        comma = self._decimal
        ru = self._date_format == "dd.mm.yyyy"
        texts = date_columns(batch) if self._text_dates and ru else frozenset()

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
    "CsvEncoder",
    "Row",
    "UnencodableValue",
    "bytes_text",
    "changes_values",
    "csv_codec",
    "date_columns",
    "iso_text_date",
    "record_count",
    "record_ends",
]
