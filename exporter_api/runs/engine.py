"""The run engine: supervision of the runs this instance drives (`RunExecutor` runs them).

Theory of operation
-------------------
Runs live in the state store; an instance drives a run once it has *claimed* it
(`exporter_api.runs.queue`). ``start`` inserts a new run already claimed by the instance that
received it (unless that instance is draining: then it is queued unclaimed and
``RUN_QUEUED_CHANNEL`` wakes the others). ``RunEngine.running()`` (entered in the app lifespan)
owns one task group; each run driven here is a task in it, wrapped in its own ``CancelScope``.

Alongside, four loops:

* heartbeat (every ``heartbeat_s``): refresh the heartbeat of the runs and database-slot leases
  held here; a run whose row names another instance was taken over (this one was cut off from
  the store) and stops here without writing anything; cancel flags set through instances whose
  notification was lost are applied (the safety net of ``CANCEL_CHANNEL``); final states whose
  save failed are saved again.
* lease (`exporter_api.runs.leases`): a run whose heartbeat has not been stamped for
  ``takeover_after_s - heartbeat_s`` (the store cannot be reached) stops here without writing
  anything, as a lost run does -- before another instance may take it over.
* claim (`exporter_api.runs.claims`; on ``RUN_QUEUED_CHANNEL``, else every ``heartbeat_s``):
  claim runs nobody drives -- queued ones, and those whose driver's heartbeat is older than
  ``takeover_after_s`` (it died). A claimed run resumes: its directory is reconciled with the
  files recorded (a dead owner's partial files go), the variants that were unfinished start
  again from the beginning, the finished ones and their files stay. A run taken over more than
  ``max_run_attempts`` times, or whose credentials cannot be read any more, ends ``Failed``
  with a message saying so.
* retention (when ``server.retention_days`` > 0).

How one run begins (fresh or resumed) and what its end means -- Cancelled, Failed naming the
cause, handed over (drain, or the server stopping: the claim is released without marking
anything, so another instance, or this one restarted on a SQLite store, resumes it) or lost --
is `exporter_api.runs.lifecycle`'s.

Cancel reaches the driving instance in well under a second: the receiving instance sets
``cancel_requested`` (the durable truth) and notifies ``CANCEL_CHANNEL``; the driver cancels
the run's scope on receipt, so its query stops on the database server at once.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.to_thread
import structlog
from ulid import ULID

from exporter_api.notify import CANCEL_CHANNEL, RUN_QUEUED_CHANNEL, LocalNotifier, Notifier
from exporter_api.runs.claims import OrphanClaims
from exporter_api.runs.errors import (
    DatabaseNotConfigured,
    RunAlreadyFinished,
    RunNotFound,
    TooManyActiveRuns,
)
from exporter_api.runs.executor import ActiveRun, EventPublisher, RunExecutor
from exporter_api.runs.leases import LeaseWatch
from exporter_api.runs.lifecycle import CredentialSource, RunLifecycle, RunObserver
from exporter_api.runs.models import (
    RunState,
)
from exporter_api.runs.queue import UNCLAIMED, Claim, Claimable, RunQueue
from exporter_api.runs.repository import RunOwner
from exporter_api.runs.retention import Retention
from exporter_api.runs.selection import initial_state
from exporter_api.runs.slots import SlotLeases
from exporter_api.runs.status import is_active

if TYPE_CHECKING:
    from exporter_api.config import ExportConfig
    from exporter_api.providers.base import DatabaseProvider
    from exporter_api.runs.repository import RunRepository
    from exporter_api.runs.selection import RunPlan
    from exporter_api.security import AuthenticatedUser

_log = structlog.get_logger("exporter_api.runs.engine")

_ORIGINS_KEPT = 1024


def new_ulid() -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, Crockford base32 (sorts by time)."""
    return str(ULID())


