"""Login throttling: too many failures for one (database, login, client) lock it out a while.

State lives in the store, so several instances share it. Keys are hashed: no login or address
is stored in clear.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta

from exporter_api.errors import TooManyRequests
from exporter_api.store import Store


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LoginThrottle:
    def __init__(self, store: Store, max_failures: int, window_s: int, lockout_s: int) -> None:
        self._store = store
        self.max_failures = max_failures
        self.window = timedelta(seconds=window_s)
        self.lockout = timedelta(seconds=lockout_s)

    @staticmethod
    def key(database_id: str, login: str, client: str) -> str:
        raw = "\x00".join((database_id, login.casefold(), client))
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    async def check(self, key: str) -> None:
        """Raise TooManyRequests (with Retry-After seconds) while `key` is locked out."""
        row = await self._store.fetch_one(
            "SELECT locked_until FROM login_throttle WHERE throttle_key = :k", {"k": key}
        )
        if row is None or row[0] is None:
            return
        left = (_parse(str(row[0])) - _now()).total_seconds()
        if left > 0:
            raise TooManyRequests(
                "too many failed logins; try again later", retry_after_s=math.ceil(left)
            )

    async def failure(self, key: str) -> None:
        now = _now()
        async with self._store.transaction():
            row = await self._store.fetch_one(
                "SELECT failures, window_start FROM login_throttle WHERE throttle_key = :k",
                {"k": key},
            )
            if row is None or _parse(str(row[1])) + self.window < now:
                failures, window_start = 1, now
            else:
                failures, window_start = int(row[0]) + 1, _parse(str(row[1]))
            locked = _iso(now + self.lockout) if failures >= self.max_failures else None
            params = {"k": key, "f": failures, "w": _iso(window_start), "l": locked}
            await self._store.execute(
                "INSERT INTO login_throttle (throttle_key, failures, window_start, locked_until)"
                " VALUES (:k, :f, :w, :l) ON CONFLICT (throttle_key) DO UPDATE SET"
                " failures = excluded.failures, window_start = excluded.window_start,"
                " locked_until = excluded.locked_until",
                params,
            )

    async def success(self, key: str) -> None:
        await self._store.execute("DELETE FROM login_throttle WHERE throttle_key = :k", {"k": key})


__all__ = ["LoginThrottle"]
