"""Running one run: lanes concurrent, scripts of a lane in turn, variants of a script in turn.

The executor knows nothing of claims, heartbeats or recovery (`exporter_api.runs.engine` does):
it is handed an :class:`ActiveRun` whose state says what is left to do -- every variant still
``Queued`` -- and runs exactly that, so a fresh run and a run taken over from a dead instance
go through the same code.

The live ``RunState`` of a run is mutated only under the run's lock; each change is persisted
(one store transaction, fenced by this instance's id) and then published to the run's hub group
while the lock is held, so the store and the event stream always agree on the order of changes.
Progress (``script.progress``) is throttled to ``progress_interval_s`` per script, with a final
event after every variant; the counters are saved at most every ``persist_progress_s`` and at
the latest ``persist_progress_s`` after they changed, rows arriving or not (a query that
streams fast and then stalls is saved as far as it got: a page reload never shows fewer rows
than the hub sent), and a failed progress save is only logged (the next one retries), unlike a
status change. A save refused
because another instance took the run over marks the run *lost* and cancels its scope: from
then on this instance writes and publishes nothing for it.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.to_thread
import structlog

from exporter_api.errors import ExporterError, StoreUnavailable
from exporter_api.providers.base import ExportColumn, ExportRequest
from exporter_api.runs.errors import FILE_WRITTEN_ELSEWHERE, ExportFileConflict, failure_message
from exporter_api.runs.filerecords import StoredFile
from exporter_api.runs.files import FileWriter, WrittenFile, render_file_name, unique_name
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
    utc_now,
)
from exporter_api.runs.repository import RunNotOwned, RunOwner
from exporter_api.runs.status import is_active, recompute_script, refresh_run
from exporter_api.runs.writers import (
    CsvStyle,
    OutputSpec,
    VariantOutput,
    format_of,
    with_format,
)

if TYPE_CHECKING:
    from exporter_api.config import DatabaseConfig, ExportConfig, ScriptVariant
    from exporter_api.providers.base import DatabaseProvider
    from exporter_api.runs.repository import RunRepository
    from exporter_api.runs.selection import PlannedScript, RunPlan
    from exporter_api.runs.slots import SlotLeases

_log = structlog.get_logger("exporter_api.runs.executor")

_MAX_STALE_NAMES = 20  # final names met in place, skipped before a variant gives up


def outcome_unknown(exc: BaseException) -> bool:
    """Whether a save that raised ``exc`` may have been applied all the same: the store became
    unreachable (or stopped answering) around its COMMIT, so its reply was lost."""
    return isinstance(exc, (StoreUnavailable, TimeoutError, OSError))


class EventPublisher(Protocol):
    async def publish(self, run_id: str, method: str, payload: object) -> None: ...


async def publish_best_effort(
    publisher: EventPublisher, run_id: str, method: str, payload: object
) -> None:
    """``publisher.publish``, a failure logged (``event_publish_failed``) and not raised: live
    events are best effort, the state is in the store."""
    try:
        await publisher.publish(run_id, method, payload)
    except Exception as exc:
        _log.warning(
            "event_publish_failed", run_id=run_id, method=method, error_type=type(exc).__name__
        )


def new_file_id() -> str:
    return secrets.token_urlsafe(12)


@dataclass
class ActiveRun:
    """A run driven by this instance. ``cancel_requested`` (a user cancel), ``handover`` (a
    drain gives it to another instance) and ``lost`` (another instance took it over) say why
    its scope was cancelled."""

    state: RunState
    owner: RunOwner
    plan: RunPlan | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    done: anyio.Event = field(default_factory=anyio.Event)
    cancel_requested: bool = False
    handover: bool = False
    lost: bool = False
    taken_names: set[str] = field(default_factory=set)
    # When (time.monotonic()) a store write that stamped the run's heartbeat last began: the
    # run is this instance's for ``takeover_after_s`` from then, no longer for sure after.
    leased_at: float = field(default_factory=time.monotonic)
    # Committed files whose record's save ended in doubt (the connection dropped around the
    # COMMIT): settled by the run's final save (`RunLifecycle`) or by the one taking it over.
    uncertain: dict[str, StoredFile] = field(default_factory=dict)
    # The statuses before a change whose save failed (so it was never published): the run's
    # final save publishes from there.
    unpublished: Snapshot | None = None

    def renew(self, began: float) -> None:
        """A write stamping the run's heartbeat, begun at ``began``, succeeded."""
        self.leased_at = max(self.leased_at, began)

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def group(self, group_id: str) -> GroupState:
        return next(g for g in self.state.groups if g.group_id == group_id)

    def script(self, group_id: str, script_id: str) -> ScriptState:
        return next(s for s in self.group(group_id).scripts if s.script_id == script_id)


