"""Retention: finished runs older than ``server.retention_days`` go, their files first.

Swept at start and then every ``sweep_s`` by the engine's task group; a run still active here is
never touched (finished runs are not active, but a sweep must not race a resumed one).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import structlog

from exporter_api.runs.models import format_time

if TYPE_CHECKING:
    from exporter_api.runs.repository import RunRepository

_log = structlog.get_logger("exporter_api.runs.retention")

_BATCH = 500


class Retention:
    def __init__(
        self,
        repo: RunRepository,
        files_root: Path,
        days: int,
        *,
        is_active: Callable[[str], bool],
        sweep_s: float = 3600.0,
    ) -> None:
        self.repo = repo
        self.files_root = files_root
        self.days = days
        self.is_active = is_active
        self.sweep_s = sweep_s

    async def loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # the store may be briefly unavailable; try again later
                _log.warning("retention_sweep_failed", error_type=type(exc).__name__)
            await anyio.sleep(self.sweep_s)

    async def sweep(self, now: datetime | None = None) -> list[str]:
        """Delete runs that finished more than ``days`` ago, files first; their ids."""
        if self.days <= 0:
            return []
        cutoff = format_time((now or datetime.now(UTC)) - timedelta(days=self.days))
        deleted: list[str] = []
        while batch := await self.repo.finished_before(cutoff):
            for run_id in batch:
                if self.is_active(run_id):  # pragma: no cover - finished runs are not active
                    continue
                await anyio.to_thread.run_sync(_remove_tree, self.files_root / run_id)
                if await self.repo.delete_run(run_id):
                    deleted.append(run_id)
            if len(batch) < _BATCH or not deleted:
                break
        if deleted:
            _log.info("runs_expired", count=len(deleted), retention_days=self.days)
        return deleted


def _remove_tree(directory: Path) -> None:
    """Remove a run's file directory (blocking: run it on a worker thread)."""
    if directory.is_dir():
        shutil.rmtree(directory)
