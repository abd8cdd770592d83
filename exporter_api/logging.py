"""structlog configuration: JSON lines, one constant event name per line, secrets redacted.

`configure_logging()` is called once by the CLI (never at import time). The redaction processor
is a safety net: code must not pass secrets to the logger in the first place.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

from signalr_core import set_logger_factory

REDACTED = "[redacted]"

_SECRET_KEYS = re.compile(
    r"pass(word|wd)?|secret|token|authorization|cookie|credential|api_?key|private", re.I
)
# scheme://user:password@host -> scheme://user:[redacted]@host. The password runs to the LAST
# '@' before the host (a password may hold '@' or '/'); the host has no '@' and ends the
# authority at '/', '?', '#', whitespace or the end.
_DSN_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^\s?#]+)(?=@[^@\s/?#]*(?:[/?#\s]|$))",
    re.I,
)


def redact_value(value: str) -> str:
    return _DSN_PASSWORD.sub(lambda m: m.group("head") + REDACTED, value)


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: drop values of secret-looking keys, strip passwords from DSNs."""
    for key, value in list(event_dict.items()):
        if key != "event" and _SECRET_KEYS.search(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = redact_value(value)
    return event_dict


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Bind ``values`` (structlog contextvars) for the code inside, and on the way out drop what
    that code bound as well: a request binds ``client_ip`` here, then the caller's ``login`` once
    authenticated, and nothing of it outlives the request (tests call the app in their own task).
    """
    before = structlog.contextvars.get_contextvars()
    structlog.contextvars.bind_contextvars(**values)
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**before)


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON logs to `stream` (stderr by default), for structlog and the stdlib loggers
    (hypercorn, asyncio) alike: one JSON object per line."""
    log_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    out = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,  # before redaction: tracebacks get it too
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(log_level),
        # One write per line, newline included (print() writes them separately): processes
        # sharing one stderr (`serve --workers N`) must never interleave inside a line.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_secrets,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(log_level)
    # The hub library logs through structlog too: its events get the same processors and keep
    # their fields (connection_id, method, ...) as keys.
    set_logger_factory(structlog.get_logger)


__all__ = ["REDACTED", "configure_logging", "redact_secrets", "redact_value"]
