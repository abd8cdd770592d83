from __future__ import annotations

import pytest

from exporter_api.errors import TooManyRequests
from exporter_api.security.throttle import LoginThrottle
from exporter_api.store import Store


async def test_lockout_after_repeated_failures(store: Store) -> None:
    throttle = LoginThrottle(store, max_failures=3, window_s=60, lockout_s=30)
    key = throttle.key("db-test", "USER1", "10.0.0.1")
    for _ in range(2):
        await throttle.check(key)
        await throttle.failure(key)
    await throttle.check(key)  # 2 failures: still allowed
    await throttle.failure(key)
    with pytest.raises(TooManyRequests) as info:
        await throttle.check(key)
    assert info.value.retry_after_s is not None
    assert 25 <= info.value.retry_after_s <= 30
    # Other users and other clients are not affected.
    await throttle.check(throttle.key("db-test", "USER2", "10.0.0.1"))
    await throttle.check(throttle.key("db-test", "USER1", "10.0.0.2"))
    # Keys are hashes: neither login nor address is stored.
    assert "USER1" not in repr(await store.fetch_all("SELECT * FROM login_throttle"))


async def test_success_resets(store: Store) -> None:
    throttle = LoginThrottle(store, max_failures=2, window_s=60, lockout_s=30)
    key = throttle.key("db-test", "USER1", "c")
    await throttle.failure(key)
    await throttle.success(key)
    await throttle.failure(key)
    await throttle.check(key)


async def test_window_expiry_restarts_the_count(store: Store) -> None:
    throttle = LoginThrottle(store, max_failures=2, window_s=60, lockout_s=30)
    key = throttle.key("db-test", "USER1", "c")
    await throttle.failure(key)
    await store.execute("UPDATE login_throttle SET window_start = '2000-01-01T00:00:00.000Z'")
    await throttle.failure(key)
    await throttle.check(key)
