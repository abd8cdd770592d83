"""The provider layer's error translation: driver errors become ours, the sink's stay its own."""

from __future__ import annotations

import errno

import anyio
import pytest

from exporter_api.errors import DatabaseUnavailable, ExporterError, QueryFailed
from exporter_api.providers.base import (
    GuardedSink,
    connection_lost,
    permission_denied,
    scrub,
    statement_timeout,
    translate_errors,
    unreachable,
)
from tests.exporter_api.providers.sinks import FailingSink


class DriverError(Exception):
    pass


def _translate(exc: Exception) -> ExporterError | None:
    if isinstance(exc, DriverError | OSError):
        return connection_lost("db-x")
    return None


def test_driver_errors_are_translated_without_their_context() -> None:
    with pytest.raises(DatabaseUnavailable) as info, translate_errors(_translate):
        raise DriverError("postgresql://alice:secret@db/x")
    assert info.value.detail == "the database connection was lost (database db-x)"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_our_errors_and_unknown_errors_pass_through() -> None:
    ours = QueryFailed("no columns selected")
    with pytest.raises(QueryFailed) as info, translate_errors(_translate):
        raise ours
    assert info.value is ours
    with pytest.raises(KeyError), translate_errors(_translate):
        raise KeyError("a bug stays a bug")


async def test_the_sinks_own_errors_pass_through_unchanged() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    sink = GuardedSink(FailingSink(full))
    with pytest.raises(OSError, match="No space left") as info, translate_errors(_translate, sink):
        await sink.write(b"a\n", 1)
    assert info.value is full
    assert sink.raised(full)
    # Only that very exception: the same type from the driver is still translated.
    with pytest.raises(DatabaseUnavailable), translate_errors(_translate, sink):
        raise OSError(errno.ECONNRESET, "Connection reset by peer")


async def test_a_cancelled_sink_write_is_not_swallowed() -> None:
    sink = GuardedSink(FailingSink(OSError("unused"), fail_on=0))
    with anyio.CancelScope() as scope:
        scope.cancel()
        with translate_errors(_translate, sink):
            await sink.write(b"a\n", 1)
            await anyio.sleep(1)
    assert scope.cancelled_caught


def test_message_helpers() -> None:
    assert statement_timeout(0.25).detail == "the query exceeded the statement timeout of 0.25 s"
    assert unreachable("db-x").detail == "database db-x is unreachable"
    assert unreachable("db-x", "connection refused").detail == (
        "database db-x is unreachable (connection refused)"
    )
    assert permission_denied("permission denied for table t") == "permission denied for table t"
    assert permission_denied("must be owner of table t") == (
        "permission denied: must be owner of table t"
    )
    assert scrub("bad value 'hunter2'", "hunter2", "") == "bad value '***'"