class Snapshot:
    """Statuses before a change, to publish only what changed."""

    def __init__(self, state: RunState) -> None:
        self.run = state.status
        self.groups = {g.group_id: g.status for g in state.groups}
        self.scripts = {s.script_id: (s.status, s.message) for g in state.groups for s in g.scripts}


def output_spec(
    config: ExportConfig, database: DatabaseConfig, planned: PlannedScript
) -> OutputSpec:
    """How a script's files are written: the run's format (else ``[output] format``) in the
    script's output profile (else the database's, else ``[output]``'s own CSV style)."""
    output = config.output
    _, style = CsvStyle.resolve(
        output,
        planned.script.output_profile or database.output_profile,
        text_dates=database.provider == "sqlite",  # SQLite keeps dates as ISO text
    )
    return OutputSpec(
        format=planned.format or output.format,
        style=style,
        max_rows_per_file=output.max_rows_per_file,
        max_bytes_per_file=output.max_bytes_per_file,
        gzip_level=output.gzip_level,
        file_mode=output.file_mode,
        dir_mode=output.dir_mode,
    )


class RunExecutor:
    def __init__(
        self,
        *,
        config: ExportConfig,
        repository: RunRepository,
        providers: Mapping[str, DatabaseProvider],
        publisher: EventPublisher,
        slots: SlotLeases,
        files_root: Path,
        instance_id: str,
        progress_interval_s: float = 0.25,
        persist_progress_s: float = 1.0,
    ) -> None:
        self.config = config
        self.repo = repository
        self.providers = providers
        self.publisher = publisher
        self.slots = slots
        self.files_root = files_root
        self.instance_id = instance_id
        self.progress_interval_s = progress_interval_s
        self.persist_progress_s = persist_progress_s
        self._databases = {db.id: db for db in config.databases}

    async def execute(self, run: ActiveRun, username: str, password: str) -> None:
        """Run every variant of ``run`` still ``Queued``; returns when all lanes are done.
        Raises what a lane raised (a bug, the store failing); cancelled through ``run.scope``
        by the caller."""
        assert run.plan is not None
        async with anyio.create_task_group() as tg:
            for scripts in run.plan.lanes().values():
                tg.start_soon(self._lane, run, scripts, username, password)

    async def _lane(
        self, run: ActiveRun, scripts: list[PlannedScript], username: str, password: str
    ) -> None:
        for planned in scripts:
            await self._script(run, planned, username, password)

    async def _script(
        self, run: ActiveRun, planned: PlannedScript, username: str, password: str
    ) -> None:
        """Run the script's pending variants in turn on one database slot.

        The slot is held across the variants (they run one after another anyway), and the next
        variant is marked Running in the same change that finishes the previous one, so the
        script never flickers back to Queued between variants."""
        script = run.script(planned.group_id, planned.script.id)
        variants = planned.script.variants
        n = len(variants)
        by_index = {v.variant: v for v in script.variants}
        vstates = [by_index[x.index] for x in variants]
        pending = [k for k in range(n) if vstates[k].status == "Queued"]
        if not pending:
            return

        def start(k: int, now: str) -> None:
            vstates[k].status = "Running"
            vstates[k].message = f"Executing variant {k + 1}/{n}"
            vstates[k].started_at = now
            script.started_at = script.started_at or now
            run.state.started_at = run.state.started_at or now

        if script.rows_expected is None:
            script.rows_expected = await self._expected_rows(run, planned)
        pace = _Pace(sum(v.rows_exported for v in script.variants))
        async with self.slots.hold(run.state.database_id, run.run_id):
            first = pending[0]
            await self._change(
                run,
                planned.group_id,
                script,
                [vstates[first]],
                lambda now: start(first, now),
                message=f"Executing variant {first + 1}/{n}",
            )
            for i, k in enumerate(pending):
                nxt = pending[i + 1] if i + 1 < len(pending) else None
                vstate = vstates[k]
                progress = _Progress(self, run, script, vstate, pace)
                async with progress.persisting():
                    outcome, error, stored = await self._export(
                        run, planned, variants[k], k + 1, progress, username, password
                    )
                    progress.stop()  # its final counters are saved with its status, below

                    def finish(
                        now: str,
                        k: int = k,
                        nxt: int | None = nxt,
                        outcome: Status = outcome,
                        error: str | None = error,
                        stored: list[StoredFile] = stored,
                    ) -> None:
                        v = vstates[k]
                        v.status = outcome
                        v.finished_at = now
                        v.error = error
                        v.message = error if error else outcome
                        v.file_id = stored[0].file_id if stored else None
                        if nxt is not None:
                            start(nxt, now)

                    changed = [vstate] if nxt is None else [vstate, vstates[nxt]]
                    # Shielded: once the export returned, its file is committed; a cancel
                    # arriving now must not leave that file unrecorded (it takes effect at the
                    # next variant). Inside `persisting`: its end, which waits for a progress
                    # save in flight, is no point a cancel can cut in before this.
                    with anyio.CancelScope(shield=True):
                        await progress.emit(final=True)  # before the status change it explains
                        await self._change(
                            run,
                            planned.group_id,
                            script,
                            changed,
                            finish,
                            files=stored,
                            message=None if nxt is None else f"Executing variant {nxt + 1}/{n}",
                        )

    async def _expected_rows(self, run: ActiveRun, planned: PlannedScript) -> int | None:
        """What the ETA is measured against: the rows of the script's last successful run
        for this database, manager and stream (None: never run there, or the store did not
        answer -- an ETA is advisory and never delays the export)."""
        state = run.state
        try:
            return await self.repo.last_rows(
                state.database_id, state.manager_id, state.stream_id, planned.script.id
            )
        except Exception as exc:
            _log.warning(
                "expected_rows_unknown", run_id=state.run_id, error_type=type(exc).__name__
            )
            return None

    async def _export(
        self,
        run: ActiveRun,
        planned: PlannedScript,
        variant: ScriptVariant,
        i: int,
        progress: _Progress,
        username: str,
        password: str,
    ) -> tuple[Status, str | None, list[StoredFile]]:
        """One variant: one query streamed into its file (or parts). Never raises but
        cancellation."""
        state = run.state
        vstate = progress.variant
        database = self._databases[state.database_id]
        provider = self.providers[state.database_id]
        spec = output_spec(self.config, database, planned)
        rows = spec.needs_rows(provider.server_csv, provider.server_style)
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
            delimiter=spec.style.delimiter,
            encoding=spec.style.codec,
            header=spec.style.header,
            decimal_separator=spec.style.decimal_separator,
            date_format=spec.style.date_format,
            statement_timeout_s=database.statement_timeout_s,
            batch_rows=database.fetch_batch_rows,
            rows=rows,
        )
        rendered = render_file_name(
            self.config.output.file_name_template, _name_fields(run, planned, i)
        )
        if format_of(rendered) != spec.format:
            rendered = with_format(rendered, spec.format)
        output = VariantOutput(spec, self.files_root / state.run_id, rendered, progress.on_write)
        try:
            async with output:
                await provider.export(username, password, request, output)
                count = await output.finish()
                vstate.rows_exported = count
                if count == 0:
                    vstate.bytes_written = 0
                    return "NoData", None, []  # nothing was written: no file
                written = await _commit_parts(run, output, log)
                vstate.bytes_written = sum(w.size_bytes for w in written)
                now = utc_now()
                return (
                    "Success",
                    None,
                    [
                        StoredFile(
                            run_id=state.run_id,
                            file_id=new_file_id(),
                            group_id=planned.group_id,
                            script_id=planned.script.id,
                            variant=variant.index,
                            name=w.name,
                            size_bytes=w.size_bytes,
                            rows=w.rows,
                            sha256=w.sha256,
                            created_at=now,
                            media_type=spec.media_type,
                        )
                        for w in written
                    ],
                )
        except ExporterError as exc:
            log.warning("variant_failed", error_type=type(exc).__name__)
            error = exc.detail or type(exc).__name__
        except Exception as exc:
            log.error("variant_crashed", error_type=type(exc).__name__)
            error = f"internal error ({type(exc).__name__})"
        vstate.rows_exported = 0
        vstate.bytes_written = 0
        return "Failed", error, []

    async def _change(
        self,
        run: ActiveRun,
        group_id: str,
        script: ScriptState,
        variants: list[VariantState],
        apply: Callable[[str], None],
        *,
        files: Sequence[StoredFile] = (),
        message: str | None = None,
    ) -> None:
        """Apply a variant change, recompute the aggregates, persist, publish what changed."""
        async with run.lock:
            if run.lost:
                return
            state = run.state
            before = Snapshot(state)
            now = utc_now()
            apply(now)
            recompute_script(script, now)
            if is_active(script.status) and message:
                script.message = message
            refresh_run(state, now)
            with anyio.CancelScope(shield=True):  # a cancel must not tear a half-written change
                began = time.monotonic()
                try:
                    await self.repo.save(
                        state,
                        group=run.group(group_id),
                        script=script,
                        variants=variants,
                        files=files,
                        instance_id=self.instance_id,
                    )
                except RunNotOwned:
                    self.lose(run)
                    return
                except Exception as exc:
                    if files:
                        await self._unrecorded(run, variants, files, exc)
                        recompute_script(script, now)
                        refresh_run(state, now)
                    if run.unpublished is None:
                        run.unpublished = before
                    raise
                run.renew(began)
                await self.publish_changes(run.state, before)

    async def _unrecorded(
        self,
        run: ActiveRun,
        variants: list[VariantState],
        files: Sequence[StoredFile],
        exc: Exception,
    ) -> None:
        """A committed file whose record could not be saved: its variant failed (saying why).

        The file goes when the save surely did not happen, so the run's directory holds
        recorded files only. When the store became unreachable the COMMIT may have been
        applied all the same (the reply lost): the file stays, and the run's final save finds
        out (``settle_uncertain``) -- else whoever takes the run over reconciles its files."""
        error = failure_message(exc)
        ids = {f.file_id for f in files}
        for v in variants:
            if v.file_id in ids:
                v.status, v.file_id = "Failed", None
                v.error = v.message = f"the file could not be recorded: {error}"
        if outcome_unknown(exc):
            for file in files:
                run.uncertain[file.file_id] = file
                _log.warning("file_record_outcome_unknown", run_id=run.run_id, file_id=file.file_id)
            return
        paths = [self.files_root / run.run_id / f.name for f in files]

        def _remove() -> None:
            for path in paths:
                path.unlink(missing_ok=True)

        await anyio.to_thread.run_sync(_remove)

    async def settle_uncertain(self, run: ActiveRun) -> list[StoredFile]:
        """Before the run's final save: the variant of a file recorded after all is
        ``Success`` again with its file; the files not recorded are returned, to be removed
        once that (fenced) save proves this instance still holds the run."""
        if not run.uncertain:
            return []
        recorded = {f.file_id for f in await self.repo.files(run.run_id)}
        now = utc_now()
        stray: list[StoredFile] = []
        for file in run.uncertain.values():
            if file.file_id not in recorded:
                stray.append(file)
                continue
            script = run.script(file.group_id, file.script_id)
            for v in script.variants:
                if v.variant == file.variant:
                    v.status = "Success"
                    v.file_id = v.file_id or file.file_id
                    v.error = None
                    v.message = "Success"
            recompute_script(script, now)
        refresh_run(run.state, now)
        return stray

    async def remove_unrecorded(self, run: ActiveRun, stray: list[StoredFile]) -> None:
        """After the run's final save: remove the files ``settle_uncertain`` found unrecorded
        (nobody records a file of this run any more)."""
        paths = [self.files_root / run.run_id / f.name for f in stray]

        def _remove() -> None:
            for path in paths:
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:  # a failing disk: the next reconciliation gets it
                    _log.warning("unrecorded_file_not_removed", run_id=run.run_id, errno=exc.errno)

        if paths:
            await anyio.to_thread.run_sync(_remove)
            _log.info("unrecorded_files_removed", run_id=run.run_id, count=len(paths))
        run.uncertain.clear()

    def lose(self, run: ActiveRun) -> None:
        """Another instance drives ``run`` now: stop it here without writing anything more."""
        if not run.lost:
            run.lost = True
            run.scope.cancel()
            _log.warning("run_lost", run_id=run.run_id)

    async def publish_changes(self, state: RunState, before: Snapshot) -> None:
        run_id = state.run_id
        for group in state.groups:
            for script in group.scripts:
                if before.scripts.get(script.script_id) != (script.status, script.message):
                    await self.publish(
                        run_id,
                        SCRIPT_UPDATED,
                        ScriptUpdated(
                            run_id=run_id,
                            group_id=group.group_id,
                            script_id=script.script_id,
                            status=script.status,
                            message=script.message,
                            variant=next(
                                (v.variant for v in script.variants if v.status == "Running"), None
                            ),
                            variant_count=len(script.variants),
                        ),
                    )
            if before.groups.get(group.group_id) != group.status:
                await self.publish(
                    run_id,
                    GROUP_UPDATED,
                    GroupUpdated(run_id=run_id, group_id=group.group_id, status=group.status),
                )
        if before.run != state.status:
            await self.publish(
                run_id,
                RUN_UPDATED,
                RunUpdated(run_id=run_id, status=state.status, updated_at=state.updated_at),
            )

    async def publish(self, run_id: str, method: str, payload: object) -> None:
        await publish_best_effort(self.publisher, run_id, method, payload)


