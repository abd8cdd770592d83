"""Formats, output profiles and split files through the engine on the demo catalog (SQLite):
what a run's files are, how they are listed, and what a failure leaves."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from exporter_api.config import ExportConfig, OutputProfile
from exporter_api.runs.filerecords import StoredFile
from exporter_api.runs.models import RunState
from exporter_api.runs.writers.formats import format_of
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD, poll_until
from tests.exporter_api.runs.demokit import DEMO_CREDS, demo_catalog, demo_providers
from tests.exporter_api.runs.enginekit import engine_kit, plan, single, user
from tests.exporter_api.runs.xlsxread import read_xlsx

WHO = user("USER1", "sess-demo", database_id="db-test")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def body(script_id: str, group_id: str = "g-sales", **selection: object) -> dict[str, object]:
    return single(script_id, group_id, **selection)


async def test_formats_of_a_run_and_their_listing(tmp_path: Path) -> None:
    config, providers = await demo_providers(demo_catalog(tmp_path / "demo", 3000), tmp_path / "d")
    async with engine_kit(config, tmp_path / "d", DEMO_CREDS, providers=providers) as kit:
        plain = await kit.run_to_end(WHO, plan(config, body("s-orders")))
        packed = await kit.run_to_end(WHO, plan(config, body("s-orders", format="csv.gz")))
        book = await kit.run_to_end(WHO, plan(config, body("s-orders", format="xlsx")))
        ledger = await kit.run_to_end(WHO, plan(config, body("s-ledger", "g-big", format="xlsx")))
        files = {s.run_id: await kit.repo.files(s.run_id) for s in (plain, packed, book, ledger)}
        root = kit.files_root
        loaded = await kit.repo.load(book.run_id)
    assert {plain.status, packed.status, book.status, ledger.status} == {"Success"}
    assert loaded is not None
    assert loaded.groups[0].scripts[0].format == "xlsx"

    def listing(run_id: str) -> list[tuple[str, str, str | None]]:
        return [(f.name.split("_", 1)[1], format_of(f.name), f.media_type) for f in files[run_id]]

    assert listing(plain.run_id) == [
        (f"g-sales_s-orders_v{i}.csv", "csv", "text/csv; charset=utf-8") for i in (1, 2, 3)
    ]
    assert listing(packed.run_id) == [
        (f"g-sales_s-orders_v{i}.csv.gz", "csv.gz", "application/gzip") for i in (1, 2, 3)
    ]
    assert listing(book.run_id) == [
        (f"g-sales_s-orders_v{i}.xlsx", "xlsx", XLSX) for i in (1, 2, 3)
    ]

    def path(f: StoredFile) -> Path:
        return root / f.run_id / f.name

    for csv_file, gz_file, xlsx_file in zip(
        files[plain.run_id], files[packed.run_id], files[book.run_id], strict=True
    ):
        text = path(csv_file).read_bytes()
        assert gzip.decompress(path(gz_file).read_bytes()) == text
        table = list(csv.reader(io.StringIO(text.decode("utf-8"))))
        [sheet], formats = read_xlsx(path(xlsx_file))
        assert sheet.values()[0] == table[0]  # the profile's labels
        assert len(sheet.rows) == len(table) == xlsx_file.rows + 1
        first = sheet.rows[1]
        # OrderId, Customer, OrderDate, City, Amount, Status: numbers, text, a date, text, number
        assert [c.kind if c else None for c in first] == ["n", "s", "n", "s", "n", "s"]
        assert first[2] is not None
        assert formats[first[2].style] == "yyyy-mm-dd"
        assert float(first[4].value if first[4] else "nan") == float(table[1][4])
    [big] = files[ledger.run_id]
    assert big.rows == 3000
    [sheet], _ = read_xlsx(path(big))
    assert len(sheet.rows) == 3001


async def test_split_files_are_listed_part_by_part(tmp_path: Path) -> None:
    config, providers = await demo_providers(demo_catalog(tmp_path / "demo", 2500), tmp_path / "d")
    config.output.max_rows_per_file = 1000
    async with engine_kit(config, tmp_path / "d", DEMO_CREDS, providers=providers) as kit:
        state = await kit.run_to_end(WHO, plan(config, body("s-ledger", "g-big")))
        files = await kit.repo.files(state.run_id)
        contents = [(kit.files_root / f.run_id / f.name).read_text("utf-8") for f in files]
    variant = state.groups[0].scripts[0].variants[0]
    assert variant.status == "Success"
    assert variant.rows_exported == 2500
    assert variant.file_id == files[0].file_id
    assert [f.name.split("_", 1)[1] for f in files] == [
        f"g-big_s-ledger_v1_part00{k}.csv" for k in (1, 2, 3)
    ]
    assert [f.rows for f in files] == [1000, 1000, 500]
    assert variant.bytes_written == sum(f.size_bytes for f in files)
    tables = [list(csv.reader(io.StringIO(c))) for c in contents]
    assert all(
        t[0] == ["EntryId", "Manager", "Stream", "Account", "BookedAt", "Amount"] for t in tables
    )
    assert [int(r[0]) for t in tables for r in t[1:]] == list(range(1, 2501))


async def test_the_demo_payments_are_excel_ru_csv(tmp_path: Path) -> None:
    config, providers = await demo_providers(demo_catalog(tmp_path / "demo", 10), tmp_path / "d")
    async with engine_kit(config, tmp_path / "d", DEMO_CREDS, providers=providers) as kit:
        state = await kit.run_to_end(WHO, plan(config, body("s-payments")))
        files = await kit.repo.files(state.run_id)
        data = (kit.files_root / files[0].run_id / files[0].name).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    lines = data[3:].decode("utf-8").splitlines()
    assert lines[0] == "PaymentId;OrderId;Method;PaidAt;Amount"
    _, _, method, paid_at, amount = lines[1].split(";")
    assert method in {"cash", "card"}
    day, month, year = paid_at.split(".")
    assert (len(day), len(month), len(year)) == (2, 2, 4)
    assert "." not in amount
    assert any("," in line.split(";")[4] for line in lines[1:])


async def test_a_character_the_encoding_cannot_hold_fails_the_variant(tmp_path: Path) -> None:
    catalog = demo_catalog(tmp_path / "demo", 10)
    (catalog.parent / "sql" / "customers_v2.sql").write_text(
        "SELECT 1 AS customer_id, 'Ромашка' AS name, 'Москва' AS city, 1 AS orders, 1.5 AS total\n"
        "UNION ALL SELECT 2, 'Snow ☃ Inc', 'Berlin', 2, 2.5\n",
        "utf-8",
    )
    config, providers = await demo_providers(catalog, tmp_path / "d")
    config.output.profiles.append(OutputProfile(id="win", encoding="cp1251"))
    config.groups[0].scripts[1].output_profile = "win"
    async with engine_kit(config, tmp_path / "d", DEMO_CREDS, providers=providers) as kit:
        state = await kit.run_to_end(WHO, plan(config, body("s-customers")))
        files = await kit.repo.files(state.run_id)
        on_disk = sorted(p.name for p in (kit.files_root / state.run_id).iterdir())
    v1, v2, v3 = state.groups[0].scripts[0].variants
    assert (v1.status, v3.status) == ("Success", "Success")
    assert v2.status == "Failed"
    assert v2.error == "row 2, column 'Name' holds '☃', which cannot be written in cp1251"
    assert [f.variant for f in files] == [1, 3]
    assert on_disk == sorted(f.name for f in files)  # no partial file of variant 2


PG_CREDS = {"sess-1": (USER1, USER1_PASSWORD)}
PG_USER = user(USER1, "sess-1")


async def test_postgres_rows_path_for_xlsx_profiles_and_parts(
    catalog: ExportConfig, tmp_path: Path
) -> None:
    # COPY for every CSV (a decimal comma applied by the server, split files cut from its
    # bytes); XLSX takes the cursor path.
    catalog.output.profiles.append(
        OutputProfile(id="ru", delimiter=";", decimal_separator=",", date_format="dd.mm.yyyy")
    )
    async with engine_kit(catalog, tmp_path / "data", PG_CREDS) as kit:
        book = await kit.run_to_end(
            PG_USER, plan(catalog, single("s-bad", "g-misc", format="xlsx"))
        )
        catalog.groups[1].scripts[0].output_profile = "ru"
        ru = await kit.run_to_end(PG_USER, plan(catalog, single("s-bad", "g-misc")))
        catalog.groups[1].scripts[0].output_profile = ""
        catalog.output.max_rows_per_file = 3
        parts = await kit.run_to_end(PG_USER, plan(catalog, single("s-bad", "g-misc")))
        files = {s.run_id: await kit.repo.files(s.run_id) for s in (book, ru, parts)}
        root = kit.files_root

    def variants(state: RunState) -> list[tuple[str, str | None]]:
        return [(v.status, v.error) for v in state.groups[0].scripts[0].variants]

    for state in (book, ru, parts):  # variant 2 divides by zero on the server
        assert [s for s, _ in variants(state)] == ["Success", "Failed", "Success"]
        assert "division by zero" in (variants(state)[1][1] or "")
    first = files[book.run_id][0]
    [sheet], _ = read_xlsx(root / first.run_id / first.name)
    assert sheet.values()[0] == ["OrderId", "Клиент", "Amount"]
    assert [c.kind if c else None for c in sheet.rows[1]] == ["n", "s", "n"]  # numeric(12,2)
    assert len(sheet.rows) == 6
    text = (root / ru.run_id / files[ru.run_id][0].name).read_text("utf-8").splitlines()
    assert text[0] == "OrderId;Клиент;Amount"
    assert text[1].split(";")[2] == "37,50"  # order 1: 1 * 37 % 1000 + 0.5
    assert [(f.variant, f.rows) for f in files[parts.run_id]] == [
        (1, 3),
        (1, 2),
        (3, 3),
        (3, 3),
        (3, 1),
    ]
    assert [f.name for f in files[parts.run_id]][:2] == [
        f"{USER1}_s-bad_v1_part001.csv",
        f"{USER1}_s-bad_v1_part002.csv",
    ]


async def test_a_cancelled_xlsx_export_leaves_no_file(tmp_path: Path) -> None:
    config, providers = await demo_providers(
        demo_catalog(tmp_path / "demo", 300_000), tmp_path / "d"
    )
    async with engine_kit(
        config, tmp_path / "d", DEMO_CREDS, providers=providers, progress_interval_s=0.05
    ) as kit:
        state = await kit.engine.start(WHO, plan(config, body("s-ledger", "g-big", format="xlsx")))

        async def writing() -> bool:
            return bool(kit.events.of("script.progress", runId=state.run_id))

        await poll_until(writing, 60)
        await kit.engine.cancel(state.run_id)
        await kit.engine.wait(state.run_id)
        loaded = await kit.repo.load(state.run_id)
        files = await kit.repo.files(state.run_id)
        directory = kit.files_root / state.run_id
        left = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    assert loaded is not None
    assert loaded.status == "Cancelled"
    assert files == []
    assert left == []


async def test_a_file_is_listed_with_the_charset_of_its_profile(tmp_path: Path) -> None:
    # A cp1251 profile of one script, while [output] stays UTF-8: the file says so itself,
    # whatever the catalog says by the time it is downloaded.
    config, providers = await demo_providers(demo_catalog(tmp_path / "demo", 10), tmp_path / "d")
    config.output.profiles.append(OutputProfile(id="win", encoding="cp1251"))
    config.groups[0].scripts[1].output_profile = "win"
    assert config.output.encoding != "cp1251"
    async with engine_kit(config, tmp_path / "d", DEMO_CREDS, providers=providers) as kit:
        win = await kit.run_to_end(WHO, plan(config, body("s-customers")))
        packed = await kit.run_to_end(WHO, plan(config, body("s-customers", format="csv.gz")))
        win_files = await kit.repo.files(win.run_id)
        packed_files = await kit.repo.files(packed.run_id)
    assert win_files
    assert {f.media_type for f in win_files} == {"text/csv; charset=windows-1251"}
    assert {f.media_type for f in win_files} == {"text/csv; charset=windows-1251"}
    assert {f.media_type for f in packed_files} == {"application/gzip"}


async def test_a_text_longer_than_an_xlsx_cell_fails_the_variant(tmp_path: Path) -> None:
    catalog = demo_catalog(tmp_path / "demo", 10)
    (catalog.parent / "sql" / "customers_v2.sql").write_text(
        "SELECT 1 AS customer_id, 'Short' AS name, 'Moscow' AS city, 1 AS orders, 1.5 AS total\n"
        "UNION ALL SELECT 2, hex(zeroblob(16384)), 'Berlin', 2, 2.5\n",  # 32,768 characters
        "utf-8",
    )
    config, providers = await demo_providers(catalog, tmp_path / "d")
    async with engine_kit(config, tmp_path / "d", DEMO_CREDS, providers=providers) as kit:
        state = await kit.run_to_end(WHO, plan(config, body("s-customers", format="xlsx")))
        files = await kit.repo.files(state.run_id)
        on_disk = sorted(p.name for p in (kit.files_root / state.run_id).iterdir())
    v1, v2, v3 = state.groups[0].scripts[0].variants
    assert (v1.status, v3.status) == ("Success", "Success")
    assert v2.status == "Failed"
    assert v2.error == (
        "row 2, column 'Name' holds a value longer than Excel's 32,767 characters; "
        "export this script as csv"
    )
    assert [f.variant for f in files] == [1, 3]
    assert on_disk == sorted(f.name for f in files)  # no partial or temporary file of variant 2
