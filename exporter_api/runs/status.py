"""Status aggregation: pure functions, the only place these rules live.

Script (from its variants), in the contract's order:

1. any variant ``Failed``                  -> ``Failed``
2. all ``NoData``                          -> ``NoData``
3. all ``Success``                         -> ``Success``
4. any ``Running``                         -> ``Running``
5. otherwise ``Queued`` or ``Cancelled``:  ``Cancelled`` if any variant was cancelled, ``Queued``
   if some variant still waits, and a finished mix of ``Success`` and ``NoData`` is ``Success``.

Group (from its scripts) and run (from its groups), where a script whose status is already final
(a failed variant makes it ``Failed`` at once) still counts as ``Running`` while any of its
variants is ``Queued`` or ``Running`` -- a run is not over while anything in it still runs --
and so does a ``Queued`` script of which a variant has already ended (after a takeover its
unfinished variants wait again, but the run has long started):

1. everything ``Queued``                   -> ``Queued`` (nothing has started yet)
2. anything ``Queued`` or ``Running``      -> ``Running``
3. then the worst outcome: ``Failed``, then ``Cancelled``, then ``Success``; ``NoData`` only when
   everything is ``NoData``.

An empty collection exported nothing: ``NoData``.

The functions at the end apply these rules to a whole run tree: a variant change
(:func:`recompute_script` then :func:`refresh_run`), the end of a run (:func:`mark_unfinished`)
and a takeover (:func:`reset_unfinished`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from exporter_api.runs.models import ACTIVE_STATUSES, Status

if TYPE_CHECKING:
    from exporter_api.runs.models import GroupState, RunState, ScriptState


def script_status(variants: Iterable[Status]) -> Status:
    """The logical script's status from the statuses of its variants."""
    seen = set(variants)
    if not seen:
        return "NoData"
    if "Failed" in seen:
        return "Failed"
    if seen == {"NoData"}:
        return "NoData"
    if seen == {"Success"}:
        return "Success"
    if "Running" in seen:
        return "Running"
    if "Cancelled" in seen:
        return "Cancelled"
    if "Queued" in seen:
        return "Queued"
    return "Success"  # a finished mix of Success and NoData


def aggregate_status(children: Iterable[Status]) -> Status:
    """A group's status from its scripts, or a run's status from its groups."""
    seen = set(children)
    if not seen:
        return "NoData"
    if seen == {"Queued"}:
        return "Queued"
    if "Queued" in seen or "Running" in seen:
        return "Running"
    if "Failed" in seen:
        return "Failed"
    if "Cancelled" in seen:
        return "Cancelled"
    if seen == {"NoData"}:
        return "NoData"
    return "Success"


def is_active(status: Status) -> bool:
    """Queued or Running: not finished yet."""
    return status in ACTIVE_STATUSES


def _activity(script: ScriptState) -> Status:
    """The script's status as its group sees it: ``Running`` while a variant is still active
    after one has ended (a finished script with a variant left, or a run taken over from
    another instance whose unfinished variants wait again)."""
    if any(is_active(v.status) for v in script.variants) and (
        not is_active(script.status) or any(not is_active(v.status) for v in script.variants)
    ):
        return "Running"
    return script.status


def group_status(scripts: Iterable[ScriptState]) -> Status:
    """A group's status from its scripts, taking their still-active variants into account."""
    return aggregate_status(_activity(s) for s in scripts)


def run_status(groups: Iterable[GroupState]) -> Status:
    """A run's status from its groups (each computed with :func:`group_status`)."""
    return aggregate_status(g.status for g in groups)


# --- changes to a whole run tree (the engine, recovery and cancel all go through these) -------


def recompute_script(script: ScriptState, now: str) -> None:
    """Refresh a script's status, totals, error and message from its variants."""
    script.status = script_status(v.status for v in script.variants)
    script.rows_exported = sum(v.rows_exported for v in script.variants)
    script.bytes_written = sum(v.bytes_written for v in script.variants)
    errors = [v.error for v in script.variants if v.error]
    script.error = "; ".join(dict.fromkeys(errors)) if errors else None
    if not is_active(script.status):
        script.finished_at = script.finished_at or now
        script.eta_seconds = None
        if script.status == "Failed":
            script.message = script.error
        else:
            script.message = script.status


def refresh_run(state: RunState, now: str) -> None:
    """Recompute every group's status and the run's from the scripts (whose own status is
    already current), and stamp the change."""
    for group in state.groups:
        group.status = group_status(group.scripts)
    state.status = run_status(state.groups)
    state.updated_at = now
    if not is_active(state.status):
        state.finished_at = state.finished_at or now


def mark_unfinished(state: RunState, status: Status, now: str, *, error: str | None) -> None:
    """End the run: every Queued/Running variant becomes ``status`` (with ``error``); the
    aggregates follow. A failure that ended something also names its cause on the run."""
    touched = False
    for group in state.groups:
        for script in group.scripts:
            for variant in script.variants:
                if is_active(variant.status):
                    touched = True
                    variant.status = status
                    variant.message = error or status
                    variant.error = error
                    variant.finished_at = now
            recompute_script(script, now)
    refresh_run(state, now)
    if touched and status == "Failed" and error is not None:
        state.error = error


def reset_unfinished(state: RunState, now: str) -> None:
    """A run taken over from another instance: what was Running starts again from the
    beginning (a fresh query, a fresh file), so it is Queued again with nothing counted;
    finished variants (and their files) stay as they are."""
    for group in state.groups:
        for script in group.scripts:
            touched = False
            for variant in script.variants:
                if is_active(variant.status):
                    touched = touched or variant.status != "Queued" or variant.rows_exported > 0
                    variant.status = "Queued"
                    variant.message = "Queued"
                    variant.rows_exported = 0
                    variant.bytes_written = 0
                    variant.started_at = None
                    variant.file_id = None
            if touched:
                recompute_script(script, now)
                if is_active(script.status):
                    script.message = "Queued"
    refresh_run(state, now)