class _Pace:
    """When this instance began a script's pending variants, and the rows done before."""

    def __init__(self, rows_before: int) -> None:
        self.started = time.monotonic()
        self.rows_before = rows_before  # exported before a takeover: not this pace's

    def eta(self, expected: int | None, rows: int) -> int | None:
        """Seconds left to reach ``expected`` rows at the pace since ``started`` (None when
        not known: no expectation, nothing exported yet here, or past the expectation)."""
        done_here = rows - self.rows_before
        elapsed = time.monotonic() - self.started
        if expected is None or done_here <= 0 or rows >= expected or elapsed <= 0:
            return None
        return math.ceil((expected - rows) * elapsed / done_here)


class _Progress:
    """Counts rows/bytes of one variant, emits throttled ``script.progress`` events and saves
    the counters: at most every ``persist_progress_s``, and within ``persist_progress_s`` of
    their last change even when no more rows arrive (:meth:`persisting` runs the timer)."""

    def __init__(
        self,
        executor: RunExecutor,
        run: ActiveRun,
        script: ScriptState,
        variant: VariantState,
        pace: _Pace,
    ) -> None:
        self.executor = executor
        self.pace = pace
        self.run = run
        self.script = script
        self.variant = variant
        self.base_rows = sum(v.rows_exported for v in script.variants if v is not variant)
        self.base_bytes = sum(v.bytes_written for v in script.variants if v is not variant)
        self.last_emit = 0.0
        self.last_persist = time.monotonic()
        self._saved = (variant.rows_exported, variant.bytes_written)  # what the store holds
        self._changed = anyio.Event()  # counters the store does not hold yet
        self._timer = anyio.CancelScope()  # `persisting`'s timer; `stop` ends it

    async def emit(self, *, final: bool = False) -> None:
        if self.run.lost:
            return
        script = self.script
        if final:  # the variant's own counters are final: sum over every variant
            rows = sum(v.rows_exported for v in script.variants)
            size = sum(v.bytes_written for v in script.variants)
        else:
            rows = self.base_rows + self.variant.rows_exported
            size = self.base_bytes + self.variant.bytes_written
        script.eta_seconds = self.pace.eta(script.rows_expected, rows)
        run_id = self.run.run_id
        await self.executor.publish(
            run_id,
            SCRIPT_PROGRESS,
            ScriptProgress(
                run_id=run_id,
                script_id=script.script_id,
                rows_exported=rows,
                bytes_written=size,
                rows_expected=script.rows_expected,
                eta_seconds=script.eta_seconds,
            ),
        )

    async def on_write(self, rows: int, size: int) -> None:
        self.variant.rows_exported = rows
        self.variant.bytes_written = size
        now = time.monotonic()
        if now - self.last_emit >= self.executor.progress_interval_s:
            self.last_emit = now
            await self.emit()
        if now - self.last_persist >= self.executor.persist_progress_s:
            await self.persist()
        else:
            self._changed.set()  # saved by the timer of `persisting` if no write is due first

    @contextlib.asynccontextmanager
    async def persisting(self) -> AsyncIterator[None]:
        """While the variant exports: save counters left unsaved once their interval is up."""
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._save_late)
            try:
                yield
            except Exception as exc:  # the variant's own: raised as it is, not in a group
                failure = exc
            finally:  # the variant's end saves its final counters with its status
                self.stop()
        if failure is not None:
            raise failure

    def stop(self) -> None:
        """No more timed saves (one in flight completes: the end of `persisting` waits)."""
        self._timer.cancel()

    async def _save_late(self) -> None:
        with self._timer:
            while True:
                await self._changed.wait()
                due = self.last_persist + self.executor.persist_progress_s
                await anyio.sleep(max(0.0, due - time.monotonic()))
                if time.monotonic() < self.last_persist + self.executor.persist_progress_s:
                    continue  # a write saved meanwhile: the interval runs from that save
                self._changed = anyio.Event()
                await self.persist()

    async def persist(self) -> None:
        """Save the variant's counters and its script's (unless the store holds them)."""
        counters = (self.variant.rows_exported, self.variant.bytes_written)
        if counters == self._saved or self.run.lost:
            return
        # Taken as saved from now on, so that neither the timer nor a write saves the same
        # counters again while this save waits for the lock or the store; undone if it fails.
        previous, self._saved = self._saved, counters
        self.last_persist = time.monotonic()
        rows, size = counters
        self.script.rows_exported = self.base_rows + rows
        self.script.bytes_written = self.base_bytes + size
        async with self.run.lock:
            with anyio.CancelScope(shield=True):
                began = time.monotonic()
                try:
                    await self.executor.repo.save(
                        self.run.state,
                        script=self.script,
                        variants=[self.variant],
                        instance_id=self.executor.instance_id,
                    )
                    self.run.renew(began)
                except RunNotOwned:
                    self.executor.lose(self.run)
                except Exception as exc:
                    # Progress is advisory: a store blip (a failover) must not stop the
                    # export. The next interval saves again; state changes still fail the run.
                    self._saved = previous
                    self._changed.set()
                    _log.warning(
                        "progress_save_failed",
                        run_id=self.run.run_id,
                        error_type=type(exc).__name__,
                    )


