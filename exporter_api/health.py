"""Liveness and readiness of one instance (``GET /healthz``, ``GET /readyz``).

A load balancer sends traffic only to ready instances. Ready means: not draining (SIGTERM), the
state store answers ``SELECT 1``, Redis answers ``PING`` when the hub uses it, and the files
directory exists and takes a file. Every check is bounded by ``timeout_s`` and they run
concurrently, so a probe answers within about ``timeout_s`` whatever hangs.

One evaluation is in flight at a time: a probe that arrives while one runs awaits that one and
shares its result (``/readyz`` is anonymous; several load balancer checkers or a burst of requests
must not fail each other, nor open one Redis connection each). The files check runs in a worker
thread of its own (a hung NFS mount blocks that one thread, never the shared pool). Evaluations
never overlap, so a files thread still running when the next one starts belongs to an evaluation
that already gave up on it after ``timeout_s``: that check fails at once ("files directory not
answering") and starts no thread, so a hung mount holds one thread however often it is asked.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog

if TYPE_CHECKING:
    from exporter_api.store.base import Store

_log = structlog.get_logger("exporter_api.health")

DEFAULT_TIMEOUT_S = 2.0


class Health:
    """What ``/readyz`` reports; built by ``create_app``, started in the app lifespan.

    Args:
        files_dir: the exported files' root (``[output] files_dir``).
        redis_url: the hub backplane's Redis, or ``None`` (may hold a password: never logged).
        dir_mode: the mode of ``files_dir`` when this instance has to create it.
        timeout_s: bound on each check.
    """

    def __init__(
        self,
        files_dir: Path,
        redis_url: str | None,
        *,
        dir_mode: int = 0o700,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.files_dir = files_dir
        self.timeout_s = timeout_s
        self._redis_url = redis_url
        self._dir_mode = dir_mode
        self._draining = False
        self._store: Store | None = None
        self._redis: Any = None
        self._files_limiter: anyio.CapacityLimiter | None = None  # made in running()
        # Set while a files check's thread may still run; cleared by that thread when it returns
        # (a timed-out check abandons its thread, and anyio then frees the limiter's token, so
        # the limiter alone would let every probe leave one more thread on a hung mount).
        self._probe_busy = False
        self._probe_guard = threading.Lock()  # held only to flip the flags below, never to wait
        self._probe_name = f".readyz-{secrets.token_hex(6)}"  # one per instance (shared volume)
        self._in_flight: _Evaluation | None = None

    @property
    def draining(self) -> bool:
        return self._draining

    def start_draining(self) -> None:
        """From now on ``/readyz`` answers 503 (the load balancer stops sending requests)."""
        if not self._draining:
            self._draining = True
            _log.info("draining_started")

    @asynccontextmanager
    async def running(self, store: Store) -> AsyncIterator[None]:
        """Checks ``store`` (and Redis, with a client of its own) until the block ends."""
        self._files_limiter = anyio.CapacityLimiter(1)
        await anyio.to_thread.run_sync(self._create_files_dir)
        self._store = store
        try:
            if self._redis_url:
                from redis.asyncio import Redis

                self._redis = Redis.from_url(
                    self._redis_url,
                    socket_connect_timeout=self.timeout_s,
                    socket_timeout=self.timeout_s,
                    max_connections=2,
                )
                try:
                    yield
                finally:
                    await self._redis.aclose()
            else:
                yield
        finally:
            self._store = self._redis = None

    def _create_files_dir(self) -> None:
        if not self.files_dir.is_dir():
            try:
                self.files_dir.mkdir(parents=True, mode=self._dir_mode)
                self.files_dir.chmod(self._dir_mode)  # mkdir's mode is narrowed by the umask
            except FileExistsError:
                pass  # another instance made it meanwhile
            except OSError as exc:  # not ready, and /readyz says why
                _log.warning("files_dir_not_created", error_type=type(exc).__name__)

    async def failures(self) -> list[str]:
        """What is not ready, as short phrases (empty: ready)."""
        if self._draining:
            return ["draining"]
        current = self._in_flight
        if current is not None:  # one evaluation at a time: share the running one's result
            await current.done.wait()
        else:
            current = self._in_flight = _Evaluation()
            try:
                # Shielded: callers that joined wait for this result even if the caller that
                # started it goes away. Every check is bounded by timeout_s, so this ends soon.
                with anyio.CancelScope(shield=True):
                    current.result = await self._evaluate()
            finally:
                self._in_flight = None
                current.done.set()
        if current.result is None:  # the evaluation itself broke (not a check): not ready
            return ["readiness check: interrupted"]
        return list(current.result)

    async def _evaluate(self) -> list[str]:
        checks: list[tuple[str, Callable[[], Awaitable[None]]]] = [("state store", self._store_ok)]
        if self._redis_url:
            checks.append(("redis", self._redis_ok))
        checks.append(("files directory", self._files_ok))
        failed: dict[str, str] = {}

        async def run(name: str, check: Callable[[], Awaitable[None]]) -> None:
            try:
                with anyio.fail_after(self.timeout_s):
                    await check()
            except TimeoutError:
                failed[name] = f"{name}: no answer within {self.timeout_s:g} s"
            except Exception as exc:  # whatever the driver raises means "not ready"
                failed[name] = f"{name}: {_reason(exc, files=check == self._files_ok)}"

        async with anyio.create_task_group() as tg:
            for name, check in checks:
                tg.start_soon(run, name, check)
        result = [failed[name] for name, _ in checks if name in failed]
        if result:
            _log.warning("not_ready", failures=result)
        return result

    async def _store_ok(self) -> None:
        if self._store is None:
            raise RuntimeError("not started")
        await self._store.fetch_one("SELECT 1")

    async def _redis_ok(self) -> None:
        if self._redis is None:
            raise RuntimeError("not started")
        await self._redis.ping()

    async def _files_ok(self) -> None:
        if self._files_limiter is None:
            raise RuntimeError("not started")
        with self._probe_guard:
            if self._probe_busy:
                raise _Stuck
            self._probe_busy = True
        entered = abandoned = False

        def probe() -> None:
            nonlocal entered
            with self._probe_guard:
                if abandoned:  # the check gave up before this thread got to it
                    return
                entered = True
            try:
                self._write_probe()
            finally:
                with self._probe_guard:
                    self._probe_busy = False

        try:
            await anyio.to_thread.run_sync(
                probe, limiter=self._files_limiter, abandon_on_cancel=True
            )
        finally:
            with self._probe_guard:
                if not entered:  # cancelled before the thread ran: no thread to wait for
                    abandoned = True
                    self._probe_busy = False

    def _write_probe(self) -> None:
        if not self.files_dir.is_dir():
            raise FileNotFoundError
        probe = self.files_dir / self._probe_name
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
        probe.unlink()


class _Evaluation:
    """One readiness evaluation; the probes that arrive while it runs await ``done``."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: list[str] | None = None


class _Stuck(Exception):
    """The previous files check has not returned yet."""


def _reason(exc: Exception, *, files: bool) -> str:
    # Exception texts may hold a URL with a password: only fixed phrases go out.
    if isinstance(exc, _Stuck):
        return "not answering (the previous check has not returned yet)"
    if not files:
        return f"unreachable ({type(exc).__name__})"
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EROFS:
        return "not writable"
    return f"unusable ({type(exc).__name__})"


__all__ = ["DEFAULT_TIMEOUT_S", "Health"]
