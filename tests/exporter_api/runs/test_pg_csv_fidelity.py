"""PostgreSQL CSV files are the server's own text whatever the output does: split files are
COPY's bytes cut at record ends (each part with the header), never values re-printed by Python
(``True`` for ``t``, ``b'\\x00'`` for bytea, ``[1, 2]`` for ``{1,2}``...)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from exporter_api.config import DatabaseConfig
from exporter_api.providers.base import ExportRequest
from exporter_api.providers.postgres import PostgresProvider
from exporter_api.runs.files import WrittenFile
from exporter_api.runs.writers import CsvStyle, OutputSpec, VariantOutput
from tests.exporter_api.conftest import pg_login_database
from tests.services import PostgresCluster

PASSWORD = "fidelity-Pa55"
ROWS = 400
SQL = "SELECT * FROM kinds ORDER BY id"
HEADER = b"id,b,by,ts,arr,f4,f8,n,j,u,iv,d,t,nul\n"


@pytest.fixture(scope="module")
def provider(pg: PostgresCluster) -> PostgresProvider:
    dsn = pg_login_database(pg, "fidelity", "fidelity", PASSWORD)
    pg.psql(
        "CREATE TABLE kinds (id int, b bool, by bytea, ts timestamptz, arr int[], f4 float4,"
        " f8 float8, n numeric, j jsonb, u uuid, iv interval, d date, t text, nul text);"
        "INSERT INTO kinds SELECT i, i % 2 = 0, CASE WHEN i % 3 = 0 THEN '\\x00ff'::bytea"
        " ELSE convert_to('é' || i, 'UTF8') END,"
        " timestamptz '2025-01-31 10:20:30.5+00' + i * interval '1 hour 1 second',"
        " ARRAY[i, i + 1], 0.1::float4 * i, 1.0 / (i + 1) * 1e16,"
        " CASE WHEN i % 7 = 0 THEN 'NaN'::numeric ELSE i * 1.25 END,"
        " jsonb_build_object('k', i, 'q', 'a \"b\", c'), md5(i::text)::uuid,"
        " make_interval(days => i, secs => i * 1.5), date '2024-02-29' + i,"
        " CASE i % 4 WHEN 0 THEN E'line\\nbreak, \"quoted\"' WHEN 1 THEN '' WHEN 2 THEN"
        " 'plain ' || i ELSE 'ООО, ' || repeat('x', i) END, NULL"
        f" FROM generate_series(1, {ROWS}) i;"
        "GRANT SELECT ON kinds TO fidelity;",
        db=dsn.rsplit("/", 1)[1],
    )
    return PostgresProvider(
        DatabaseConfig(id="pg", display_name="PG", provider="postgres", dsn=dsn)
    )


async def export(provider: PostgresProvider, spec: OutputSpec, directory: Path) -> list[bytes]:
    """The files of one export of ``SQL`` as the executor makes it (rows or COPY bytes)."""
    request = ExportRequest(
        sql=SQL,
        params={},
        delimiter=spec.style.delimiter,
        header=spec.style.header,
        decimal_separator=spec.style.decimal_separator,
        date_format=spec.style.date_format,
        batch_rows=50,
        rows=spec.needs_rows(provider.server_csv, provider.server_style),
    )
    written: list[WrittenFile] = []
    async with VariantOutput(spec, directory, "kinds.csv") as out:
        await provider.export("fidelity", PASSWORD, request, out)
        total = await out.finish()
        for writer in out.parts:
            written.append(await writer.commit())
    assert total == ROWS == sum(w.rows for w in written)
    return [w.path.read_bytes() for w in written]


def data_of(files: list[bytes], header: bytes) -> bytes:
    for f in files:
        assert f.startswith(header)
    return b"".join(f[len(header) :] for f in files)


async def test_copy_is_the_servers_text(provider: PostgresProvider, tmp_path: Path) -> None:
    [whole] = await export(provider, OutputSpec(), tmp_path)
    assert whole.startswith(HEADER)
    lines = whole.decode().split("\n")
    # What PostgreSQL prints (and the rows path once re-printed differently).
    assert lines[3].startswith('3,f,\\x00ff,2025-01-31 13:20:33.5+00,"{3,4}",0.3,')
    assert ",NaN," in whole.decode()
    assert lines[1].startswith('1,f,\\xc3a931,2025-01-31 11:20:31.5+00,"{1,2}",0.1,')


@pytest.mark.parametrize(
    "spec",
    [
        OutputSpec(max_rows_per_file=37),
        OutputSpec(max_bytes_per_file=3000),
        OutputSpec(max_rows_per_file=1),
        OutputSpec(max_rows_per_file=150, max_bytes_per_file=20_000),
        OutputSpec(style=CsvStyle(delimiter=";", encoding="utf-8-sig"), max_rows_per_file=99),
        OutputSpec(style=CsvStyle(header=False), max_bytes_per_file=5000),
    ],
    ids=["rows", "bytes", "one-row", "rows-and-bytes", "semicolon-bom", "no-header"],
)
async def test_split_files_are_copy_cut_at_record_ends(
    provider: PostgresProvider, tmp_path: Path, spec: OutputSpec
) -> None:
    style = spec.style
    [whole] = await export(provider, OutputSpec(style=style), tmp_path / "whole")
    parts = await export(provider, spec, tmp_path / "split")
    bom = b"\xef\xbb\xbf" if style.bom else b""
    header = bom + (HEADER.replace(b",", style.delimiter.encode()) if style.header else b"")
    assert len(parts) > 1
    assert data_of(parts, header) == data_of([whole], header)
    if spec.max_bytes_per_file:
        assert all(len(p) <= spec.max_bytes_per_file for p in parts)
    if spec.max_rows_per_file:
        assert all(p[len(header) :].count(b"\n") >= 1 for p in parts)


async def test_a_style_that_changes_values_changes_only_numbers_and_dates(
    provider: PostgresProvider, tmp_path: Path
) -> None:
    # A decimal comma and dd.mm.yyyy dates are applied by the server to the numeric and date
    # columns; every other value is COPY's own text (split or not).
    iso = CsvStyle(delimiter=";")
    ru = CsvStyle(delimiter=";", decimal_separator=",", date_format="dd.mm.yyyy")
    [whole] = await export(provider, OutputSpec(style=iso), tmp_path / "iso")
    parts = await export(provider, OutputSpec(style=ru, max_rows_per_file=150), tmp_path / "ru")
    header = HEADER.replace(b",", b";")
    styled = data_of(parts, header)
    assert b';"";\n' in styled  # an empty text is still told from NULL, as COPY does
    plain_rows = list(csv.reader(io.StringIO(data_of([whole], header).decode()), delimiter=";"))
    styled_rows = list(csv.reader(io.StringIO(styled.decode()), delimiter=";"))
    assert len(plain_rows) == len(styled_rows) == ROWS
    names = HEADER.decode().strip().split(",")
    for plain, got in zip(plain_rows, styled_rows, strict=True):
        expected = dict(zip(names, plain, strict=True))
        for name in ("f4", "f8", "n"):
            expected[name] = expected[name].replace(".", ",")
        y, m, d = expected["d"].split("-")
        expected["d"] = f"{d}.{m}.{y}"
        day, clock = expected["ts"].split(" ")
        y, m, d = day.split("-")
        expected["ts"] = f"{d}.{m}.{y} {clock[:8]}"
        assert dict(zip(names, got, strict=True)) == expected
    assert styled_rows[0][5] == "0,1"  # float4 as PostgreSQL prints it
