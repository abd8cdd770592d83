"""XLSX through XlsxWriter in constant-memory mode: one row in memory at a time.

Cells are typed from the database's values: numbers as numbers, dates and times as Excel dates,
text as text even when it looks like a number (``00123`` stays ``00123``; no formulas, no links
are ever made from text). Integers beyond 2**53 stay text too: Excel would round them. The
header row (the profile's labels) is bold and frozen; column widths come from the labels and
the first batch. A result longer than a sheet (1,048,576 rows with the header) goes on in
sheets ``Data_002``, ``Data_003``, ..., each with the header again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any

import xlsxwriter

from exporter_api.runs.writers.formats import (
    XLSX_MAX_COLUMNS,
    XLSX_MAX_ROWS,
    Row,
    TooWideForXlsx,
    date_columns,
    iso_text_date,
)

_MAX_WIDTH = 60
_EXACT_INT = 2**53


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
            "nan_inf_to_errors": True,
            "remove_timezone": True,
        }
        if tmpdir is not None:
            options["tmpdir"] = tmpdir
        self._book = xlsxwriter.Workbook(target, options)
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
        for row in batch:
            if self._sheet is None or self._row > self.rows_per_sheet:
                self._new_sheet()
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
                    if parsed is not None:
                        self._write_date(r, c, parsed)
                        continue
                sheet.write_string(r, c, v)
            elif kind is float:
                sheet.write_number(r, c, v)
            elif kind is int:
                if -_EXACT_INT <= v <= _EXACT_INT:  # type: ignore[operator]
                    sheet.write_number(r, c, v)
                else:
                    sheet.write_string(r, c, str(v))
            elif kind is bool:
                sheet.write_boolean(r, c, v)
            elif isinstance(v, Decimal):
                if v.is_finite() and abs(v) < _EXACT_INT and len(v.as_tuple().digits) <= 15:
                    sheet.write_number(r, c, float(v))
                else:
                    sheet.write_string(r, c, str(v))
            elif isinstance(v, date):
                self._write_date(r, c, v)
            elif isinstance(v, bytes | bytearray | memoryview):
                sheet.write_string(r, c, bytes(v).hex())
            else:
                sheet.write_string(r, c, str(v))

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
        """Drop a workbook never (or not successfully) closed: constant-memory mode keeps each
        sheet's rows in a temporary file of its own, removed here rather than left behind."""
        for sheet in self._book.worksheets():
            handle = getattr(sheet, "row_data_fh", None)
            name = getattr(sheet, "row_data_filename", None)
            with contextlib.suppress(OSError):
                if handle is not None:
                    handle.close()
                if name:
                    os.unlink(name)

    def close(self) -> None:
        """Write the workbook (the whole ZIP goes to the target now)."""
        if self._sheet is None:
            self._widths = self._widths or [len(label) + 2 for label in self.labels]
            self._new_sheet()
        self._book.close()


__all__ = ["XlsxBook", "sheet_name"]