class RunEngine:
    def __init__(
        self,
        *,
        config: ExportConfig,
        repository: RunRepository,
        providers: Mapping[str, DatabaseProvider],
        credentials: CredentialSource,
        publisher: EventPublisher,
        files_root: Path,
        notifier: Notifier | None = None,
        exclusive_store: bool = True,
        heartbeat_s: float | None = None,
        takeover_after_s: float | None = None,
        max_run_attempts: int | None = None,
        drain_grace_s: float | None = None,
        retention_sweep_s: float = 3600.0,
        progress_interval_s: float = 0.25,
        persist_progress_s: float = 1.0,
        slot_poll_s: float = 0.1,
        cancel_wait_s: float = 5.0,
        claim_delay_s: float = 0.05,
        observer: RunObserver | None = None,
    ) -> None:
        server = config.server
        self.config = config
        self.repo = repository
        self.providers = providers
        self.credentials = credentials
        self.files_root = files_root
        self.notifier: Notifier = notifier if notifier is not None else LocalNotifier()
        self.exclusive_store = exclusive_store
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else server.heartbeat_s
        self.takeover_after_s = (
            takeover_after_s if takeover_after_s is not None else server.takeover_after_s
        )
        self.max_run_attempts = (
            max_run_attempts if max_run_attempts is not None else server.max_run_attempts
        )
        self.drain_grace_s = drain_grace_s if drain_grace_s is not None else server.drain_grace_s
        self.retention = Retention(
            repository,
            files_root,
            server.retention_days,
            is_active=lambda run_id: run_id in self._active,
            sweep_s=retention_sweep_s,
        )
        self.cancel_wait_s = cancel_wait_s
        self.instance_id = secrets.token_hex(8)
        self.queue = RunQueue(repository.store)
        self.slots = SlotLeases(
            repository.store,
            self.instance_id,
            {db.id: db.max_connections for db in config.databases},
            stale_after_s=self.takeover_after_s,
            poll_s=slot_poll_s,
        )
        self.executor = executor = RunExecutor(
            config=config,
            repository=repository,
            providers=providers,
            publisher=publisher,
            slots=self.slots,
            files_root=files_root,
            instance_id=self.instance_id,
            progress_interval_s=progress_interval_s,
            persist_progress_s=persist_progress_s,
        )
        self.lifecycle = RunLifecycle(
            config=config,
            repository=repository,
            queue=self.queue,
            credentials=credentials,
            executor=executor,
            files_root=files_root,
            instance_id=self.instance_id,
            max_run_attempts=self.max_run_attempts,
            notify=self._notify,
            observer=observer,
        )
        self._databases = {db.id: db for db in config.databases}
        self._active: dict[str, ActiveRun] = {}
        self.leases = LeaseWatch(
            self._active, heartbeat_s=self.heartbeat_s, takeover_after_s=self.takeover_after_s
        )
        self.claims = OrphanClaims(
            self.queue,
            self.instance_id,
            driven=self._active.keys(),
            unsaved=self.lifecycle.unsaved.keys(),
            adopt=self._adopt,
            draining=lambda: self._draining,
            exclusive_store=exclusive_store,
            takeover_after_s=self.takeover_after_s,
            heartbeat_s=self.heartbeat_s,
            claim_delay_s=claim_delay_s,
        )
        # Client addresses of the runs queued here, for their log lines if claimed here too.
        self._origins: OrderedDict[str, str] = OrderedDict()
        self._start_lock = anyio.Lock()
        self._tg: anyio.abc.TaskGroup | None = None
        self._shutting_down = False
        self._draining = False

    @property
    def publisher(self) -> EventPublisher:
        return self.executor.publisher

    @publisher.setter
    def publisher(self, publisher: EventPublisher) -> None:
        self.executor.publisher = publisher

    @property
    def draining(self) -> bool:
        return self._draining

    # --- lifecycle ----------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Own the runs' task group until the app stops; resume runs nobody drives."""
        await self.slots.prepare(exclusive=self.exclusive_store)
        forget = [
            self.notifier.listen(CANCEL_CHANNEL, self._on_cancel),
            self.notifier.listen(RUN_QUEUED_CHANNEL, self._on_queued),
        ]
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                # A store only this process uses: every active run in it was left by a previous
                # process, so it resumes now rather than after the takeover delay.
                await self.claim_orphans(startup=True)
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self.leases.loop)
                tg.start_soon(self.claims.loop)
                if self.config.server.retention_days > 0:
                    tg.start_soon(self.retention.loop)
                try:
                    yield
                finally:
                    self._shutting_down = True
                    tg.cancel_scope.cancel()
        finally:
            for stop in forget:
                stop()
            self._tg = None

    async def drain(self, grace_s: float | None = None) -> list[str]:
        """Claim nothing more; let the active runs go on for up to ``grace_s`` (default
        ``server.drain_grace_s``), then hand the rest over to other instances without marking
        anything. Returns the ids of the runs handed over."""
        self._draining = True
        grace = self.drain_grace_s if grace_s is None else grace_s
        _log.info("runs_draining", active=len(self._active), grace_s=grace)
        with anyio.move_on_after(grace):
            while self._active:
                await next(iter(self._active.values())).done.wait()
        handed: list[str] = []
        while self._active:  # a claim in flight when the drain began may still add one
            runs = list(self._active.values())
            for run in runs:
                run.handover = True
                run.scope.cancel()
                handed.append(run.run_id)
            for run in runs:
                await run.done.wait()
        _log.info("runs_drained", handed_over=len(handed))
        return handed

    # --- commands -----------------------------------------------------------------------------

    async def start(self, user: AuthenticatedUser, plan: RunPlan) -> RunState:
        """Persist a new run (all Queued). An idle instance drives it at once; a busy or
        draining one queues it and notifies ``RUN_QUEUED_CHANNEL``: the idlest instance
        claims it (busy ones wait a little longer before they try, see ``claim_orphans``)."""
        if self._tg is None:
            raise RuntimeError("the run engine is not running")
        if user.database_id not in self._databases or user.database_id not in self.providers:
            raise DatabaseNotConfigured(user.database_id)
        username, password = await self.credentials.get(user.session_id)
        state = self._initial_state(user, plan)
        owner = RunOwner(
            user.login, user.database_id, user.manager_id, user.stream_id, user.session_id
        )
        limit = self.config.server.max_active_runs_per_user
        run = ActiveRun(state=state, owner=owner, plan=plan)
        here = not self._draining and not self._active
        async with self._start_lock:
            driver = self.instance_id if here else UNCLAIMED
            if not await self.repo.insert_run(state, owner, driver, max_active=limit):
                raise TooManyActiveRuns(limit)
            if here:
                # No checkpoint between the insert and this: the heartbeat never sees the run
                # as this instance's without it being active here.
                self._active[state.run_id] = run
        _log.info("run_queued", run_id=state.run_id, login=user.login, mode=plan.mode, here=here)
        if here:
            self._tg.start_soon(self._drive, run, (str(username), str(password)), None)
        else:
            if client_ip := structlog.contextvars.get_contextvars().get("client_ip"):
                self._origins[state.run_id] = client_ip
                while len(self._origins) > _ORIGINS_KEPT:  # claimed elsewhere, never popped
                    self._origins.popitem(last=False)
            await self._notify(RUN_QUEUED_CHANNEL, state.run_id)
        return state

    async def cancel(self, run_id: str) -> RunState:
        """Cancel a run wherever it is driven; returns its state once the cancel took effect
        (bounded by ``cancel_wait_s``). ``RunAlreadyFinished`` when it had already ended."""
        # the durable truth first
        driver = await self.queue.request_cancel(run_id, stale_after_s=self.takeover_after_s)
        # Read after the flag is set: a run this instance claimed meanwhile is known by now
        # (or reads the flag when it resumes).
        run = self._active.get(run_id)
        if driver is None:
            state = await self.repo.load(run_id)
            if state is None:
                raise RunNotFound()
            raise RunAlreadyFinished(state.status)
        if run is not None:
            self._cancel_here(run)
        if driver.instance_id != self.instance_id:  # another (or nobody, or a dead one)
            await self._notify(CANCEL_CHANNEL, run_id)
        unattended = driver.instance_id == UNCLAIMED or driver.stale
        if run is None and unattended:
            # Nobody drives it (queued, or its driver died): cancel it here and now.
            claim = await self.queue.claim(driver, self.instance_id)
            if claim is not None and (done := await self.lifecycle.cancel_unattended(run_id)):
                return done
        with anyio.move_on_after(self.cancel_wait_s):
            if run is not None:
                await run.done.wait()
            else:
                while True:
                    loaded = await self.repo.load(run_id)
                    if loaded is None or not is_active(loaded.status):
                        break
                    await anyio.sleep(0.05)
        state = await self.repo.load(run_id)
        if state is None:  # pragma: no cover - active runs are never deleted
            raise RunNotFound()
        return state

    def is_active(self, run_id: str) -> bool:
        return run_id in self._active

    async def wait(self, run_id: str) -> None:
        """Return once the run has stopped here, or has ended wherever it was driven."""
        while True:
            run = self._active.get(run_id)
            if run is not None:
                await run.done.wait()
                return
            state = await self.repo.load(run_id)
            if state is None or not is_active(state.status):
                return
            await anyio.sleep(0.05)

    def _cancel_here(self, run: ActiveRun) -> None:
        if run.done.is_set() or run.cancel_requested:
            return
        run.cancel_requested = True
        run.scope.cancel()
        _log.info("run_cancel_requested", run_id=run.run_id)

    # --- signals ------------------------------------------------------------------------------

    async def _notify(self, channel: str, run_id: str) -> None:
        """A hint to the other instances; the store holds the truth and their periodic checks
        catch up on a lost one, so a failure is only logged."""
        try:
            await self.notifier.notify(channel, run_id)
        except Exception as exc:
            _log.warning(
                "notify_failed", channel=channel, run_id=run_id, error_type=type(exc).__name__
            )

    async def _on_cancel(self, run_id: str) -> None:
        # A run claimed here but not known yet reads the flag when it resumes (set before this
        # notification was sent), so an unknown id is dropped safely.
        run = self._active.get(run_id)
        if run is not None:
            self._cancel_here(run)

    async def _on_queued(self, run_id: str) -> None:
        self.claims.wake()

    async def apply_cancel_requests(self) -> list[str]:
        """Cancel the runs driven here whose cancel flag is set (a lost notification)."""
        cancelled: list[str] = []
        for run_id in await self.queue.cancel_requests(self.instance_id):
            run = self._active.get(run_id)
            if run is not None and not run.done.is_set() and not run.cancel_requested:
                self._cancel_here(run)
                cancelled.append(run_id)
        return cancelled

    # --- supervision loops --------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_s)
            try:
                await self.heartbeat()
            except Exception as exc:  # the store may be briefly unavailable; try again later
                _log.warning("heartbeat_failed", error_type=type(exc).__name__)

    async def heartbeat(self) -> None:
        driven = [run for run in self._active.values() if not run.lost]
        began = time.monotonic()
        lost = await self.queue.heartbeat(
            [*(run.run_id for run in driven), *self.lifecycle.unsaved], self.instance_id
        )
        for run in driven:
            if run.run_id in lost:
                self.executor.lose(run)
            else:
                run.renew(began)
        await self.slots.heartbeat()
        await self.apply_cancel_requests()
        await self.lifecycle.save_unsaved(lost)

    async def claim_orphans(self, *, startup: bool = False, limit: int | None = None) -> list[str]:
        """Claim and resume (at most ``limit``) runs nobody drives: queued, or whose driver died
        (see `OrphanClaims`)."""
        if self._tg is None:
            return []
        return await self.claims.claim(startup=startup, limit=limit)

    async def _adopt(self, seen: Claimable, claim: Claim, claimed_at: float) -> bool:
        state = await self.repo.load(claim.run_id)
        owner = await self.repo.owner(claim.run_id)
        if state is None or owner is None or self._tg is None:  # pragma: no cover - deleted
            return False
        run = ActiveRun(
            state=state,
            owner=owner,
            cancel_requested=claim.cancel_requested,
            leased_at=claimed_at,  # the claim stamped the heartbeat
        )
        self._active[claim.run_id] = run
        _log.info(
            "run_claimed",
            **self._run_context(claim.run_id, owner.login),
            attempts=claim.attempts,
            takeover=seen.instance_id != UNCLAIMED,
        )
        self._tg.start_soon(self._drive, run, None, claim)
        return True

    # --- one run ------------------------------------------------------------------------------

    def _run_context(self, run_id: str, login: str, *, forget: bool = False) -> dict[str, str]:
        """What a run's log lines carry: its id, its user, and the client address of the
        request that queued it here (if one did)."""
        origin = self._origins.pop(run_id, None) if forget else self._origins.get(run_id)
        return {"run_id": run_id, "login": login, **({"client_ip": origin} if origin else {})}

    def _initial_state(self, user: AuthenticatedUser, plan: RunPlan) -> RunState:
        return initial_state(plan, user, new_ulid())

    async def _drive(
        self, run: ActiveRun, credentials: tuple[str, str] | None, claim: Claim | None
    ) -> None:
        # The run's own task: every line of it (and of its variants) names the run and the user,
        # and the client address when a request started it here (its context is copied) or
        # queued it here.
        structlog.contextvars.bind_contextvars(
            **self._run_context(run.run_id, run.owner.login, forget=True)
        )
        try:
            await self.lifecycle.drive(
                run, credentials, claim, stopping=lambda: self._shutting_down
            )
        finally:
            self._active.pop(run.run_id, None)
            run.done.set()
