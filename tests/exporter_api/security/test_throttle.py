from __future__ import annotations

import anyio
import pytest

from exporter_api.errors import TooManyRequests
from exporter_api.security.throttle import LoginThrottle
from exporter_api.store import Store

LIMIT_S = 10.0


async def _fail(throttle: LoginThrottle, key: str) -> None:
    async with throttle.attempt(key, LIMIT_S) as attempt:
        await attempt.failed()


async def _in_flight(store: Store) -> int:
    row = await store.fetch_one("SELECT COUNT(*) FROM login_attempts")
    assert row is not None
    return int(row[0])


async def test_lockout_after_repeated_failures(store: Store) -> None:
    throttle = LoginThrottle(store, max_failures=3, window_s=60, lockout_s=30)
    key = throttle.key("db-test", "USER1", "10.0.0.1")
    for _ in range(3):
        await _fail(throttle, key)
    with pytest.raises(TooManyRequests) as info:
        await _fail(throttle, key)
    assert info.value.retry_after_s is not None
    assert 25 <= info.value.retry_after_s <= 30
    # Other users and other clients are not affected.
    await _fail(throttle, throttle.key("db-test", "USER2", "10.0.0.1"))
    await _fail(throttle, throttle.key("db-test", "USER1", "10.0.0.2"))
    # Keys are hashes: neither login nor address is stored.
    dump = repr(await store.fetch_all("SELECT * FROM login_throttle"))
    dump += repr(await store.fetch_all("SELECT * FROM login_attempts"))
    assert "USER1" not in dump
    assert "10.0.0.1" not in dump
    assert await _in_flight(store) == 0


async def test_success_resets(store: Store) -> None:
    throttle = LoginThrottle(store, max_failures=2, window_s=60, lockout_s=30)
    key = throttle.key("db-test", "USER1", "c")
    await _fail(throttle, key)
    async with throttle.attempt(key, LIMIT_S) as attempt:
        await attempt.succeeded()
    await _fail(throttle, key)
    async with throttle.attempt(key, LIMIT_S):
        pass  # one failure only: still allowed
    assert await _in_flight(store) == 0


async def test_window_expiry_restarts_the_count(store: Store) -> None:
    throttle = LoginThrottle(store, max_failures=2, window_s=60, lockout_s=30)
    key = throttle.key("db-test", "USER1", "c")
    await _fail(throttle, key)
    await store.execute("UPDATE login_throttle SET window_start = '2000-01-01T00:00:00.000Z'")
    await _fail(throttle, key)
    async with throttle.attempt(key, LIMIT_S):
        pass


async def test_after_the_lockout_one_attempt_at_a_time(store: Store) -> None:
    throttle = LoginThrottle(store, max_failures=2, window_s=600, lockout_s=30)
    key = throttle.key("db-test", "USER1", "c")
    await _fail(throttle, key)
    await _fail(throttle, key)
    await store.execute("UPDATE login_throttle SET locked_until = '2000-01-01T00:00:00.000Z'")
    async with throttle.attempt(key, LIMIT_S) as attempt:
        with pytest.raises(TooManyRequests):  # the second at once is refused
            await _fail(throttle, key)
        await attempt.failed()
    with pytest.raises(TooManyRequests) as info:  # locked again
        await _fail(throttle, key)
    assert info.value.retry_after_s is not None
    assert info.value.retry_after_s > 20


async def test_in_flight_attempts_count_against_the_limit(store: Store) -> None:
    """Reservations are taken before the database is asked: the limit holds in parallel."""
    throttle = LoginThrottle(store, max_failures=5, window_s=60, lockout_s=30)
    key = throttle.key("db-test", "USER1", "c")
    entered = 0
    refused: list[int] = []
    decided = anyio.Event()
    n = 20

    async def one() -> None:
        nonlocal entered
        try:
            async with throttle.attempt(key, LIMIT_S) as attempt:
                entered += 1
                if entered + len(refused) == n:
                    decided.set()
                await decided.wait()  # every attempt in flight at once
                await attempt.failed()
        except TooManyRequests as exc:
            refused.append(exc.retry_after_s or 0)
            if entered + len(refused) == n:
                decided.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
    assert entered == 5
    assert len(refused) == n - 5
    assert all(1 <= s <= 30 for s in refused)
    assert await _in_flight(store) == 0
    with pytest.raises(TooManyRequests):
        await _fail(throttle, key)


async def test_unavailable_or_cancelled_attempts_are_released(store: Store) -> None:
    throttle = LoginThrottle(store, max_failures=2, window_s=60, lockout_s=30)
    key = throttle.key("db-test", "USER1", "c")
    for _ in range(5):  # e.g. 503 from the database: never counted
        with pytest.raises(LookupError):
            async with throttle.attempt(key, LIMIT_S):
                raise LookupError
    inside = anyio.Event()

    async def cancelled() -> None:
        async with throttle.attempt(key, LIMIT_S):
            inside.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancelled)
        await inside.wait()
        assert await _in_flight(store) == 1
        tg.cancel_scope.cancel()
    assert await _in_flight(store) == 0
    assert await store.fetch_all("SELECT * FROM login_throttle") == []


async def test_reservations_of_a_crashed_process_expire(store: Store) -> None:
    throttle = LoginThrottle(store, max_failures=2, window_s=60, lockout_s=30)
    key = throttle.key("db-test", "USER1", "c")
    held = anyio.Event()
    release = anyio.Event()
    holders = 0

    async def hang() -> None:  # a process that died mid-attempt, as the store sees it
        nonlocal holders
        async with throttle.attempt(key, LIMIT_S):
            holders += 1
            if holders == 2:
                held.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hang)
        tg.start_soon(hang)
        await held.wait()
        with pytest.raises(TooManyRequests) as info:
            await _fail(throttle, key)
        # Retry-After: when the soonest reservation expires, at most the lockout.
        assert info.value.retry_after_s is not None
        assert 1 <= info.value.retry_after_s <= 30
        expires = await store.fetch_all("SELECT expires_at FROM login_attempts")
        assert len(expires) == 2
        await store.execute("UPDATE login_attempts SET expires_at = '2000-01-01T00:00:00.000Z'")
        await _fail(throttle, key)  # the stale reservations no longer count
        release.set()
