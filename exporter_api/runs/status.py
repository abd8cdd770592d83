"""Status aggregation: pure functions, the only place these rules live.

Script (from its variants), in the contract's order:

1. any variant ``Failed``                  -> ``Failed``
2. all ``NoData``                          -> ``NoData``
3. all ``Success``                         -> ``Success``
4. any ``Running``                         -> ``Running``
5. otherwise ``Queued`` or ``Cancelled``:  ``Cancelled`` if any variant was cancelled, ``Queued``
   if some variant still waits, and a finished mix of ``Success`` and ``NoData`` is ``Success``.

Group (from its scripts) and run (from its groups):

1. everything ``Queued``                   -> ``Queued`` (nothing has started yet)
2. anything ``Queued`` or ``Running``      -> ``Running``
3. then the worst outcome: ``Failed``, then ``Cancelled``, then ``Success``; ``NoData`` only when
   everything is ``NoData``.

An empty collection exported nothing: ``NoData``.
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter_api.runs.models import Status


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


def is_final(status: Status) -> bool:
    return status not in ("Queued", "Running")
