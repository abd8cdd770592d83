"""Database providers: postgres (asyncpg), oracle (python-oracledb thin), sqlite (the demo)."""

from __future__ import annotations

from pathlib import Path

from exporter_api.config import DatabaseConfig
from exporter_api.providers.base import (
    DatabaseProvider,
    ExportColumn,
    ExportRequest,
    ExportResult,
    ExportSink,
    wrap_columns,
)


def create_provider(config: DatabaseConfig, data_dir: Path, config_dir: Path) -> DatabaseProvider:
    """The provider for one configured database (drivers are imported only when used)."""
    if config.provider == "postgres":
        from exporter_api.providers.postgres import PostgresProvider

        return PostgresProvider(config)
    if config.provider == "oracle":
        from exporter_api.providers.oracle import OracleProvider

        return OracleProvider(config)
    from exporter_api.providers.sqlite import SqliteProvider

    return SqliteProvider(config, data_dir, config_dir)


__all__ = [
    "DatabaseProvider",
    "ExportColumn",
    "ExportRequest",
    "ExportResult",
    "ExportSink",
    "create_provider",
    "wrap_columns",
]
