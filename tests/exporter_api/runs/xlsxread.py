"""A minimal XLSX reader for tests: sheet names and typed cells straight from the OOXML parts
(XlsxWriter's constant-memory mode writes inline strings, so no shared-strings table)."""

# ruff: noqa: S314 - parses files the tests themselves just wrote

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"


@dataclass
class Cell:
    kind: str  # "n" number, "s" text, "b" boolean
    value: str
    style: int


@dataclass
class Sheet:
    name: str
    rows: list[list[Cell | None]] = field(default_factory=list)
    frozen_rows: int = 0
    widths: dict[int, float] = field(default_factory=dict)

    def cell(self, row: int, col: int) -> tuple[str, str] | None:
        """(kind, value) of a cell, None when it is empty."""
        cells = self.rows[row]
        c = cells[col] if col < len(cells) else None
        return (c.kind, c.value) if c else None

    def values(self) -> list[list[str | None]]:
        return [[c.value if c else None for c in row] for row in self.rows]


def _col(ref: str) -> int:
    letters = re.match(r"[A-Z]+", ref)
    assert letters is not None
    n = 0
    for ch in letters.group():
        n = n * 26 + ord(ch) - 64
    return n - 1


def read_xlsx(path: Path) -> tuple[list[Sheet], list[str]]:
    """The sheets in workbook order, and each cell style's number format code."""
    with zipfile.ZipFile(path) as z:
        book = ET.fromstring(z.read("xl/workbook.xml"))
        rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
        targets = {r.get("Id"): r.get("Target") for r in rels}
        styles = ET.fromstring(z.read("xl/styles.xml"))
        codes = {
            int(f.get("numFmtId", "0")): f.get("formatCode", "")
            for f in styles.iterfind("m:numFmts/m:numFmt", _NS)
        }
        formats = [
            codes.get(int(x.get("numFmtId", "0")), "General")
            for x in styles.iterfind("m:cellXfs/m:xf", _NS)
        ]
        sheets: list[Sheet] = []
        for s in book.iterfind("m:sheets/m:sheet", _NS):
            xml = ET.fromstring(z.read("xl/" + str(targets[s.get(_R)])))
            sheet = Sheet(str(s.get("name")))
            pane = xml.find("m:sheetViews/m:sheetView/m:pane", _NS)
            if pane is not None and pane.get("state") == "frozen":
                sheet.frozen_rows = int(float(pane.get("ySplit", "0")))
            for col in xml.iterfind("m:cols/m:col", _NS):
                sheet.widths[int(col.get("min", "1")) - 1] = float(col.get("width", "0"))
            for row in xml.iterfind("m:sheetData/m:row", _NS):
                cells: list[Cell | None] = []
                for c in row.iterfind("m:c", _NS):
                    i = _col(str(c.get("r")))
                    cells.extend([None] * (i - len(cells)))
                    t = c.get("t", "n")
                    if t == "inlineStr":
                        text = "".join(x.text or "" for x in c.iterfind(".//m:t", _NS))
                        cells.append(Cell("s", text, int(c.get("s", "0"))))
                    else:
                        v = c.find("m:v", _NS)
                        cells.append(
                            Cell(t, v.text or "" if v is not None else "", int(c.get("s", "0")))
                        )
                sheet.rows.append(cells)
            sheets.append(sheet)
    return sheets, formats
