"""The run engine: supervision of the runs this instance drives (`RunExecutor` runs them).

Theory of operation
-------------------
Runs live in the state store; an instance drives a run once it has *claimed* it
(`exporter_api.runs.queue`). ``start`` inserts a new run already claimed by the instance that
received it (unless that instance is draining: then it is queued unclaimed and
``RUN_QUEUED_CHANNEL`` wakes the others). ``RunEngine.running()`` (entered in the app lifespan)
owns one task group; each run driven here is a task in it, wrapped in its own ``CancelScope``.

Alongside, three loops:

* heartbeat (every ``heartbeat_s``): refresh the heartbeat of the runs and database-slot leases
  held here; a run whose row names another instance was taken over (this one was cut off from
  the store) and stops here without writing anything; cancel flags set through instances whose
  notification was lost are applied (the safety net of ``CANCEL_CHANNEL``); final states whose
  save failed are saved again.
* claim (on ``RUN_QUEUED_CHANNEL``, else every ``heartbeat_s``): claim runs nobody drives --
  queued ones, and those whose driver's heartbeat is older than ``takeover_after_s`` (it died).
  A claimed run resumes: its directory is reconciled with the files recorded (a dead owner's
  partial files go), the variants that were unfinished start again from the beginning, the
  finished ones and their files stay. A run taken over more than ``max_run_attempts`` times,
  or whose credentials cannot be read any more, ends ``Failed`` with a message saying so.
* retention (when ``server.retention_days`` > 0).

A run's task ends in a shielded finaliser deciding what its end means: a user cancel marks what
is unfinished ``Cancelled``; a crash marks it ``Failed`` naming the cause; a hand-over (drain,
or the server stopping) releases the claim without marking anything so another instance (or
this one, restarted on a SQLite store) resumes it; a lost run writes nothing.

Cancel reaches the driving instance in well under a second: the receiving instance sets
``cancel_requested`` (the durable truth) and notifies ``CANCEL_CHANNEL``; the driver cancels
the run's scope on receipt, so its query stops on the database server at once.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from exporter_api.errors import ExporterError
from exporter_api.notify import CANCEL_CHANNEL, RUN_QUEUED_CHANNEL, LocalNotifier, Notifier
from exporter_api.runs.errors import (
    DatabaseNotConfigured,
    RunAlreadyFinished,
    RunNotFound,
    TooManyActiveRuns,
)
from exporter_api.runs.executor import ActiveRun, EventPublisher, RunExecutor, Snapshot
from exporter_api.runs.files import PART_SUFFIX
from exporter_api.runs.models import (
    GroupState,
    RunState,
    ScriptState,
    VariantState,
    format_time,
    utc_now,
)
from exporter_api.runs.queue import UNCLAIMED, Claim, Claimable, RunQueue
from exporter_api.runs.repository import RunNotOwned, RunOwner
from exporter_api.runs.selection import PlanUnavailable, plan_of
from exporter_api.runs.slots import SlotLeases
from exporter_api.runs.status import is_active, mark_unfinished, reset_unfinished

if TYPE_CHECKING:
    from exporter_api.config import ExportConfig
    from exporter_api.providers.base import DatabaseProvider
    from exporter_api.runs.repository import RunRepository
    from exporter_api.runs.selection import RunPlan
    from exporter_api.security import AuthenticatedUser

_log = structlog.get_logger("exporter_api.runs.engine")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

CREDENTIALS_GONE = (
    "the session's database credentials can no longer be read (it was logged out or has"
    " expired), so the run could not be carried on; start it again"
)
NOT_EXECUTED = "not executed"


def too_many_attempts(attempts: int, limit: int) -> str:
    return (
        f"the instance driving this run stopped {attempts} times; given up after"
        f" {limit} takeovers (server.max_run_attempts)"
    )


def new_ulid() -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, Crockford base32 (sorts by time)."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


class CredentialSource(Protocol):
    async def get(self, session_id: str) -> tuple[str, str]: ...


class _Abandon(Exception):
    """The run cannot go on (its credentials are gone, too many takeovers): it ends Failed."""


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
        self.retention_sweep_s = retention_sweep_s
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
        self.executor = RunExecutor(
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
        self._databases = {db.id: db for db in config.databases}
        self._active: dict[str, ActiveRun] = {}
        # Ended, but the final save failed (the store was unavailable or full): the heartbeat
        # keeps the claim and saves the final state (then publishes it) once it can.
        self._unsaved: dict[str, tuple[ActiveRun, Snapshot]] = {}
        self._start_lock = anyio.Lock()
        self._wake = anyio.Event()
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
                tg.start_soon(self._claim_loop)
                if self.config.server.retention_days > 0:
                    tg.start_soon(self._retention_loop)
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
        """Persist a new run (all Queued) and drive it here (queued for others when draining)."""
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
        here = not self._draining
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
            await self.notifier.notify(RUN_QUEUED_CHANNEL, state.run_id)
        return state

    async def cancel(self, run_id: str) -> RunState:
        """Cancel a run wherever it is driven; returns its state once the cancel took effect
        (bounded by ``cancel_wait_s``). ``RunAlreadyFinished`` when it had already ended."""
        run = self._active.get(run_id)
        driver = await self.queue.request_cancel(run_id)  # the durable truth first
        if driver is None:
            state = await self.repo.load(run_id)
            if state is None:
                raise RunNotFound()
            raise RunAlreadyFinished(state.status)
        if run is not None:
            self._cancel_here(run)
        else:
            await self.notifier.notify(CANCEL_CHANNEL, run_id)
            if driver.instance_id == UNCLAIMED or driver.heartbeat_at < self._stale_before():
                # Nobody drives it (queued, or its driver died): cancel it here and now.
                claim = await self.queue.claim(driver, self.instance_id, utc_now())
                if claim is not None:
                    return await self._cancel_claimed(run_id)
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
        """Return once the run driven here has finished (at once if it is not active here)."""
        run = self._active.get(run_id)
        if run is not None:
            await run.done.wait()

    def _cancel_here(self, run: ActiveRun) -> None:
        if run.done.is_set() or run.cancel_requested:
            return
        run.cancel_requested = True
        run.scope.cancel()
        _log.info("run_cancel_requested", run_id=run.run_id)

    async def _cancel_claimed(self, run_id: str) -> RunState:
        state = await self.repo.load(run_id)
        if state is None:  # pragma: no cover - active runs are never deleted
            raise RunNotFound()
        before = Snapshot(state)
        mark_unfinished(state, "Cancelled", utc_now(), error=None)
        await self.repo.save_all(state, self.instance_id)
        await self.executor.publish_changes(state, before)
        _log.info("run_cancelled_unattended", run_id=run_id)
        return state

    # --- signals ------------------------------------------------------------------------------

    async def _on_cancel(self, run_id: str) -> None:
        run = self._active.get(run_id)
        if run is not None:
            self._cancel_here(run)

    async def _on_queued(self, run_id: str) -> None:
        self._wake.set()

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

    def _stale_before(self) -> str:
        return format_time(datetime.now(UTC) - timedelta(seconds=self.takeover_after_s))

    async def _heartbeat_loop(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_s)
            try:
                await self.heartbeat()
            except Exception as exc:  # the store may be briefly unavailable; try again later
                _log.warning("heartbeat_failed", error_type=type(exc).__name__)

    async def heartbeat(self) -> None:
        now = utc_now()
        ids = [*self._active, *self._unsaved]
        for run_id in await self.queue.heartbeat(ids, self.instance_id, now):
            run = self._active.get(run_id)
            if run is not None:
                self.executor.lose(run)
            self._unsaved.pop(run_id, None)
        await self.slots.heartbeat(now)
        await self.apply_cancel_requests()
        for run_id, (run, before) in list(self._unsaved.items()):
            await self.repo.save_all(run.state, self.instance_id)
            self._unsaved.pop(run_id, None)
            _log.info("run_final_state_saved", run_id=run_id)
            await self.executor.publish_changes(run.state, before)

    async def _claim_loop(self) -> None:
        while True:
            with anyio.move_on_after(self.heartbeat_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.claim_orphans()
            except Exception as exc:  # the store may be briefly unavailable; try again later
                _log.warning("claim_failed", error_type=type(exc).__name__)

    async def claim_orphans(self, *, startup: bool = False) -> list[str]:
        """Claim and resume the runs nobody drives (queued, or whose driver died)."""
        if self._draining or self._tg is None:
            return []
        stale = None if startup and self.exclusive_store else self._stale_before()
        claimed: list[str] = []
        for seen in await self.queue.claimable(stale_before=stale):
            if self._draining:
                break
            if seen.run_id in self._active or seen.run_id in self._unsaved:
                continue
            claim = await self.queue.claim(seen, self.instance_id, utc_now())
            if claim is not None and await self._adopt(seen, claim):
                claimed.append(seen.run_id)
        return claimed

    async def _adopt(self, seen: Claimable, claim: Claim) -> bool:
        state = await self.repo.load(claim.run_id)
        owner = await self.repo.owner(claim.run_id)
        if state is None or owner is None or self._tg is None:  # pragma: no cover - deleted
            return False
        run = ActiveRun(state=state, owner=owner, cancel_requested=claim.cancel_requested)
        self._active[claim.run_id] = run
        _log.info(
            "run_claimed",
            run_id=claim.run_id,
            attempts=claim.attempts,
            takeover=seen.instance_id != UNCLAIMED,
        )
        self._tg.start_soon(self._drive, run, None, claim)
        return True

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.sweep_retention()
            except Exception as exc:  # the store may be briefly unavailable; try again later
                _log.warning("retention_sweep_failed", error_type=type(exc).__name__)
            await anyio.sleep(self.retention_sweep_s)

    async def sweep_retention(self, now: datetime | None = None) -> list[str]:
        """Delete runs that finished more than ``server.retention_days`` ago, files first."""
        days = self.config.server.retention_days
        if days <= 0:
            return []
        cutoff = format_time((now or datetime.now(UTC)) - timedelta(days=days))
        deleted: list[str] = []
        while batch := await self.repo.finished_before(cutoff):
            for run_id in batch:
                if run_id in self._active:  # pragma: no cover - finished runs are not active
                    continue
                directory = self.files_root / run_id
                await anyio.to_thread.run_sync(_remove_tree, directory)
                if await self.repo.delete_run(run_id):
                    deleted.append(run_id)
            if len(batch) < 500 or not deleted:
                break
        if deleted:
            _log.info("runs_expired", count=len(deleted), retention_days=days)
        return deleted

    # --- one run ------------------------------------------------------------------------------

    def _initial_state(self, user: AuthenticatedUser, plan: RunPlan) -> RunState:
        now = utc_now()
        groups = [
            GroupState(
                group_id=pg.group.id,
                display_name=pg.group.display_name,
                status="Queued",
                scripts=[
                    ScriptState(
                        script_id=ps.script.id,
                        display_name=ps.script.display_name,
                        execution_lane=ps.script.execution_lane,
                        export_mode=ps.export_mode,
                        columns=[c.id for c in ps.columns],
                        status="Queued",
                        message="Queued",
                        variants=[
                            VariantState(variant=v.index, status="Queued", message="Queued")
                            for v in ps.script.variants
                        ],
                    )
                    for ps in pg.scripts
                ],
            )
            for pg in plan.groups
        ]
        return RunState(
            run_id=new_ulid(),
            status="Queued",
            mode=plan.mode,
            login=user.login,
            database_id=user.database_id,
            manager_id=user.manager_id,
            stream_id=user.stream_id,
            created_at=now,
            updated_at=now,
            groups=groups,
        )

    async def _drive(
        self, run: ActiveRun, credentials: tuple[str, str] | None, claim: Claim | None
    ) -> None:
        log = _log.bind(run_id=run.run_id)
        failure: str | None = None
        try:
            with run.scope:
                if claim is not None:
                    credentials = await self._resume(run, claim)
                if credentials is not None and not run.cancel_requested:
                    await self.executor.execute(run, *credentials)
        except _Abandon as exc:
            failure = str(exc)
            log.warning("run_abandoned", reason=failure)
        except Exception as exc:  # a bug or the store failing: the run fails, the server goes on
            failure = _describe(exc)
            log.error("run_crashed", error_type=type(_leaf(exc)).__name__)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._finish(run, failure)
                except Exception as exc:
                    log.error("run_finish_failed", error_type=type(exc).__name__)
                finally:
                    self._active.pop(run.run_id, None)
                    run.done.set()
        log.info("run_finished", status=run.state.status, lost=run.lost, handover=run.handover)

    async def _resume(self, run: ActiveRun, claim: Claim) -> tuple[str, str] | None:
        """Prepare a claimed run to go on here; the credentials to run it with (None: it is
        to be cancelled). Raises ``_Abandon`` when it cannot go on."""
        if claim.cancel_requested:
            return None
        if claim.attempts > self.max_run_attempts:
            raise _Abandon(too_many_attempts(claim.attempts, self.max_run_attempts))
        try:
            username, password = await self.credentials.get(run.owner.session_id)
        except ExporterError:
            raise _Abandon(CREDENTIALS_GONE) from None
        try:
            run.plan = plan_of(run.state, self.config)
        except PlanUnavailable as exc:
            raise _Abandon(str(exc)) from None
        recorded = [f.name for f in await self.repo.files(run.run_id)]
        # Replaced by exporter_api.runs.reconcile.reconcile_run_files when the files work lands.
        removed = await reconcile_run_files(self.files_root / run.run_id, recorded)
        run.taken_names = {name.casefold() for name in recorded}
        async with run.lock:
            before = Snapshot(run.state)
            reset_unfinished(run.state, utc_now())
            with anyio.CancelScope(shield=True):
                try:
                    await self.repo.save_all(run.state, self.instance_id)
                except RunNotOwned:
                    self.executor.lose(run)
                    return None
                await self.executor.publish_changes(run.state, before)
        _log.info("run_resumed", run_id=run.run_id, attempts=claim.attempts, removed=removed)
        return str(username), str(password)

    async def _finish(self, run: ActiveRun, failure: str | None) -> None:
        if run.lost:
            return
        handover = run.handover or (self._shutting_down and failure is None)
        if handover and not run.cancel_requested and is_active(run.state.status):
            if await self.queue.release(run.run_id, self.instance_id, utc_now()):
                _log.info("run_handed_over", run_id=run.run_id)
                await self.notifier.notify(RUN_QUEUED_CHANNEL, run.run_id)
            return
        async with run.lock:
            if not is_active(run.state.status):
                return  # ended by its last change, saved and published then
            before = Snapshot(run.state)
            now = utc_now()
            if run.cancel_requested:
                mark_unfinished(run.state, "Cancelled", now, error=None)
            else:
                mark_unfinished(run.state, "Failed", now, error=failure or NOT_EXECUTED)
            try:
                await self.repo.save_all(run.state, self.instance_id)
            except RunNotOwned:
                run.lost = True
                return
            except Exception as exc:
                self._unsaved[run.run_id] = (run, before)
                _log.error(
                    "run_final_save_failed", run_id=run.run_id, error_type=type(exc).__name__
                )
                return
            await self.executor.publish_changes(run.state, before)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    """What a crash is reported as: our errors carry a message fit for the user (a full state
    store says so), anything else only its type."""
    leaf = _leaf(exc)
    if isinstance(leaf, ExporterError) and leaf.detail:
        return leaf.detail
    return f"internal error ({type(leaf).__name__})"


async def reconcile_run_files(run_dir: Path, recorded: Collection[str]) -> int:
    """Remove the partial (``.part``) and unrecorded files of one run's directory (what a dead
    owner left); returns how many went. A stand-in with the signature of the files work's
    ``exporter_api.runs.reconcile.reconcile_run_files``."""
    keep = set(recorded)

    def sweep() -> int:
        removed = 0
        if not run_dir.is_dir():
            return 0
        for path in run_dir.iterdir():
            if path.is_file() and (path.name.endswith(PART_SUFFIX) or path.name not in keep):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    return await anyio.to_thread.run_sync(sweep)


def _remove_tree(directory: Path) -> None:
    """Remove a run's file directory (blocking: run it on a worker thread)."""
    if directory.is_dir():
        shutil.rmtree(directory)


def files_root(data_dir: Path) -> Path:
    """Where runs keep their files: ``<data dir>/exports/<runId>/``."""
    return data_dir / "exports"
