"""The resources one running service holds; built in the app lifespan (never module globals)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import anyio.abc

from exporter_api.audit import AuditTrail
from exporter_api.config import ExportConfig, Settings
from exporter_api.metrics import Metrics
from exporter_api.notify import Notifier
from exporter_api.providers.base import DatabaseProvider
from exporter_api.security.links import DownloadLinks
from exporter_api.security.throttle import LoginThrottle
from exporter_api.security.tokens import TokenService
from exporter_api.security.vault import CredentialVault
from exporter_api.store.base import Store


@dataclass
class Services:
    settings: Settings
    config: ExportConfig
    store: Store
    providers: Mapping[str, DatabaseProvider]  # by database id
    tokens: TokenService
    vault: CredentialVault
    throttle: LoginThrottle
    links: DownloadLinks  # signed download links (?sig=)
    notifier: Notifier  # signals to every instance (PostgreSQL LISTEN/NOTIFY; in-process: SQLite)
    task_group: anyio.abc.TaskGroup  # the app's long-lived task group (lifespan)
    audit: AuditTrail  # the append-only audit trail (exporter_api.audit)
    metrics: Metrics  # Prometheus metrics of this app (exporter_api.metrics)


__all__ = ["Services", "Settings"]
