"""The bundled demo catalog (sqlite provider) with a ledger of a chosen size, for file tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from exporter_api.config import ExportConfig, load_config
from exporter_api.providers import DatabaseProvider, create_provider

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo"
DEMO_CREDS = {"sess-demo": ("USER1", "demo")}


def demo_catalog(target: Path, ledger_rows: int) -> Path:
    """A copy of the demo catalog whose g-big ledger has ``ledger_rows`` rows."""
    shutil.copytree(DEMO, target)
    init = target / "sql" / "init_demo.sql"
    init.write_text(init.read_text("utf-8").replace("i < 2000000", f"i < {ledger_rows}"), "utf-8")
    return target / "exporter.toml"


async def demo_providers(
    config_path: Path, data_dir: Path
) -> tuple[ExportConfig, dict[str, DatabaseProvider]]:
    """The catalog and its started providers (the sqlite database generated in ``data_dir``)."""
    config = load_config(config_path)
    providers = {
        db.id: create_provider(db, data_dir, config_path.parent) for db in config.databases
    }
    for provider in providers.values():
        await provider.start()
    return config, providers
