"""Claiming the runs nobody drives: which ones, in what order, and when (for `RunEngine`).

A run is claimable when it is queued (or handed over by a draining instance) or when its
driver's heartbeat is older than ``takeover_after_s`` (it died); `RunQueue.claim` makes exactly
one instance win each. This module decides when to look -- on ``RUN_QUEUED_CHANNEL`` (`wake`),
else every ``heartbeat_s`` -- and how many to take: one at a time in the loop (the load
changes with every claim), every orphan at startup. Before each claim an instance waits
``claim_delay_s`` per run it already drives (up to ten): an idle instance claims at once, so
queued runs spread over the instances. What a claimed run becomes is the engine's (``adopt``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

import anyio
import structlog

if TYPE_CHECKING:
    from exporter_api.runs.queue import Claim, Claimable, RunQueue

_log = structlog.get_logger("exporter_api.runs.claims")

_CLAIM_PAGE = 20  # claimable runs read at a time
_MAX_DELAYS = 10  # claim_delay_s counted for at most this many runs driven here


class OrphanClaims:
    def __init__(
        self,
        queue: RunQueue,
        instance_id: str,
        *,
        driven: Collection[str],
        unsaved: Collection[str],
        adopt: Callable[[Claimable, Claim, float], Awaitable[bool]],
        draining: Callable[[], bool],
        exclusive_store: bool,
        takeover_after_s: float,
        heartbeat_s: float,
        claim_delay_s: float,
    ) -> None:
        self.queue = queue
        self.instance_id = instance_id
        self._driven = driven  # the runs driven here (their ids)
        self._unsaved = unsaved  # ended here, final state not saved yet: still ours
        self._adopt = adopt
        self._draining = draining
        self.exclusive_store = exclusive_store
        self.takeover_after_s = takeover_after_s
        self.heartbeat_s = heartbeat_s
        self.claim_delay_s = claim_delay_s
        self._wake = anyio.Event()

    def wake(self) -> None:
        """A run was queued somewhere: look now rather than at the next period."""
        self._wake.set()

    async def loop(self) -> None:
        while True:
            with anyio.move_on_after(self.heartbeat_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                while await self.claim(limit=1):  # one at a time: the load changes
                    pass
            except Exception as exc:  # the store may be briefly unavailable; try again later
                _log.warning("claim_failed", error_type=type(exc).__name__)

    async def claim(self, *, startup: bool = False, limit: int | None = None) -> list[str]:
        """Claim and adopt (at most ``limit``) runs nobody drives; their ids. At startup on a
        store only this process uses, every claimed run is an orphan (no takeover delay)."""
        if self._draining():
            return []
        stale_after_s = None if startup and self.exclusive_store else self.takeover_after_s
        claimed: list[str] = []
        after = ""
        while True:  # page by page (run ids ascending): at startup every orphan is claimed
            page = await self.queue.claimable(
                stale_after_s=stale_after_s, after=after, limit=_CLAIM_PAGE
            )
            for seen in page:
                if self._draining() or (limit is not None and len(claimed) >= limit):
                    return claimed
                if seen.run_id in self._driven or seen.run_id in self._unsaved:
                    continue
                if not startup and self._driven:
                    busy = min(len(self._driven), _MAX_DELAYS)
                    await anyio.sleep(busy * self.claim_delay_s)
                began = time.monotonic()
                claim = await self.queue.claim(seen, self.instance_id)
                if claim is not None and await self._adopt(seen, claim, began):
                    claimed.append(seen.run_id)
            if len(page) < _CLAIM_PAGE:
                return claimed
            after = page[-1].run_id


__all__ = ["OrphanClaims"]
