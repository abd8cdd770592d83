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
variants is ``Queued`` or ``Running`` -- a run is not over while anything in it still runs:

1. everything ``Queued``                   -> ``Queued`` (nothing has started yet)
2. anything ``Queued`` or ``Running``      -> ``Running``
3. then the worst outcome: ``Failed``, then ``Cancelled``, then ``Success``; ``NoData`` only when
   everything is ``NoData``.

An empty collection exported nothing: ``NoData``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from exporter_api.runs.models import ACTIVE_STATUSES, Status

if TYPE_CHECKING:
    from exporter_api.runs.models import GroupState, ScriptState


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
    """The script's status as its group sees it: ``Running`` while a variant is still active."""
    if not is_active(script.status) and any(is_active(v.status) for v in script.variants):
        return "Running"
    return script.status


def group_status(scripts: Iterable[ScriptState]) -> Status:
    """A group's status from its scripts, taking their still-active variants into account."""
    return aggregate_status(_activity(s) for s in scripts)


def run_status(groups: Iterable[GroupState]) -> Status:
    """A run's status from its groups (each computed with :func:`group_status`)."""
    return aggregate_status(g.status for g in groups)
