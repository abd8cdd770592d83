"""Who drives which run: claims, heartbeats, hand-overs and cancel flags in the state store.

Every active run row names the instance driving it (``instance_id``) and when that instance last
proved alive (``heartbeat_at``). A run is *claimable* when nobody drives it (``instance_id = ''``:
queued, or handed over by a draining instance) or when its driver's heartbeat is older than the
takeover threshold (the instance died). Claiming is one conditional ``UPDATE`` that names the
driver and heartbeat the claimer saw: of several instances racing for a run exactly one changes
the row (PostgreSQL re-checks the ``WHERE`` on the row it locked; SQLite has one writer), the
others change nothing and move on. The same code serves both stores.

Saves of the run tree are fenced by ``instance_id`` too (`RunRepository.save`), so an instance
that lost its run (taken over while it was cut off from the store) can no longer overwrite it.

Heartbeats are stamped, and compared with the takeover cut-off, by the store's clock
(`store_clock`), never by an instance's own: instances whose clocks disagree by more than
``takeover_after_s - heartbeat_s`` would otherwise take live runs over. (A SQLite store has one
process, whose clock it is.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter_api.store import Store

UNCLAIMED = ""


def store_clock(store: Store, *, minus: str | None = None) -> str:
    """SQL for the store's clock now -- minus the seconds bound to the parameter named
    ``minus`` -- as the ISO-8601 UTC text of ``models.format_time`` (milliseconds)."""
    if store.backend == "postgres":
        moment = "clock_timestamp()"
        if minus is not None:
            moment = f"(clock_timestamp() - make_interval(secs => :{minus}))"
        return f"to_char({moment} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
    shift = "" if minus is None else f", printf('-%.3f seconds', :{minus})"
    return f"strftime('%Y-%m-%dT%H:%M:%fZ', 'now'{shift})"


@dataclass(frozen=True)
class Claimable:
    run_id: str
    instance_id: str
    heartbeat_at: str
    stale: bool = False  # its driver's heartbeat is older than the takeover cut-off


@dataclass(frozen=True)
class Claim:
    """A run this instance now drives: how often it was taken over, whether a cancel waits."""

    run_id: str
    attempts: int
    cancel_requested: bool


class RunQueue:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def claimable(
        self, *, stale_after_s: float | None, after: str = "", limit: int = 20
    ) -> list[Claimable]:
        """Active runs nobody drives, oldest first (those after the run id ``after``: pages):
        unclaimed ones, and those whose driver's heartbeat is older than ``stale_after_s``
        (every claimed one when it is None: a store only this process uses, just started)."""
        rows = await self.store.fetch_all(
            "SELECT run_id, instance_id, heartbeat_at FROM runs"  # noqa: S608 - no user input
            " WHERE status IN ('Queued', 'Running') AND run_id > :after"
            " AND (instance_id = '' OR :every = 1"
            f" OR heartbeat_at < {store_clock(self.store, minus='stale_s')})"
            " ORDER BY run_id LIMIT :limit",
            {
                "every": int(stale_after_s is None),
                "stale_s": float(stale_after_s or 0.0),
                "after": after,
                "limit": limit,
            },
        )
        return [Claimable(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def claim(self, seen: Claimable, instance_id: str) -> Claim | None:
        """Take ``seen`` over if it is still as seen; None when another instance was first."""
        async with self.store.transaction():
            changed = await self.store.execute(
                f"UPDATE runs SET instance_id = :me, heartbeat_at = {store_clock(self.store)},"  # noqa: S608 - no user input
                " attempts = attempts + CASE WHEN instance_id = '' THEN 0 ELSE 1 END"
                " WHERE run_id = :run_id AND instance_id = :seen AND heartbeat_at = :seen_at"
                " AND status IN ('Queued', 'Running')",
                {
                    "me": instance_id,
                    "run_id": seen.run_id,
                    "seen": seen.instance_id,
                    "seen_at": seen.heartbeat_at,
                },
            )
            if not changed:
                return None
            row = await self.store.fetch_one(
                "SELECT attempts, cancel_requested FROM runs WHERE run_id = :run_id",
                {"run_id": seen.run_id},
            )
        assert row is not None
        return Claim(seen.run_id, int(row[0]), bool(row[1]))

    async def release(self, run_id: str, instance_id: str) -> bool:
        """Hand a run this instance drives back to the queue (a drain): another claims it at
        once, and it does not count as a takeover."""
        changed = await self.store.execute(
            f"UPDATE runs SET instance_id = '', heartbeat_at = {store_clock(self.store)}"  # noqa: S608 - no user input
            " WHERE run_id = :run_id AND instance_id = :me AND status IN ('Queued', 'Running')",
            {"run_id": run_id, "me": instance_id},
        )
        return changed > 0

    async def heartbeat(self, run_ids: list[str], instance_id: str) -> list[str]:
        """Refresh the heartbeat of the runs driven here; returns those no longer ours (taken
        over while this instance could not reach the store).

        A run this instance has just saved as finished is still its own (the row names it):
        only a row naming another driver, or a row that is gone, means the run was lost."""
        lost: list[str] = []
        for run_id in run_ids:
            changed = await self.store.execute(
                f"UPDATE runs SET heartbeat_at = {store_clock(self.store)}"  # noqa: S608 - no user input
                " WHERE run_id = :run_id AND instance_id = :me",
                {"run_id": run_id, "me": instance_id},
            )
            if not changed:
                lost.append(run_id)
        return lost

    async def request_cancel(self, run_id: str, *, stale_after_s: float) -> Claimable | None:
        """Flag an active run for cancellation (the durable truth of a cancel); its driver and
        heartbeat (stale when older than ``stale_after_s``), or None when it is not active."""
        async with self.store.transaction():
            changed = await self.store.execute(
                "UPDATE runs SET cancel_requested = 1"
                " WHERE run_id = :run_id AND status IN ('Queued', 'Running')",
                {"run_id": run_id},
            )
            if not changed:
                return None
            row = await self.store.fetch_one(
                "SELECT instance_id, heartbeat_at,"  # noqa: S608 - no user input
                f" CASE WHEN heartbeat_at < {store_clock(self.store, minus='stale_s')}"
                " THEN 1 ELSE 0 END FROM runs WHERE run_id = :run_id",
                {"run_id": run_id, "stale_s": float(stale_after_s)},
            )
        if row is None:
            return None
        return Claimable(run_id, str(row[0]), str(row[1]), stale=bool(row[2]))

    async def cancel_requests(self, instance_id: str) -> list[str]:
        """Active runs driven by ``instance_id`` that a cancel was asked for."""
        rows = await self.store.fetch_all(
            "SELECT run_id FROM runs WHERE instance_id = :me AND cancel_requested = 1"
            " AND status IN ('Queued', 'Running')",
            {"me": instance_id},
        )
        return [str(r[0]) for r in rows]

    async def cancel_requested(self, run_id: str) -> bool:
        """Whether a cancel was asked for ``run_id``."""
        row = await self.store.fetch_one(
            "SELECT cancel_requested FROM runs WHERE run_id = :run_id", {"run_id": run_id}
        )
        return row is not None and bool(row[0])

    async def driver(self, run_id: str) -> Claimable | None:
        row = await self.store.fetch_one(
            "SELECT instance_id, heartbeat_at FROM runs WHERE run_id = :run_id",
            {"run_id": run_id},
        )
        return Claimable(run_id, str(row[0]), str(row[1])) if row is not None else None


__all__ = ["UNCLAIMED", "Claim", "Claimable", "RunQueue", "store_clock"]
