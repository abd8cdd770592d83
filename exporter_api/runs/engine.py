"""The export engine: one anyio task group per run, lanes concurrent, scripts in a lane in turn.

Theory of operation
-------------------
``RunEngine.running()`` (entered in the app lifespan) owns one long-lived task group; each run
is a task in it, wrapped in its own ``CancelScope`` (cancel = cancel that scope). Inside a run,
one task per execution lane runs its scripts in catalog order, and each script runs its
variants in turn. Every variant takes a slot of its database's ``CapacityLimiter`` (shared by
all runs: at most ``max_connections`` concurrent queries per database) before it starts.

The live ``RunState`` of a run is mutated only under the run's lock; each change is persisted
(one store transaction) and then published to the hub group ``runs:{runId}`` while the lock is
held, so the store and the event stream always agree on the order of changes. Progress
(``script.progress``) is throttled to ``progress_interval_s`` per script, with a final event
after every variant.

When a run's scope ends (done, cancelled, or the server shutting down) a shielded finaliser
marks whatever is still Queued/Running as ``Cancelled`` (user cancel) or ``Failed`` (shutdown:
"interrupted by a server restart"), persists and publishes. At start, and then periodically,
runs left active by a dead process are marked ``Failed`` the same way, and so are runs of this
process whose final save failed (no task drives them any more).

Several instances may share a PostgreSQL state store. A cancel asked through an instance that
does not drive the run sets ``cancel_requested`` on its row; the driving instance polls the flag
with its heartbeat and cancels the run's scope. Saves name the driving instance, so an instance
whose run was taken over (recovered or cancelled by another) can no longer overwrite it.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from exporter_api.errors import Conflict, ExporterError, NotFound, TooManyRequests
from exporter_api.providers.base import ExportColumn, ExportRequest
from exporter_api.runs.files import FileWriter, render_file_name, unique_name
from exporter_api.runs.models import (
    GROUP_UPDATED,
    RUN_UPDATED,
    SCRIPT_PROGRESS,
    SCRIPT_UPDATED,
    GroupState,
    GroupUpdated,
    RunState,
    RunUpdated,
    ScriptProgress,
    ScriptState,
    ScriptUpdated,
    Status,
    VariantState,
    format_time,
    utc_now,
)
from exporter_api.runs.reconcile import reconcile_run_files
from exporter_api.runs.repository import (
    INTERRUPTED,
    RunOwner,
    RunRepository,
    StoredFile,
    mark_unfinished,
    recompute_script,
)
from exporter_api.runs.selection import PlannedScript, RunPlan
from exporter_api.runs.status import group_status, is_active, run_status

if TYPE_CHECKING:
    from exporter_api.config import ExportConfig, ScriptVariant
    from exporter_api.providers.base import DatabaseProvider
    from exporter_api.security import AuthenticatedUser

_log = structlog.get_logger("exporter_api.runs.engine")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid() -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, Crockford base32 (sorts by time)."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_file_id() -> str:
    return secrets.token_urlsafe(12)


class EventPublisher(Protocol):
    async def publish(self, run_id: str, method: str, payload: object) -> None: ...


class CredentialSource(Protocol):
    async def get(self, session_id: str) -> tuple[str, str]: ...


@dataclass
class _ActiveRun:
    state: RunState
    owner: RunOwner
    plan: RunPlan
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    done: anyio.Event = field(default_factory=anyio.Event)
    cancel_requested: bool = False
    taken_names: set[str] = field(default_factory=set)

    def group(self, group_id: str) -> GroupState:
        return next(g for g in self.state.groups if g.group_id == group_id)

    def script(self, group_id: str, script_id: str) -> ScriptState:
        return next(s for s in self.group(group_id).scripts if s.script_id == script_id)


class _Snapshot:
    """Statuses before a change, to publish only what changed."""

    def __init__(self, state: RunState) -> None:
        self.run = state.status
        self.groups = {g.group_id: g.status for g in state.groups}
        self.scripts = {s.script_id: (s.status, s.message) for g in state.groups for s in g.scripts}


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
        exclusive_store: bool = True,
        heartbeat_s: float = 5.0,
        retention_sweep_s: float = 3600.0,
        progress_interval_s: float = 0.25,
        persist_progress_s: float = 1.0,
    ) -> None:
        self.config = config
        self.repo = repository
        self.providers = providers
        self.credentials = credentials
        self.publisher = publisher
        self.files_root = files_root
        self.exclusive_store = exclusive_store
        self.heartbeat_s = heartbeat_s
        self.retention_sweep_s = retention_sweep_s
        self.progress_interval_s = progress_interval_s
        self.persist_progress_s = persist_progress_s
        self.instance_id = secrets.token_hex(8)
        self._limiters = {
            db.id: anyio.CapacityLimiter(max(1, db.max_connections)) for db in config.databases
        }
        self._databases = {db.id: db for db in config.databases}
        self._active: dict[str, _ActiveRun] = {}
        self._start_lock = anyio.Lock()
        self._tg: anyio.abc.TaskGroup | None = None
        self._shutting_down = False

    # --- lifecycle ----------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Recover interrupted runs, then own the runs' task group until the app stops."""
        await self.recover(startup=True)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._heartbeat_loop)
            if self.config.server.retention_days > 0:
                tg.start_soon(self._retention_loop)
            try:
                yield
            finally:
                self._shutting_down = True
                tg.cancel_scope.cancel()
        self._tg = None

    async def recover(self, *, startup: bool = False) -> list[str]:
        """Mark runs no live process drives as Failed ("interrupted by a server restart").

        With a store only this process uses (SQLite), every active run found at start is
        orphaned; with a shared store, a run is orphaned once its heartbeat is stale. A run
        recorded as this instance's but no longer driven here (its final save failed while the
        store was down) is orphaned too."""
        now = datetime.now(UTC)
        stale: str | None = format_time(now - timedelta(seconds=3 * self.heartbeat_s))
        if startup and self.exclusive_store:
            stale = None
        candidates = await self.repo.interrupted_runs(
            instance_id=self.instance_id, stale_before=stale
        )
        candidates += await self.repo.active_runs_of(self.instance_id)
        recovered: list[str] = []
        for run_id in candidates:
            if run_id in self._active:  # driven here: its task records its end
                continue
            state = await self.repo.fail_interrupted(run_id, utc_now(), self.instance_id)
            if state is None:
                continue
            recovered.append(run_id)
            _log.warning("run_interrupted", run_id=run_id)
            await self._reconcile_files(run_id)
            await self._publish(
                run_id,
                RUN_UPDATED,
                RunUpdated(run_id=run_id, status=state.status, updated_at=state.updated_at),
            )
        return recovered

    async def _reconcile_files(self, run_id: str) -> None:
        """After taking over a dead owner's run: its directory keeps exactly its recorded
        files (its ``.part`` and never-recorded files go; missing ones are logged)."""
        try:
            recorded = [f.name for f in await self.repo.files(run_id)]
            await reconcile_run_files(self.files_root / run_id, recorded)
        except OSError as exc:  # a failing disk must not stop the recovery of other runs
            _log.warning("run_files_reconcile_failed", run_id=run_id, errno=exc.errno)

    async def _heartbeat_loop(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_s)
            try:
                await self.repo.heartbeat(list(self._active), utc_now())
                await self.apply_cancel_requests()
                await self.recover()
            except Exception as exc:  # the store may be briefly unavailable; try again later
                _log.warning("heartbeat_failed", error_type=type(exc).__name__)

    async def apply_cancel_requests(self) -> list[str]:
        """Cancel the runs driven here that another instance was asked to cancel."""
        cancelled: list[str] = []
        for run_id in await self.repo.cancel_requests(self.instance_id):
            run = self._active.get(run_id)
            if run is None or run.done.is_set() or run.cancel_requested:
                continue
            run.cancel_requested = True
            run.scope.cancel()
            cancelled.append(run_id)
            _log.info("run_cancel_requested", run_id=run_id, remote=True)
        return cancelled

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

    # --- commands -----------------------------------------------------------------------------

    async def start(self, user: AuthenticatedUser, plan: RunPlan) -> RunState:
        """Persist a new run (all Queued) and start it; 429 beyond the per-user limit."""
        if self._tg is None:
            raise RuntimeError("the run engine is not running")
        database = self._databases.get(user.database_id)
        if database is None or user.database_id not in self.providers:
            raise NotFound(f"database {user.database_id!r} is not configured")
        username, password = await self.credentials.get(user.session_id)
        state = self._initial_state(user, plan)
        owner = RunOwner(
            user.login, user.database_id, user.manager_id, user.stream_id, user.session_id
        )
        limit = self.config.server.max_active_runs_per_user
        run = _ActiveRun(state=state, owner=owner, plan=plan)
        async with self._start_lock:
            if not await self.repo.insert_run(state, owner, self.instance_id, max_active=limit):
                raise TooManyRequests(
                    f"at most {limit} active runs per user; wait for one to finish",
                    retry_after_s=5,
                )
            # No checkpoint between the insert and this: recovery never sees the stored run
            # as this instance's without it being active here.
            self._active[state.run_id] = run
        _log.info("run_queued", run_id=state.run_id, login=user.login, mode=plan.mode)
        self._tg.start_soon(self._execute, run, str(username), str(password))
        return state

    async def cancel(self, run_id: str, wait_s: float = 5.0) -> RunState:
        """Cancel a run; ``Conflict`` when it already ended. Waits (bounded) for the cleanup."""
        run = self._active.get(run_id)
        if run is None:
            state = await self.repo.load(run_id)
            if state is None:
                raise NotFound("run not found")
            if not is_active(state.status):
                raise Conflict(f"run already ended with status {state.status}")
            # Active in the store but driven by no task here: another instance or a dead one.
            driver = await self.repo.request_cancel(run_id)
            stale = format_time(datetime.now(UTC) - timedelta(seconds=3 * self.heartbeat_s))
            if driver is not None and driver[0] != self.instance_id and driver[1] >= stale:
                # A live instance drives it: it cancels on its next heartbeat. Wait (bounded).
                with anyio.move_on_after(wait_s):
                    while True:
                        loaded = await self.repo.load(run_id)
                        if loaded is None or not is_active(loaded.status):
                            break
                        await anyio.sleep(0.1)
                return await self.repo.load(run_id) or state
            state = await self.repo.load(run_id) or state
            if not is_active(state.status):
                raise Conflict(f"run already ended with status {state.status}")
            await self.repo.take_over(run_id, self.instance_id)  # the dead driver's saves stop
            await self._reconcile_files(run_id)
            now = utc_now()
            mark_unfinished(state, "Cancelled", now, error=None)
            await self.repo.save_all(state, self.instance_id)
            await self._publish(
                run_id,
                RUN_UPDATED,
                RunUpdated(run_id=run_id, status=state.status, updated_at=state.updated_at),
            )
            return state
        if run.done.is_set():
            raise Conflict(f"run already ended with status {run.state.status}")
        run.cancel_requested = True
        run.scope.cancel()
        _log.info("run_cancel_requested", run_id=run_id)
        with anyio.move_on_after(wait_s):
            await run.done.wait()
        return await self.repo.load(run_id) or run.state

    def is_active(self, run_id: str) -> bool:
        return run_id in self._active

    async def wait(self, run_id: str) -> None:
        """Return once the run driven here has finished (at once if it is not active here)."""
        run = self._active.get(run_id)
        if run is not None:
            await run.done.wait()

    # --- execution ----------------------------------------------------------------------------

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

    async def _execute(self, run: _ActiveRun, username: str, password: str) -> None:
        log = _log.bind(run_id=run.state.run_id)
        failure: str | None = None
        try:
            with run.scope:
                async with anyio.create_task_group() as tg:
                    for lane, scripts in run.plan.lanes().items():
                        tg.start_soon(self._lane, run, lane, scripts, username, password)
        except Exception as exc:  # a bug or the store failing: the run fails, the server goes on
            failure = f"internal error ({type(exc).__name__})"
            log.error("run_crashed", error_type=type(exc).__name__)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._finish(run, failure)
                except Exception as exc:
                    log.error("run_finish_failed", error_type=type(exc).__name__)
                finally:
                    self._active.pop(run.state.run_id, None)
                    run.done.set()
        log.info("run_finished", status=run.state.status)

    async def _finish(self, run: _ActiveRun, failure: str | None) -> None:
        async with run.lock:
            before = _Snapshot(run.state)
            now = utc_now()
            if run.cancel_requested:
                mark_unfinished(run.state, "Cancelled", now, error=None)
            elif failure is not None or self._shutting_down:
                mark_unfinished(run.state, "Failed", now, error=failure or INTERRUPTED)
                run.state.error = failure or INTERRUPTED
            else:
                mark_unfinished(run.state, "Failed", now, error="not executed")
            await self.repo.save_all(run.state, self.instance_id)
            await self._publish_changes(run, before)

    async def _lane(
        self,
        run: _ActiveRun,
        lane: int,
        scripts: list[PlannedScript],
        username: str,
        password: str,
    ) -> None:
        for planned in scripts:
            await self._script(run, planned, username, password)

    async def _script(
        self, run: _ActiveRun, planned: PlannedScript, username: str, password: str
    ) -> None:
        """Run the script's variants in turn on one database slot.

        The slot is held across the variants (they run one after another anyway), and the next
        variant is marked Running in the same change that finishes the previous one, so the
        script never flickers back to Queued between variants."""
        script = run.script(planned.group_id, planned.script.id)
        variants = planned.script.variants
        n = len(variants)
        vstates = [next(v for v in script.variants if v.variant == x.index) for x in variants]

        def start(k: int, now: str) -> None:
            vstates[k].status = "Running"
            vstates[k].message = f"Executing variant {k + 1}/{n}"
            vstates[k].started_at = now
            script.started_at = script.started_at or now
            run.state.started_at = run.state.started_at or now

        async with self._limiters[run.state.database_id]:
            await self._change(
                run,
                planned.group_id,
                script,
                [vstates[0]],
                lambda now: start(0, now),
                message=f"Executing variant 1/{n}",
            )
            for k, variant in enumerate(variants):
                vstate = vstates[k]
                progress = _Progress(self, run, script, vstate)
                outcome, error, stored = await self._export(
                    run, planned, variant, k + 1, progress, username, password
                )

                def finish(
                    now: str,
                    k: int = k,
                    outcome: Status = outcome,
                    error: str | None = error,
                    stored: StoredFile | None = stored,
                ) -> None:
                    v = vstates[k]
                    v.status = outcome
                    v.finished_at = now
                    v.error = error
                    v.message = error if error else outcome
                    v.file_id = stored.file_id if stored else None
                    if k + 1 < n:
                        start(k + 1, now)

                changed = [vstate, vstates[k + 1]] if k + 1 < n else [vstate]
                # Shielded: once the export returned, its file is committed; a cancel arriving
                # now must not leave that file unrecorded (it takes effect at the next variant).
                with anyio.CancelScope(shield=True):
                    await progress.emit(final=True)  # before the status change it explains
                    await self._change(
                        run,
                        planned.group_id,
                        script,
                        changed,
                        finish,
                        file=stored,
                        message=f"Executing variant {k + 2}/{n}" if k + 1 < n else None,
                    )

    async def _export(
        self,
        run: _ActiveRun,
        planned: PlannedScript,
        variant: ScriptVariant,
        i: int,
        progress: _Progress,
        username: str,
        password: str,
    ) -> tuple[Status, str | None, StoredFile | None]:
        """One variant: one query streamed into one file. Never raises but cancellation."""
        state = run.state
        vstate = progress.variant
        database = self._databases[state.database_id]
        provider = self.providers[state.database_id]
        output = self.config.output
        log = _log.bind(run_id=state.run_id, script_id=planned.script.id, variant=variant.index)
        request = ExportRequest(
            sql=variant.sql,
            params={
                "manager_id": state.manager_id,
                "stream_id": state.stream_id,
                "login": state.login,
                "database_id": state.database_id,
            },
            columns=[ExportColumn(source=c.source, label=c.label) for c in planned.columns] or None,
            delimiter=output.delimiter,
            encoding="cp1251" if output.encoding == "cp1251" else "utf-8",
            header=output.header,
            statement_timeout_s=database.statement_timeout_s,
            batch_rows=database.fetch_batch_rows,
        )
        directory = self.files_root / state.run_id
        name = unique_name(
            render_file_name(output.file_name_template, self._name_fields(run, planned, i)),
            run.taken_names,
        )
        writer = FileWriter(
            directory,
            name,
            bom=output.encoding == "utf-8-sig",
            file_mode=output.file_mode,
            dir_mode=output.dir_mode,
        )
        try:
            async with writer:
                result = await provider.export(username, password, request, progress.sink(writer))
                vstate.rows_exported = result.rows
                if result.rows == 0:
                    vstate.bytes_written = 0
                    return "NoData", None, None  # leaving the block removes the header-only file
                written = await writer.commit()
                vstate.bytes_written = written.size_bytes
                return (
                    "Success",
                    None,
                    StoredFile(
                        run_id=state.run_id,
                        file_id=new_file_id(),
                        group_id=planned.group_id,
                        script_id=planned.script.id,
                        variant=variant.index,
                        name=written.name,
                        size_bytes=written.size_bytes,
                        rows=result.rows,
                        sha256=written.sha256,
                        created_at=utc_now(),
                    ),
                )
        except ExporterError as exc:
            log.warning("variant_failed", error_type=type(exc).__name__)
            error = exc.detail or type(exc).__name__
        except Exception as exc:
            log.error("variant_crashed", error_type=type(exc).__name__)
            error = f"internal error ({type(exc).__name__})"
        vstate.rows_exported = 0
        vstate.bytes_written = 0
        return "Failed", error, None

    def _name_fields(self, run: _ActiveRun, planned: PlannedScript, i: int) -> dict[str, str]:
        state = run.state
        created = state.created_at.replace(":", "").replace("-", "")
        return {
            "run_id": state.run_id,
            "group_id": planned.group_id,
            "group_name": run.group(planned.group_id).display_name,
            "script_id": planned.script.id,
            "script_name": planned.script.display_name,
            "variant": str(i),
            "login": state.login,
            "database_id": state.database_id,
            "manager_id": state.manager_id,
            "stream_id": state.stream_id,
            "date": created[:8],
            "time": created[9:15],
        }

    async def _change(
        self,
        run: _ActiveRun,
        group_id: str,
        script: ScriptState,
        variants: list[VariantState],
        apply: Callable[[str], None],
        *,
        file: StoredFile | None = None,
        message: str | None = None,
    ) -> None:
        """Apply a variant change, recompute the aggregates, persist, publish what changed."""
        async with run.lock:
            state = run.state
            before = _Snapshot(state)
            now = utc_now()
            apply(now)
            recompute_script(script, now)
            if is_active(script.status) and message:
                script.message = message
            group = run.group(group_id)
            group.status = group_status(group.scripts)
            state.status = run_status(state.groups)
            state.updated_at = now
            if not is_active(state.status):
                state.finished_at = state.finished_at or now
            with anyio.CancelScope(shield=True):  # a cancel must not tear a half-written change
                await self.repo.save(
                    state,
                    group=group,
                    script=script,
                    variants=variants,
                    file=file,
                    instance_id=self.instance_id,
                )
                await self._publish_changes(run, before)

    async def _publish_changes(self, run: _ActiveRun, before: _Snapshot) -> None:
        state = run.state
        run_id = state.run_id
        for group in state.groups:
            for script in group.scripts:
                if before.scripts.get(script.script_id) != (script.status, script.message):
                    await self._publish(
                        run_id,
                        SCRIPT_UPDATED,
                        ScriptUpdated(
                            run_id=run_id,
                            group_id=group.group_id,
                            script_id=script.script_id,
                            status=script.status,
                            message=script.message,
                        ),
                    )
            if before.groups.get(group.group_id) != group.status:
                await self._publish(
                    run_id,
                    GROUP_UPDATED,
                    GroupUpdated(run_id=run_id, group_id=group.group_id, status=group.status),
                )
        if before.run != state.status:
            await self._publish(
                run_id,
                RUN_UPDATED,
                RunUpdated(run_id=run_id, status=state.status, updated_at=state.updated_at),
            )

    async def _publish(self, run_id: str, method: str, payload: object) -> None:
        try:
            await self.publisher.publish(run_id, method, payload)
        except Exception as exc:  # live events are best effort; the state is in the store
            _log.warning(
                "event_publish_failed", run_id=run_id, method=method, error_type=type(exc).__name__
            )


