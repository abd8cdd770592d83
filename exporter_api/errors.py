"""The service's error hierarchy; mapped to RFC 9457 problem JSON in `exporter_api.problems`."""

from __future__ import annotations


class ExporterError(Exception):
    """Base of every error the service raises on purpose.

    `status` and `title` drive the problem JSON; `detail` is the (credential-free) message shown to
    the client.
    """

    status = 500
    title = "Internal Server Error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigError(ExporterError):
    """The configuration is invalid: the message names the file, the entry and the problem."""

    title = "Invalid configuration"

    def __init__(self, file: str, entry: str, problem: str) -> None:
        self.file = file
        self.entry = entry
        self.problem = problem
        super().__init__(f"{file}: {entry}: {problem}" if entry else f"{file}: {problem}")


class BadRequest(ExporterError):
    status = 400
    title = "Bad Request"

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class Unauthorized(ExporterError):
    status = 401
    title = "Unauthorized"


class InvalidCredentials(Unauthorized):
    """The database refused the username/password pair."""

    def __init__(self, detail: str = "invalid database username or password") -> None:
        super().__init__(detail)


class Forbidden(ExporterError):
    status = 403
    title = "Forbidden"


class NotFound(ExporterError):
    status = 404
    title = "Not Found"


class Conflict(ExporterError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(ExporterError):
    status = 413
    title = "Payload Too Large"


class TooManyRequests(ExporterError):
    status = 429
    title = "Too Many Requests"

    def __init__(self, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class DatabaseUnavailable(ExporterError):
    """The database could not be reached (network, server down, too many connections)."""

    status = 503
    title = "Service Unavailable"


class QueryFailed(ExporterError):
    """A query failed on the database (SQL error, timeout); the message is credential-free."""

    status = 502
    title = "Query Failed"


class StoreUnavailable(ExporterError):
    """The state store cannot be read or written (disk full, database down, connection lost).

    Raised by the store layer, which translates its driver's errors into this one; the message is
    for the user and names nothing internal.
    """

    status = 503
    title = "Service Unavailable"

    def __init__(
        self,
        detail: str = (
            "the service cannot save its state right now (disk full or database unavailable);"
            " try again later"
        ),
    ) -> None:
        super().__init__(detail)


__all__ = [
    "BadRequest",
    "ConfigError",
    "Conflict",
    "DatabaseUnavailable",
    "ExporterError",
    "Forbidden",
    "InvalidCredentials",
    "NotFound",
    "PayloadTooLarge",
    "QueryFailed",
    "StoreUnavailable",
    "TooManyRequests",
    "Unauthorized",
]
