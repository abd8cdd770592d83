"""One run driven by this instance, from its beginning to what its end means.

A run begins fresh (started here) or resumed (claimed from the queue: after a hand-over, or a
takeover from an instance that died). A claimed run's directory is reconciled with the files
recorded first, whatever comes next (the dead owner's partial and unrecorded files go, also when
the run is then ended rather than resumed). Resuming checks that the run may go on -- no cancel
pending, not taken over more than ``max_run_attempts`` times, its session's credentials still
readable, its scripts still in the catalog -- and sets what was unfinished back to ``Queued`` (a
fresh query, a fresh file); the executor then runs exactly what is ``Queued``.

The end, decided in a shielded finaliser: a user cancel marks what is unfinished
``Cancelled``; a crash, or a run that cannot go on, ``Failed`` naming the cause (a full state
store says so, never "interrupted by a server restart"); a hand-over releases the claim without
marking anything (another instance resumes the run at once); a lost run writes nothing. A final
state whose save fails is kept (`unsaved`) and saved by the engine's heartbeat once it can. A
file whose record's save ended in doubt (the store unreachable around the COMMIT) is settled by
that final save: recorded after all, its variant succeeded; else the file goes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.to_thread
import structlog

from exporter_api.errors import ExporterError
from exporter_api.notify import RUN_QUEUED_CHANNEL
from exporter_api.runs.errors import failure_message, root_cause
from exporter_api.runs.executor import ActiveRun, RunExecutor, Snapshot
from exporter_api.runs.models import RunState, utc_now
from exporter_api.runs.reconcile import reconcile_run_files
from exporter_api.runs.repository import RunNotOwned
from exporter_api.runs.selection import PlanUnavailable, plan_of
from exporter_api.runs.status import is_active, mark_unfinished, reset_unfinished

if TYPE_CHECKING:
    from exporter_api.config import ExportConfig
    from exporter_api.runs.queue import Claim, RunQueue
    from exporter_api.runs.repository import RunRepository

_log = structlog.get_logger("exporter_api.runs.lifecycle")

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


class CredentialSource(Protocol):
    async def get(self, session_id: str) -> tuple[str, str]: ...


class RunObserver(Protocol):
    """Told once about each run that reaches its final status on this instance (the audit
    trail and the metrics, `exporter_api.audit.hooks.RunEndRecorder`)."""

    async def run_ended(self, state: RunState) -> None: ...


class _Abandon(Exception):
    """The run cannot go on (its credentials are gone, too many takeovers): it ends Failed."""


class RunLifecycle:
    def __init__(
        self,
        *,
        config: ExportConfig,
        repository: RunRepository,
        queue: RunQueue,
        credentials: CredentialSource,
        executor: RunExecutor,
        files_root: Path,
        instance_id: str,
        max_run_attempts: int,
        notify: Callable[[str, str], Awaitable[None]],
        observer: RunObserver | None = None,
    ) -> None:
        self.config = config
        self.observer = observer
        self.repo = repository
        self.queue = queue
        self.credentials = credentials
        self.executor = executor
        self.files_root = files_root
        self.instance_id = instance_id
        self.max_run_attempts = max_run_attempts
        self._notify = notify
        # Ended, but the final save failed (the store was unavailable or full): the heartbeat
        # keeps the claim and saves the final state (then publishes it) once it can.
        self.unsaved: dict[str, tuple[ActiveRun, Snapshot]] = {}

    async def drive(
        self,
        run: ActiveRun,
        credentials: tuple[str, str] | None,
        claim: Claim | None,
        *,
        stopping: Callable[[], bool],
    ) -> None:
        """Run ``run`` (resuming it first when it was claimed) and record its end; with
        ``stopping()`` true at the end (the server stops), an unfinished run is handed over."""
        log = _log.bind(run_id=run.run_id)
        failure: str | None = None
        try:
            if claim is not None:  # outside the run's scope: a cancel must not cut it short
                run.taken_names = await self._reconcile(run.run_id)
            with run.scope:
                if claim is not None:
                    credentials = await self._resume(run, claim)
                if credentials is not None and not run.cancel_requested:
                    await self.executor.execute(run, *credentials)
        except _Abandon as exc:
            failure = str(exc)
            log.warning("run_abandoned", reason=failure)
        except Exception as exc:  # a bug or the store failing: the run fails, the server goes on
            failure = failure_message(exc)
            log.error("run_crashed", error_type=type(root_cause(exc)).__name__)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._finish(run, failure, handover=run.handover or stopping())
                except Exception as exc:
                    log.error("run_finish_failed", error_type=type(exc).__name__)
                if not run.lost and run.run_id not in self.unsaved:
                    await self._ended(run.state)
        log.info("run_finished", status=run.state.status, lost=run.lost, handover=run.handover)

    async def _resume(self, run: ActiveRun, claim: Claim) -> tuple[str, str] | None:
        """Prepare a claimed run to go on here; the credentials to run it with (None: it is
        to be cancelled, or was lost). Raises ``_Abandon`` when it cannot go on."""
        if claim.cancel_requested or await self.queue.cancel_requested(run.run_id):
            # Read again now that the engine knows the run: a cancel flagged after the claim,
            # whose notification came before the run was known here, is not missed.
            run.cancel_requested = True
            return None
        if claim.attempts > self.max_run_attempts:
            raise _Abandon(too_many_attempts(claim.attempts, self.max_run_attempts))
        if run.state.database_id not in self.executor.providers:
            raise _Abandon(f"database {run.state.database_id!r} is no longer configured")
        try:
            username, password = await self.credentials.get(run.owner.session_id)
        except ExporterError:
            raise _Abandon(CREDENTIALS_GONE) from None
        try:
            run.plan = plan_of(run.state, self.config)
        except PlanUnavailable as exc:
            raise _Abandon(str(exc)) from None
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
        _log.info("run_resumed", run_id=run.run_id, attempts=claim.attempts)
        return str(username), str(password)

    async def _reconcile(self, run_id: str) -> set[str]:
        """Remove the dead owner's partial and never-recorded files from the directory of a run
        just claimed (the variants that wrote them start again, or the run ends); the recorded
        names, casefolded. A recorded file gone from disk is logged by the reconciliation."""
        recorded = [f.name for f in await self.repo.files(run_id)]
        try:
            reconciled = await reconcile_run_files(self.files_root / run_id, recorded)
        except OSError as exc:  # a failing disk fails what is exported next, not the takeover
            _log.warning("run_files_reconcile_failed", run_id=run_id, errno=exc.errno)
        else:
            if reconciled.removed:
                _log.info("run_files_reconciled", run_id=run_id, removed=len(reconciled.removed))
        return {name.casefold() for name in recorded}

    async def _finish(self, run: ActiveRun, failure: str | None, *, handover: bool) -> None:
        if run.lost:
            return
        if handover and failure is None and not run.cancel_requested:
            released = is_active(run.state.status) and await self.queue.release(
                run.run_id, self.instance_id
            )
            if released:
                _log.info("run_handed_over", run_id=run.run_id)
                await self._notify(RUN_QUEUED_CHANNEL, run.run_id)
            return
        async with run.lock:
            if not is_active(run.state.status) and failure is None:
                return  # ended by its last change, saved and published then
            # (A crash may come from the save of the change that ended it: saved again here,
            # and published from the statuses before that change.)
            before = run.unpublished or Snapshot(run.state)
            now = utc_now()
            if run.cancel_requested:
                mark_unfinished(run.state, "Cancelled", now, error=None)
            else:
                mark_unfinished(run.state, "Failed", now, error=failure or NOT_EXECUTED)
            try:
                stray = await self.executor.settle_uncertain(run)
                await self.repo.save_all(run.state, self.instance_id)
            except RunNotOwned:
                run.lost = True
                return
            except Exception as exc:
                self.unsaved[run.run_id] = (run, before)
                _log.error(
                    "run_final_save_failed", run_id=run.run_id, error_type=type(exc).__name__
                )
                return
            await self.executor.remove_unrecorded(run, stray)
            await self.executor.publish_changes(run.state, before)

    async def cancel_unattended(self, run_id: str) -> RunState | None:
        """Cancel a run this instance has just claimed for that purpose (nobody drove it)."""
        await self._reconcile(run_id)
        state = await self.repo.load(run_id)
        if state is None:  # pragma: no cover - active runs are never deleted
            return None
        before = Snapshot(state)
        mark_unfinished(state, "Cancelled", utc_now(), error=None)
        await self.repo.save_all(state, self.instance_id)
        await self.executor.publish_changes(state, before)
        _log.info("run_cancelled_unattended", run_id=run_id)
        await self._ended(state)
        return state

    async def save_unsaved(self, lost: Collection[str] = ()) -> None:
        """Save the final states whose save failed (forgetting those another instance took)."""
        for run_id in lost:
            self.unsaved.pop(run_id, None)
        for run_id, (run, before) in list(self.unsaved.items()):
            stray = await self.executor.settle_uncertain(run)
            await self.repo.save_all(run.state, self.instance_id)
            self.unsaved.pop(run_id, None)
            _log.info("run_final_state_saved", run_id=run_id)
            await self.executor.remove_unrecorded(run, stray)
            await self.executor.publish_changes(run.state, before)
            await self._ended(run.state)

    async def _ended(self, state: RunState) -> None:
        """Tell the observer about a run that has reached its final status here (a failing
        observer is logged; the run's end stands)."""
        if self.observer is None or is_active(state.status):
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.observer.run_ended(state)
            except Exception as exc:
                _log.error(
                    "run_end_observer_failed", run_id=state.run_id, error_type=type(exc).__name__
                )


__all__ = [
    "CREDENTIALS_GONE",
    "NOT_EXECUTED",
    "CredentialSource",
    "RunLifecycle",
    "RunObserver",
    "too_many_attempts",
]
