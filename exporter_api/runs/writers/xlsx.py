"""XLSX through XlsxWriter in constant-memory mode: one row in memory at a time.

Cells are typed from the database's values: numbers as numbers, dates and times as Excel dates,
text as text even when it looks like a number (``00123`` stays ``00123``; no formulas, no links
are ever made from text). What Excel would change is written as text instead: integers of 16
digits or more (Excel keeps 15 significant digits), dates before 1900-03-01 (Excel's serial
dates start at 1900-01-01 and count a 29 February 1900 that never was) as ISO text, and NaN and
infinities (``nan``, ``inf``, ``-inf``, as in CSV; Excel would show error cells). A text longer
than a cell holds (32,767 characters) fails the export rather than being cut. The
header row (the profile's labels) is bold and frozen; column widths come from the labels and
the first batch. A result longer than a sheet (1,048,576 rows with the header) goes on in
sheets ``Data_002``, ``Data_003``, ..., each with the header again.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any

import xlsxwriter
from xlsxwriter.xmlwriter import XMLwriter

from exporter_api.csvcodec import Row, bytes_text, date_columns, iso_text_date
from exporter_api.errors import ExporterError
from exporter_api.runs.files import PART_SUFFIX
from exporter_api.runs.writers.formats import XLSX_MAX_COLUMNS, XLSX_MAX_ROWS, TooWideForXlsx

_MAX_WIDTH = 60
_EXACT_DIGITS = 10**15  # Excel keeps 15 significant digits of a number
_MAX_TEXT = 32_767  # characters in one cell
_FIRST_DATE = date(1900, 3, 1)  # the first date whose Excel serial number is right


class ValueTooLongForXlsx(ExporterError):
    """A text longer than an Excel cell holds (the variant fails: XLSX would cut it)."""

    status = 422
    title = "Unprocessable Content"


def sheet_name(index: int) -> str:
    """The name of the ``index``-th sheet (1-based): ``Data_001``, ``Data_002``, ..."""
    return f"Data_{index:03d}"


class XlsxBook:
    """One workbook written to ``target`` (an open binary file) when :meth:`close` is called."""

    def __init__(
        self,
        target: IO[bytes],
        labels: Sequence[str],
        *,
        text_dates: bool = False,
        rows_per_sheet: int = XLSX_MAX_ROWS - 1,
        tmpdir: str | None = None,
    ) -> None:
        if len(labels) > XLSX_MAX_COLUMNS:
            raise TooWideForXlsx(len(labels))
        options: dict[str, Any] = {
            "constant_memory": True,
            "strings_to_numbers": False,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "nan_inf_to_errors": False,  # never reached: non-finite floats are written as text
            "remove_timezone": True,
        }
        # Every temporary file of this workbook (each sheet's rows, and the XML parts while the
        # ZIP is written) goes in a directory of its own, removed whole by close() and abort():
        # a ZIP that fails half-way (a full disk) leaves none of them. Named as a partial file,
        # so the reconciliation after a takeover removes it when a killed process left it.
        self._scratch = tempfile.mkdtemp(prefix=".xlsx-", suffix=PART_SUFFIX, dir=tmpdir)
        options["tmpdir"] = self._scratch
        try:
            self._book = xlsxwriter.Workbook(target, options)
        except BaseException:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        self._bold = self._book.add_format({"bold": True})
        self._date = self._book.add_format({"num_format": "yyyy-mm-dd"})
        self._datetime = self._book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.labels = list(labels)
        self.text_dates = text_dates
        self.rows_per_sheet = rows_per_sheet
        self.rows = 0
        self.sheets = 0
        self._sheet: Any = None
        self._row = 0
        self._number = 0  # the 1-based number of the result row being written
        self._widths: list[int] | None = None
        self._dates: frozenset[int] = frozenset()

    def _new_sheet(self) -> None:
        self.sheets += 1
        sheet = self._book.add_worksheet(sheet_name(self.sheets))
        assert self._widths is not None
        for col, width in enumerate(self._widths):
            sheet.set_column(col, col, width)
        sheet.freeze_panes(1, 0)
        sheet.write_row(0, 0, self.labels, self._bold)
        self._sheet, self._row = sheet, 1

    def add(self, batch: Sequence[Row]) -> None:
        if self._widths is None:
            self._dates = date_columns(batch) if self.text_dates else frozenset()
            self._widths = self._measure(batch)
        dates = self._dates
        for number, row in enumerate(batch, start=self.rows + 1):
            if self._sheet is None or self._row > self.rows_per_sheet:
                self._new_sheet()
            self._number = number
            self._write(row, dates)
            self._row += 1
        self.rows += len(batch)

    def _write(self, row: Row, dates: frozenset[int]) -> None:
        sheet, r = self._sheet, self._row
        for c, v in enumerate(row):
            if v is None:
                continue
            kind = type(v)
            if kind is str:
                if c in dates:
                    parsed = iso_text_date(v)  # type: ignore[arg-type]
                    if parsed is not None and _excel_date(parsed):
                        self._write_date(r, c, parsed)
                        continue
                self._text(r, c, v)  # type: ignore[arg-type]
            elif kind is float:
                if math.isfinite(v):  # type: ignore[arg-type]
                    sheet.write_number(r, c, v)
                else:
                    sheet.write_string(r, c, repr(v))  # nan, inf, -inf
            elif kind is int:
                if -_EXACT_DIGITS < v < _EXACT_DIGITS:  # type: ignore[operator]
                    sheet.write_number(r, c, v)
                else:
                    self._text(r, c, str(v))
            elif kind is bool:
                sheet.write_boolean(r, c, v)
            elif isinstance(v, Decimal):
                if v.is_finite() and abs(v) < _EXACT_DIGITS and len(v.as_tuple().digits) <= 15:
                    sheet.write_number(r, c, float(v))
                else:
                    self._text(r, c, str(v))
            elif isinstance(v, date):
                if _excel_date(v):
                    self._write_date(r, c, v)
                else:
                    sheet.write_string(r, c, str(v))  # ISO, as in CSV
            elif isinstance(v, bytes | bytearray | memoryview):
                self._text(r, c, bytes_text(v))
            else:
                self._text(r, c, str(v))

    def _text(self, r: int, c: int, text: str) -> None:
        if len(text) > _MAX_TEXT:
            # XlsxWriter would cut it to 32,767 characters (and only say so by a return code).
            column = self.labels[c] if c < len(self.labels) else str(c + 1)
            raise ValueTooLongForXlsx(
                f"row {self._number}, column {column!r} holds a value longer than Excel's "
                f"{_MAX_TEXT:,} characters; export this script as csv"
            )
        self._sheet.write_string(r, c, text)

    def _write_date(self, r: int, c: int, v: date) -> None:
        fmt = self._datetime if isinstance(v, datetime) else self._date
        self._sheet.write_datetime(r, c, v, fmt)

    def _measure(self, batch: Sequence[Row]) -> list[int]:
        widths = [len(label) + 2 for label in self.labels]
        for row in batch[:1000]:
            for c, v in enumerate(row[: len(widths)]):
                if v is None:
                    continue
                n = 19 if isinstance(v, datetime) else 10 if isinstance(v, date) else len(str(v))
                widths[c] = max(widths[c], n + 2)
        return [min(w, _MAX_WIDTH) for w in widths]

    def abort(self) -> None:
        """Drop a workbook never (or not successfully) closed: its temporary files (each sheet's
        rows in constant-memory mode, XML parts of a ZIP cut short) are removed with their
        directory rather than left behind."""
        for sheet in self._book.worksheets():
            handle = getattr(sheet, "row_data_fh", None)
            with contextlib.suppress(OSError):
                if handle is not None:
                    handle.close()
            _close_part(sheet)
        _close_part(self._book)
        shutil.rmtree(self._scratch, ignore_errors=True)

    def close(self) -> None:
        """Write the workbook (the whole ZIP goes to the target now)."""
        if self._sheet is None:
            self._widths = self._widths or [len(label) + 2 for label in self.labels]
            self._new_sheet()
        try:
            self._book.close()
        except BaseException as exc:
            _close_parts_of(exc)
            raise
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)


def _close_part(part: object) -> None:
    """Close the file an XlsxWriter part (sheet, styles, ...) was writing when it failed: its
    writer leaves it open (it would be closed only when collected, with a ResourceWarning, and
    a deleted file's space is not free while it is open)."""
    if isinstance(part, XMLwriter) and getattr(part, "internal_fh", False):
        handle = getattr(part, "fh", None)
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()


def _close_parts_of(exc: BaseException) -> None:
    """``_close_part`` for the parts being written where ``exc`` (and what caused it) came from:
    the packager makes most of them as local variables."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            for value in list(tb.tb_frame.f_locals.values()):
                _close_part(value)
            tb = tb.tb_next
        error = error.__cause__ or error.__context__


def _excel_date(v: date) -> bool:
    """Whether Excel shows ``v`` as the date it is (on or after 1900-03-01)."""
    return (v.year, v.month) >= (_FIRST_DATE.year, _FIRST_DATE.month)


__all__ = ["ValueTooLongForXlsx", "XlsxBook", "sheet_name"]
