"""The lease watchdog: a run driven here stops before another instance may take it over.

Every write that stamps a run's heartbeat renews this instance's lease on it
(``ActiveRun.leased_at``). Another instance takes a run over once its heartbeat is older than
``takeover_after_s``; so a run whose heartbeat could not be stamped for ``lease_s`` (the store
cannot be reached) -- ``takeover_after_s - heartbeat_s``, at least half of it -- stops here
without writing anything more, as a lost run does, and two instances never write its files at
once. It is taken over, or claimed again here, once the store answers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anyio
import structlog

if TYPE_CHECKING:
    from exporter_api.runs.executor import ActiveRun

_log = structlog.get_logger("exporter_api.runs.leases")


class LeaseWatch:
    def __init__(
        self, active: Mapping[str, ActiveRun], *, heartbeat_s: float, takeover_after_s: float
    ) -> None:
        self._active = active  # the runs driven here
        self.heartbeat_s = heartbeat_s
        # The config keeps takeover_after_s >= 2 * heartbeat_s; half of it for direct callers.
        self.lease_s = max(takeover_after_s - heartbeat_s, takeover_after_s / 2)

    async def loop(self) -> None:
        while True:
            leased = [run.leased_at for run in self._active.values() if not run.lost]
            expiry = min(leased, default=time.monotonic() + self.heartbeat_s) + self.lease_s
            await anyio.sleep(min(self.heartbeat_s, max(0.0, expiry - time.monotonic())))
            self.abandon_expired()

    def abandon_expired(self) -> list[str]:
        """Stop the runs whose heartbeat could not be stamped for ``lease_s``: another instance
        may take them over soon, so this one writes nothing more for them."""
        now = time.monotonic()
        expired = [
            run
            for run in self._active.values()
            if not run.lost and now - run.leased_at >= self.lease_s
        ]
        for run in expired:
            run.lost = True
            run.scope.cancel()
        if expired:
            _log.warning(
                "runs_abandoned_store_unreachable",
                run_ids=[run.run_id for run in expired],
                lease_s=self.lease_s,
            )
        return [run.run_id for run in expired]


__all__ = ["LeaseWatch"]
