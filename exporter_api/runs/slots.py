"""Per-database connection caps that hold across every instance sharing the state store.

A database with ``max_connections = N`` has N rows in ``run_slots``. A variant's query runs only
while its script holds one: first a slot of the in-process ``CapacityLimiter`` (so this
instance's lanes queue without touching the store), then a lease on a free row, taken by one
conditional ``UPDATE`` (PostgreSQL re-checks the ``WHERE`` on the row it locked, so two
instances never lease the same row; SQLite has one writer). Leases carry the instance's
heartbeat (stamped and compared by the store's clock, as the runs' are: `queue.store_clock`): a
dead instance's leases go stale after the takeover threshold and are free again, without any
cluster protocol. A lease is released as soon as the script ends.

Why rows and not PostgreSQL advisory locks held on a dedicated connection (released by the
server when the instance dies): the same code serves the SQLite default, the leases are visible
(and countable) in the store, and a run taken over frees its dead owner's slots on the same
takeover clock as the run itself.

Waiting for a slot another instance holds is a short poll (``poll_s``); releases made here wake
the local waiters at once.

A lease attempt can change the row and still fail here (the caller is cancelled, or the store
fails, before the reply arrives): the attempt's holder is then released at once (shielded,
bounded), and each new attempt takes a fresh holder. The heartbeat refreshes only the holders
this instance holds (or is leasing) now -- never every row naming it -- so a lease nobody holds
goes stale and is free again instead of shrinking the database's cap for good.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import structlog

from exporter_api.runs.queue import store_clock

if TYPE_CHECKING:
    from exporter_api.store import Store

_log = structlog.get_logger("exporter_api.runs.slots")


async def held_by_database(store: Store, stale_after_s: float) -> dict[str, int]:
    """Leases held now by live instances (heartbeat younger than ``stale_after_s``), per
    database (metrics: connections in use)."""
    rows = await store.fetch_all(
        "SELECT database_id, COUNT(*) FROM run_slots WHERE holder <> ''"  # noqa: S608
        f" AND heartbeat_at >= {store_clock(store, minus='stale_s')} GROUP BY database_id",
        {"stale_s": float(stale_after_s)},
    )
    return {str(db): int(n) for db, n in rows}


class SlotLeases:
    def __init__(
        self,
        store: Store,
        instance_id: str,
        limits: Mapping[str, int],
        *,
        stale_after_s: float,
        poll_s: float = 0.2,
        release_timeout_s: float = 5.0,
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.limits = {db: max(1, n) for db, n in limits.items()}
        self.stale_after_s = stale_after_s
        self.poll_s = poll_s
        self.release_timeout_s = release_timeout_s
        self._local = {db: anyio.CapacityLimiter(n) for db, n in self.limits.items()}
        self._released = anyio.Event()
        # Holders of this instance's leases (and of the attempt in flight): the heartbeat
        # refreshes these only.
        self._held: set[str] = set()
        # Leases whose release failed (the store was unavailable): released by the heartbeat,
        # never refreshed by it (else a live instance would hold them for ever).
        self._unreleased: set[str] = set()

    async def prepare(self, *, exclusive: bool) -> None:
        """Create the slot rows (idempotent). With a store only this process uses, leases left
        by a previous process are freed at once."""
        for db, n in self.limits.items():
            for slot in range(n):
                await self.store.execute(
                    "INSERT INTO run_slots (database_id, slot, instance_id, holder, heartbeat_at)"  # noqa: S608 - no user input
                    f" VALUES (:db, :slot, '', '', {store_clock(self.store)})"
                    " ON CONFLICT (database_id, slot) DO NOTHING",
                    {"db": db, "slot": slot},
                )
        if exclusive:
            await self.store.execute(
                "UPDATE run_slots SET instance_id = '', holder = '', run_id = NULL"
                " WHERE instance_id <> :me",
                {"me": self.instance_id},
            )

    @asynccontextmanager
    async def hold(self, database_id: str, run_id: str) -> AsyncIterator[None]:
        """Hold one connection slot of ``database_id`` (waiting for one as long as needed)."""
        async with self._local[database_id]:
            holder = await self._lease(database_id, run_id)
            try:
                yield
            finally:
                await self._release_now(holder)

    async def _lease(self, database_id: str, run_id: str) -> str:
        """Lease a row; its holder. Whatever interrupts an attempt releases that attempt's
        holder (its ``UPDATE`` may have been applied without the reply reaching us)."""
        while True:
            holder = secrets.token_hex(12)
            self._held.add(holder)
            released = self._released
            leased: bool | None = None  # None: the attempt failed or was cancelled
            try:
                leased = await self._try_lease(database_id, run_id, holder)
            except Exception as exc:  # the store may be briefly unavailable: wait, retry
                _log.warning("slot_lease_failed", run_id=run_id, error_type=type(exc).__name__)
            finally:
                if leased is None:  # the row may be leased all the same: free it
                    await self._release_now(holder)
            if leased:
                return holder
            self._held.discard(holder)
            with anyio.move_on_after(self.poll_s):
                await released.wait()

    async def _release_now(self, holder: str) -> None:
        """Release ``holder`` even when cancelled, for at most ``release_timeout_s``; a release
        that could not be made is left to the heartbeat."""
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.release_timeout_s) as bounded:
                await self._release(holder)
            if bounded.cancelled_caught:
                self._unreleased.add(holder)
                _log.warning("slot_release_failed", error_type="TimeoutError")
        self._held.discard(holder)

    async def heartbeat(self) -> None:
        for holder in list(self._unreleased):
            await self._release(holder)
        held = sorted(self._held - self._unreleased)
        if not held:
            return
        names = {f"h{i}": h for i, h in enumerate(held)}
        await self.store.execute(
            f"UPDATE run_slots SET heartbeat_at = {store_clock(self.store)}"  # noqa: S608
            f" WHERE instance_id = :me AND holder IN ({', '.join(':' + n for n in names)})",
            {"me": self.instance_id, **names},
        )

    async def held(self, database_id: str) -> int:
        """Leases of ``database_id`` held now by live instances (tests)."""
        return (await held_by_database(self.store, self.stale_after_s)).get(database_id, 0)

    async def _try_lease(self, database_id: str, run_id: str, holder: str) -> bool:
        free = f"(holder = '' OR heartbeat_at < {store_clock(self.store, minus='stale_s')})"
        changed = await self.store.execute(
            f"UPDATE run_slots SET instance_id = :me, holder = :holder, run_id = :run_id,"  # noqa: S608
            f" heartbeat_at = {store_clock(self.store)} WHERE database_id = :db AND {free}"
            " AND slot = ("
            f" SELECT slot FROM run_slots WHERE database_id = :db AND slot < :max AND {free}"
            " ORDER BY slot LIMIT 1)",
            {
                "me": self.instance_id,
                "holder": holder,
                "run_id": run_id,
                "db": database_id,
                "max": self.limits[database_id],
                "stale_s": float(self.stale_after_s),
            },
        )
        return changed > 0

    async def _release(self, holder: str) -> None:
        try:
            await self.store.execute(
                "UPDATE run_slots SET instance_id = '', holder = '', run_id = NULL"
                " WHERE holder = :holder",
                {"holder": holder},
            )
        except Exception as exc:
            self._unreleased.add(holder)
            _log.warning("slot_release_failed", error_type=type(exc).__name__)
            return
        self._unreleased.discard(holder)
        released, self._released = self._released, anyio.Event()
        released.set()


__all__ = ["SlotLeases"]