# A variant's file names and commits: they need the run and its writers, not the executor.


async def _commit_parts(
    run: ActiveRun, output: VariantOutput, log: structlog.BoundLogger
) -> list[WrittenFile]:
    """Commit every part of ``output`` under the name ``output`` gave it (made unique among
    the run's files): all of them, or none (a part committed before one that failed is
    removed)."""
    written: list[WrittenFile] = []
    try:
        for writer in output.parts:
            name = writer.name
            writer.rename(unique_name(name, run.taken_names))
            written.append(await _commit(run, writer, name, log))
    except BaseException:
        paths = [w.path for w in written]

        def _remove() -> None:
            for path in paths:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_remove)
        raise
    return written


async def _commit(
    run: ActiveRun, writer: FileWriter, rendered: str, log: structlog.BoundLogger
) -> WrittenFile:
    """Commit ``writer``; a final name already in place takes the next free name.

    The name was free of the run's recorded files, so the file in place is no file of this
    run: a previous driver's, still writing when it was cut off from the store after the
    run was taken over from it (its saves are refused now, it never records that file).
    Failing the variant for it would fail the run of the instance that holds it."""
    for _ in range(_MAX_STALE_NAMES):
        try:
            return await writer.commit()
        except ExportFileConflict as exc:
            if exc.detail != FILE_WRITTEN_ELSEWHERE:
                raise
        writer.rename(unique_name(rendered, run.taken_names))
        log.warning("stale_export_file_skipped")
    return await writer.commit()


def _name_fields(run: ActiveRun, planned: PlannedScript, i: int) -> dict[str, str]:
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


__all__ = [
    "ActiveRun",
    "EventPublisher",
    "RunExecutor",
    "Snapshot",
    "new_file_id",
    "outcome_unknown",
    "publish_best_effort",
]
