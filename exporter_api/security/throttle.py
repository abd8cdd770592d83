"""Login throttling: too many failures for one (database, login, client) lock it out a while.

Theory of operation: the limit must hold when attempts arrive in parallel, on one instance or on
several sharing the store. So the decision is taken *before* the database is asked, in one store
transaction serialised per key (`Store.lock`: a PostgreSQL advisory lock, SQLite's BEGIN
IMMEDIATE), and every attempt in flight holds a reservation (a `login_attempts` row):

    reserve   locked out                                     -> 429 (Retry-After: lockout left)
              failures in the window + reservations >= max   -> 429
              otherwise insert a reservation                 -> ask the database
    401       delete the reservation, count a failure (at the limit: lock out)   one transaction
    success   delete the reservation and the failure count                       one transaction
    anything  else (503, timeout, cancelled): delete the reservation; it does not count

A reservation expires at `expires_at` (the attempt's time limit plus a margin), so a crashed
process never locks a user out for good; the caller bounds the database call by that same time
limit, so no attempt outlives its reservation and the limit stays exact.

After a lockout ends, one attempt at a time is let through until the window ends; its failure
locks the key again.

State lives in the store; keys are hashed: no login or address is stored in clear.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
import structlog

from exporter_api.errors import StoreUnavailable, TooManyRequests
from exporter_api.store import Store
from exporter_api.timestamps import format_time as _iso
from exporter_api.timestamps import parse_time as _parse
from exporter_api.timestamps import wall_clock as _now

_log = structlog.get_logger("exporter_api.security.throttle")

# Covers the store writes around the attempt and a clock step between instances.
_EXPIRY_MARGIN = timedelta(seconds=30)
# Bounds the shielded store writes made while a request unwinds.
_STORE_TIMEOUT_S = 10.0
_LOCK_PREFIX = "login_throttle:"


class LoginAttempt:
    """One reserved login attempt; record its outcome with `failed()` or `succeeded()`."""

    def __init__(self, throttle: LoginThrottle, key: str, attempt_id: str) -> None:
        self._throttle = throttle
        self.key = key
        self.attempt_id = attempt_id
        self.open = True  # False once the outcome is recorded

    async def failed(self) -> bool:
        """The database refused the credentials: the reservation becomes a counted failure.
        Returns whether this failure locked the key out.

        Raises StoreUnavailable when the failure cannot be recorded; the reservation is then
        kept (never released) and counts until it expires.
        """
        self.open = False
        locked = False
        # Shielded: once the database has said no, a cancelled request must not uncount it.
        with anyio.move_on_after(_STORE_TIMEOUT_S, shield=True) as scope:
            locked = await self._throttle._record_failure(self)
        if scope.cancelled_caught:
            raise StoreUnavailable()
        return locked

    async def succeeded(self) -> None:
        """The credentials are good: drop the reservation and the key's failure count."""
        await self._throttle._record_success(self)
        self.open = False


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

    @asynccontextmanager
    async def attempt(self, key: str, time_limit_s: float) -> AsyncIterator[LoginAttempt]:
        """Reserve one login attempt for `key` (raises TooManyRequests with Retry-After).

        The caller asks the database within `time_limit_s` and records the outcome on the
        attempt; an attempt left without an outcome (database unavailable, timeout, cancelled)
        is released when the block ends and does not count.
        """
        attempt = await self._reserve(key, time_limit_s)
        try:
            yield attempt
        finally:
            if attempt.open:
                await self._release(attempt)

    async def _reserve(self, key: str, time_limit_s: float) -> LoginAttempt:
        now = _now()
        attempt_id = secrets.token_hex(16)
        async with self._store.transaction():
            await self._store.lock(_LOCK_PREFIX + key)
            row = await self._store.fetch_one(
                "SELECT failures, window_start, locked_until FROM login_throttle"
                " WHERE throttle_key = :k",
                {"k": key},
            )
            failures = 0
            if row is not None:
                if row[2] is not None:
                    left = (_parse(str(row[2])) - now).total_seconds()
                    if left > 0:
                        _log.info("login_throttled", reason="locked_out")
                        raise TooManyRequests(
                            "too many failed logins; try again later",
                            retry_after_s=math.ceil(left),
                        )
                    # Lockout over, window not: one attempt at a time (a failure relocks).
                    failures = min(int(row[0]), self.max_failures - 1)
                else:
                    failures = int(row[0])
                if _parse(str(row[1])) + self.window < now:
                    failures = 0
            await self._store.execute(
                "DELETE FROM login_attempts WHERE throttle_key = :k AND expires_at <= :now",
                {"k": key, "now": _iso(now)},
            )
            in_flight = await self._store.fetch_all(
                "SELECT expires_at FROM login_attempts WHERE throttle_key = :k ORDER BY expires_at",
                {"k": key},
            )
            if failures + len(in_flight) >= self.max_failures:
                # A slot frees when an attempt in flight ends; its reservation's expiry bounds it.
                soonest = _parse(str(in_flight[0][0])) if in_flight else now + self.lockout
                wait = min((soonest - now).total_seconds(), self.lockout.total_seconds())
                _log.info("login_throttled", reason="attempts_in_flight", in_flight=len(in_flight))
                raise TooManyRequests(
                    "too many login attempts; try again later",
                    retry_after_s=max(1, math.ceil(wait)),
                )
            expires = now + timedelta(seconds=time_limit_s) + _EXPIRY_MARGIN
            await self._store.execute(
                "INSERT INTO login_attempts (attempt_id, throttle_key, expires_at)"
                " VALUES (:id, :k, :e)",
                {"id": attempt_id, "k": key, "e": _iso(expires)},
            )
        return LoginAttempt(self, key, attempt_id)

    async def _record_failure(self, attempt: LoginAttempt) -> bool:
        now = _now()
        key = attempt.key
        async with self._store.transaction():
            await self._store.lock(_LOCK_PREFIX + key)
            await self._store.execute(
                "DELETE FROM login_attempts WHERE attempt_id = :id", {"id": attempt.attempt_id}
            )
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
        return locked is not None

    async def _record_success(self, attempt: LoginAttempt) -> None:
        async with self._store.transaction():
            await self._store.lock(_LOCK_PREFIX + attempt.key)
            await self._store.execute(
                "DELETE FROM login_attempts WHERE attempt_id = :id", {"id": attempt.attempt_id}
            )
            await self._store.execute(
                "DELETE FROM login_throttle WHERE throttle_key = :k", {"k": attempt.key}
            )

    async def _release(self, attempt: LoginAttempt) -> None:
        # Runs while the request unwinds (cancelled or failing): shielded and bounded. If the
        # store cannot be reached the reservation simply expires.
        with anyio.move_on_after(_STORE_TIMEOUT_S, shield=True):
            try:
                await self._store.execute(
                    "DELETE FROM login_attempts WHERE attempt_id = :id",
                    {"id": attempt.attempt_id},
                )
            except StoreUnavailable:
                _log.warning("login_attempt_release_failed")


__all__ = ["LoginAttempt", "LoginThrottle"]