class _Progress:
    """Counts rows/bytes of one variant and emits throttled ``script.progress`` events."""

    def __init__(
        self, engine: RunEngine, run: _ActiveRun, script: ScriptState, variant: VariantState
    ) -> None:
        self.engine = engine
        self.run = run
        self.script = script
        self.variant = variant
        self.base_rows = sum(v.rows_exported for v in script.variants if v is not variant)
        self.base_bytes = sum(v.bytes_written for v in script.variants if v is not variant)
        self.last_emit = 0.0
        self.last_persist = time.monotonic()

    def sink(self, writer: FileWriter) -> _ProgressSink:
        return _ProgressSink(self, writer)

    async def emit(self, *, final: bool = False) -> None:
        script = self.script
        if final:  # the variant's own counters are final: sum over every variant
            rows = sum(v.rows_exported for v in script.variants)
            size = sum(v.bytes_written for v in script.variants)
        else:
            rows = self.base_rows + self.variant.rows_exported
            size = self.base_bytes + self.variant.bytes_written
        run_id = self.run.state.run_id
        await self.engine._publish(
            run_id,
            SCRIPT_PROGRESS,
            ScriptProgress(
                run_id=run_id, script_id=script.script_id, rows_exported=rows, bytes_written=size
            ),
        )

    async def on_write(self, rows: int, size: int) -> None:
        self.variant.rows_exported = rows
        self.variant.bytes_written = size
        now = time.monotonic()
        if now - self.last_emit >= self.engine.progress_interval_s:
            self.last_emit = now
            await self.emit()
        if now - self.last_persist >= self.engine.persist_progress_s:
            self.last_persist = now
            self.script.rows_exported = self.base_rows + rows
            self.script.bytes_written = self.base_bytes + size
            async with self.run.lock:
                with anyio.CancelScope(shield=True):
                    await self.engine.repo.save(
                        self.run.state,
                        script=self.script,
                        variants=[self.variant],
                        instance_id=self.engine.instance_id,
                    )


class _ProgressSink:
    def __init__(self, progress: _Progress, writer: FileWriter) -> None:
        self._progress = progress
        self._writer = writer

    async def write(self, chunk: bytes, rows: int) -> None:
        await self._writer.write(chunk, rows)
        await self._progress.on_write(self._writer.rows, self._writer.bytes_written)


def _remove_tree(directory: Path) -> None:
    """Remove a run's file directory (blocking: run it on a worker thread)."""
    if directory.is_dir():
        shutil.rmtree(directory)


def files_root(data_dir: Path) -> Path:
    """Where runs keep their files: ``<data dir>/exports/<runId>/``."""
    return data_dir / "exports"
