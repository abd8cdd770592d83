"""Timestamps on the wire and in the state store: ISO-8601 UTC with milliseconds and a ``Z``
(``2026-01-23T12:34:56.789Z``), as the contract shows. Fixed width, so they sort as text.

They stay strings in the wire Structs rather than msgspec datetimes: msgspec writes RFC 3339 with
microseconds, and no fraction at all on a whole second, which would change the contract's format
and break sorting as text. Reading needs no helper of ours beyond this one line: Python 3.11's
``datetime.fromisoformat`` takes the ``Z`` (as fast as msgspec's decoder).
"""

from __future__ import annotations

from datetime import UTC, datetime


def wall_clock() -> datetime:
    """This process's clock, timezone-aware UTC (tests that skew it patch ``datetime`` here)."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    """The current time as the wire's ISO-8601 UTC string."""
    return format_time(wall_clock())


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


__all__ = ["format_time", "parse_time", "utc_now", "wall_clock"]
