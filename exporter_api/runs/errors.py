"""Errors of the run domain. They know nothing of HTTP or SignalR: the REST edge
(`exporter_api.runs.api.run_errors_as_problems`) and the hub (`exporter_api.runs.hub`) each map
them in one place."""

from __future__ import annotations

from exporter_api.errors import ExporterError


class RunError(Exception):
    """Base of the run domain's errors; ``detail`` is safe to show to the user."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RunNotFound(RunError):
    """No such run, or not the caller's (the two are never told apart)."""

    def __init__(self, detail: str = "run not found") -> None:
        super().__init__(detail)


class RunAlreadyFinished(RunError):
    """A cancel of a run that has already ended."""

    def __init__(self, status: str) -> None:
        super().__init__(f"run already ended with status {status}")
        self.status = status


class TooManyActiveRuns(RunError):
    """The user already has ``limit`` runs Queued or Running."""

    def __init__(self, limit: int, retry_after_s: int = 5) -> None:
        super().__init__(f"at most {limit} active runs per user; wait for one to finish")
        self.limit = limit
        self.retry_after_s = retry_after_s


class DatabaseNotConfigured(RunError):
    """The user's database is not (or no longer) in the catalog."""

    def __init__(self, database_id: str) -> None:
        super().__init__(f"database {database_id!r} is not configured")
        self.database_id = database_id


def root_cause(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (what a run's task group raised), else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def failure_message(exc: BaseException) -> str:
    """What a run that crashed is reported as: our errors carry a message fit for the user (a
    full state store says so), anything else only its type (its text may hold anything)."""
    cause = root_cause(exc)
    if isinstance(cause, ExporterError) and cause.detail:
        return cause.detail
    return f"internal error ({type(cause).__name__})"


__all__ = [
    "DatabaseNotConfigured",
    "RunAlreadyFinished",
    "RunError",
    "RunNotFound",
    "TooManyActiveRuns",
    "failure_message",
    "root_cause",
]
